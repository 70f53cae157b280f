"""Every named backbone learns real faces with the defaults of ``train.py --data``.

Six real LFW people (six photos each) are aligned and packed into shards; each backbone then trains
a few dozen steps of batch 8 with every other setting at its ``train.py --data`` default (AM-Softmax, the
reference schedule stretched to the run, resface with batch norm, 512-d) and the peak lr those defaults
give at their batch of 64 (0.1 x 64 / 256 = 0.025: at batch 8 the scaled default, 0.003, barely moves
the weights in so few steps). The loss must
fall and the exported model (inference mode) must keep different people apart. The published ResFace20
without batch norm is the control: under the same settings its embeddings collapse to one direction,
so the check can fail (benchmarks/README.md, "Why ResFace20 collapsed").
"""

import json
import shutil

import cv2
import numpy as np
import pytest

import training

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

PEOPLE = ["Ariel_Sharon", "Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder", "Tony_Blair"]
PHOTOS = 6
STEPS = 24
BATCH = 8


@pytest.fixture(scope="module")
def faces(lfw_dir, tmp_path_factory):
    """(shards dir, aligned images uint8 [N, 112, 96, 3], person index [N])."""
    from align import align_folder
    from tfrecords.build import build

    root = tmp_path_factory.mktemp("faces")
    for name in PEOPLE:
        (root / "raw" / name).mkdir(parents=True)
        for k in range(1, PHOTOS + 1):
            shutil.copy(lfw_dir / "images" / name / f"{name}_{k:04d}.jpg", root / "raw" / name)
    summary = align_folder(root / "raw", root / "aligned", workers=1, fallback="center", progress=False,
                           contact_sheet_size=0, log=lambda *_: None)
    assert summary["aligned"] + summary["fallback"] == len(PEOPLE) * PHOTOS
    build(root / "aligned", root / "shards", num_shards=1, workers=1, progress=False, log=lambda *_: None)
    images, people = [], []
    for person, name in enumerate(PEOPLE):
        for path in sorted((root / "aligned" / name).glob("*.jpg")):
            images.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
            people.append(person)
    return root / "shards", np.stack(images), np.array(people)


def _train(shards, run_dir, backbone, **extra):
    """train.py --data SHARDS --backbone B with only the run's length, batch and logging set."""
    config = training.resolve_config({"data": str(shards), "backbone": backbone, "batch_size": BATCH,
                                      "lr": training.reference_lr(64),
                                      "max_steps": STEPS, "log_every": 1, "checkpoint_every": 1000,
                                      "val_every": 1000, "shuffle_buffer": 64, **extra})
    summary = training.run_training(config, training.new_run_dir(run_dir, backbone, "am"), log=lambda *_: None)
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return config, summary, [e["loss"] for e in log if "loss" in e]


def _different_person_cosine(model_path, images, people):
    import keras
    model = keras.saving.load_model(model_path, safe_mode=True)
    emb = keras.ops.convert_to_numpy(model(images.astype("float32"), training=False)).astype(np.float64)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    cos = emb @ emb.T
    return float(cos[people[:, None] != people[None, :]].mean())


@pytest.mark.parametrize("backbone", ["resface20", "resface36", "lresnet50e_ir", "mobilefacenet"])
def test_backbone_learns_real_faces_with_train_defaults(faces, tmp_path, backbone):
    shards, images, people = faces
    config, summary, losses = _train(shards, tmp_path / "run", backbone)
    assert config.lr_schedule == "reference" and config.embedding_size == 512
    assert summary["peak_lr"] == pytest.approx(0.025)   # train.py --data's peak lr at its default batch 64
    assert summary["last_step"] == STEPS
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, losses
    cosine = _different_person_cosine(summary["exports"]["keras"], images, people)
    assert cosine < 0.5, f"{backbone}: different people's embeddings have mean cosine {cosine:.3f}"


def test_published_resface20_without_batch_norm_collapses_on_the_same_faces(faces, tmp_path):
    """The control: the same run with the published network maps every face to one direction."""
    shards, images, people = faces
    _, summary, _ = _train(shards, tmp_path / "run", "resface20", backbone_options={"batch_norm": False})
    assert _different_person_cosine(summary["exports"]["keras"], images, people) > 0.9
