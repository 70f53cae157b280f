"""train.py --val-bin: insightface .bin sets validated during training, beside the held-out identities.

The two commands of an insightface user, end to end on real faces: a pack (train.rec with header
record, 112x112 aligned LFW crops) -> ``tfrecords.build --rec --center-crop 112x96`` -> ``train.py
--val-bin lfw.bin cfp_fp.bin``; the .bin sets (112x112, written by ``evaluation.binset``) are centre-cropped
for the 112x96 model. Checked: every set is validated and logged (TensorBoard, train_log.jsonl), its
accuracy equals what ``evaluate.py --bin --center-crop`` measures on the same model, and best.keras
follows the stated rule (held-out identities when there are any, else the mean of the .bin sets).
"""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recordio_writer import write_insightface_pack

pytestmark = pytest.mark.real_data

REPO = Path(__file__).resolve().parents[1]
TINY = {"backbone": "mobilefacenet", "embedding_size": 32, "batch_size": 4, "max_steps": 4, "val_every": 2,
        "log_every": 1, "lr_schedule": "constant", "shuffle_buffer": 64, "exports": "keras"}


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def pack_and_bins(lfw_faces_112, tmp_path_factory):
    """(train.rec of the 18 faces, {set name: .bin path}) with two 20-pair sets of the same faces at 112x112."""
    from evaluation.binset import write_bin

    root = tmp_path_factory.mktemp("val_bin")
    people = sorted(lfw_faces_112)
    images = [(label, jpeg) for label, name in enumerate(people) for jpeg in lfw_faces_112[name]]
    rec, _ = write_insightface_pack(root / "pack", images, num_classes=len(people), image_size=(112, 112))
    for name in people:
        (root / "aligned" / name).mkdir(parents=True)
        for k, jpeg in enumerate(lfw_faces_112[name]):
            (root / "aligned" / name / f"{k}.jpg").write_bytes(jpeg)
    # Same and different pairs alternate, so each of the 10 contiguous folds holds one of each.
    same = [(f"{p}/{i}.jpg", f"{p}/{j}.jpg") for p in people for i, j in ((0, 1), (1, 2))][:10]
    different = [(f"{people[k % 6]}/0.jpg", f"{people[(k % 6 + 1 + k // 6) % 6]}/2.jpg") for k in range(10)]
    bins = {}
    for name, order in (("lfw", 1), ("cfp_fp", -1)):
        lines = ["# generic pairs"] + [f"{a}\t{b}\t{int(s)}" for pair in zip(same[::order], different)
                                       for (a, b), s in zip(pair, (1, 0))]
        (root / f"{name}_pairs.txt").write_text("\n".join(lines) + "\n")
        bins[name] = root / f"{name}.bin"
        assert write_bin(root / "aligned", root / f"{name}_pairs.txt", bins[name]) == 20
    return rec, bins


def _log(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "train_log.jsonl").read_text().splitlines()]


def test_two_commands_train_on_a_pack_and_validate_on_its_bin_sets(pack_and_bins, tmp_path):
    from evaluation.run import evaluate_model_on_bin
    from tfrecords.build import build
    from training.curves import read_scalars

    rec, bins = pack_and_bins
    build(rec=rec, output_dir=tmp_path / "shards", center_crop=(112, 96), val_identities=2, val_pairs=20,
          progress=False, log=quiet)
    run = tmp_path / "run"
    args = [sys.executable, str(REPO / "train.py"), "--data", str(tmp_path / "shards"), "--output-dir", str(run),
            "--val-bin", str(bins["lfw"]), str(bins["cfp_fp"])]
    for key, value in TINY.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "best.keras is chosen on heldout AUC (a later model within one standard error of the best wins); the --val-bin sets (lfw, cfp_fp) are reported" in out.stdout
    assert "112x112 images, centre-cropped to 112x96 (columns 8..103" in out.stdout
    for name in ("heldout", "lfw", "cfp_fp"):
        assert f"step 4: validation on {name}: accuracy" in out.stdout
    validations = {(e["step"], e["validation"]): e for e in _log(run) if "validation" in e}
    assert sorted(validations) == sorted((step, name) for step in (2, 4) for name in ("heldout", "lfw", "cfp_fp"))
    assert all(0 <= e["accuracy_mean"] <= 1 and e["accuracy_std"] >= 0 for e in validations.values())
    scalars = read_scalars(run / "logs")
    assert [step for step, _ in scalars["val/lfw/accuracy_mean"]] == [2, 4]
    assert scalars["val/cfp_fp/accuracy_mean"][-1][1] == pytest.approx(validations[4, "cfp_fp"]["accuracy_mean"])
    # the same numbers as evaluate.py --bin --center-crop on the final model (exported after step 4)
    for name in ("lfw", "cfp_fp"):
        result, *_ = evaluate_model_on_bin(run / "export" / "embedding.keras", bins[name], center_crop=True,
                                           progress=False)
        assert result["accuracy_mean"] == pytest.approx(validations[4, name]["accuracy_mean"], abs=1e-9)
        assert result["accuracy_std"] == pytest.approx(validations[4, name]["accuracy_std"], abs=1e-9)
    summary = json.loads((run / "train_summary.jsonl").read_text().splitlines()[-1])
    # training/validation.py's rule: step 4 replaces step 2 unless its held-out AUC is below step 2's by
    # more than one standard error of that AUC (on the held-out split's same/different pair counts).
    from evaluation import auc_standard_error, read_pairs
    issame = read_pairs(tmp_path / "shards" / "val_pairs.txt").issame
    auc2, auc4 = validations[2, "heldout"]["auc"], validations[4, "heldout"]["auc"]
    chosen = 4 if auc4 >= auc2 - auc_standard_error(auc4, int(issame.sum()), int((~issame).sum())) else 2
    assert summary["best_validation_step"] == chosen
    assert summary["best_validation_accuracy"] == validations[chosen, "heldout"]["accuracy_mean"]
    assert set(summary["bin_validation"]) == {"lfw", "cfp_fp"} and "heldout" in summary["best_rule"]


def test_without_heldout_identities_the_mean_of_the_bin_sets_chooses_best(pack_and_bins, tmp_path):
    from tfrecords.build import build
    from training.config import resolve_config
    from training.run_dir import new_run_dir
    from training.trainer import run_training

    rec, bins = pack_and_bins
    build(rec=rec, output_dir=tmp_path / "shards", center_crop=(112, 96), progress=False, log=quiet)
    config = resolve_config({**TINY, "data": str(tmp_path / "shards"),
                                      "val_bin": [str(bins["lfw"]), str(bins["cfp_fp"])]})
    messages = []
    summary = run_training(config, new_run_dir(tmp_path / "run", "m", "l"), log=messages.append)
    assert any("chosen on the mean AUC of lfw, cfp_fp" in m and "no longer an unseen test" in m for m in messages)
    log = _log(tmp_path / "run")
    means = {e["step"]: e for e in log if e.get("validation") == "bin_mean"}
    assert sorted(means) == [2, 4]
    for step, entry in means.items():
        per_set = [e["accuracy_mean"] for e in log if e["step"] == step and e.get("validation") in ("lfw", "cfp_fp")]
        per_set_auc = [e["auc"] for e in log if e["step"] == step and e.get("validation") in ("lfw", "cfp_fp")]
        assert len(per_set) == 2 and entry["accuracy_mean"] == pytest.approx(np.mean(per_set))
        assert entry["auc"] == pytest.approx(np.mean(per_set_auc)) and entry["mean_of"] == ["lfw", "cfp_fp"]
    chosen = max(means, key=lambda s: (means[s]["auc"], s))   # the highest mean AUC, ties to the later step
    assert summary["best_validation_step"] == chosen
    assert summary["best_validation_accuracy"] == pytest.approx(means[chosen]["accuracy_mean"])
    assert (tmp_path / "run" / "export" / "best.keras").is_file() and summary["validation"] is None


def test_unusable_bin_sets_are_refused_before_training(pack_and_bins, tmp_path):
    import cv2

    from training.config import resolve_config
    from training.validation import make_bin_validators

    _, bins = pack_and_bins
    small = tmp_path / "small.bin"                # 64x64 images: no exact crop to 112x96
    jpeg = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    small.write_bytes(pickle.dumps(([jpeg] * 40, [True, False] * 10)))
    one_kind = tmp_path / "one_kind.bin"          # protocol order broken: the first tenth holds only same pairs
    bins_list, issame = pickle.loads(bins["lfw"].read_bytes())
    one_kind.write_bytes(pickle.dumps((bins_list, sorted(issame, reverse=True))))
    evil = tmp_path / "evil.bin"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    cases = {small: r"small\.bin: its images are 64x64 .* model takes 112x96",
             one_kind: r"one_kind\.bin: fold 0 of its 10 contiguous folds holds only same pairs",
             evil: r"evil\.bin: refusing to load os\.system"}
    for path, message in cases.items():
        config = resolve_config({**TINY, "data": "x", "val_bin": [str(path)]})
        with pytest.raises(ValueError, match=message):
            make_bin_validators(config, (112, 96), log=quiet)
    with pytest.raises(FileNotFoundError, match="--val-bin file not found: nowhere.bin"):
        resolve_config({**TINY, "data": "x", "val_bin": ["nowhere.bin"]})
    (tmp_path / "lfw.bin").write_bytes(bins["lfw"].read_bytes())
    config = resolve_config({**TINY, "data": "x", "val_bin": [str(bins["lfw"]), str(tmp_path / "lfw.bin")]})
    with pytest.raises(ValueError, match="both named 'lfw'"):
        make_bin_validators(config, (112, 96), log=quiet)
