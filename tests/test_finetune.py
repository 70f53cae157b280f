"""Fine-tuning (train.py --init-from, --freeze-backbone-steps, --backbone-lr-mult) and the starter model's
plumbing (engines/starter.py): tiny models built here, never a model file from the repository."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.inference_helpers import embedding_model
from training.config import resolve_config
from training.export import save_keras_atomic
from training.run_dir import new_run_dir
from training.trainer import run_training

REPO = Path(__file__).resolve().parents[1]
TINY = {"image_size": "32x32", "batch_size": 4, "num_classes": 10, "synthetic_images": 64, "log_every": 1,
        "exports": "keras", "lr_schedule": "constant", "lr": 0.05, "checkpoint_every": 100, "val_every": 100}


@pytest.fixture(scope="module")
def init_model(tmp_path_factory):
    """A 32x32, 32-d MobileFaceNet export with trained-looking BN statistics: the model fine-tuning starts from."""
    path = tmp_path_factory.mktemp("init") / "init.keras"
    save_keras_atomic(embedding_model("mobilefacenet", image_size=(32, 32), embedding_size=32, seed=3), path)
    return path


def _backbone_weights(model_path):
    import keras
    model = keras.saving.load_model(str(model_path), safe_mode=True)
    return model, model.get_layer("mobilefacenet").get_weights()


def test_init_from_adopts_the_models_architecture_and_records_it(init_model):
    from fileio import sha256_of_file

    config = resolve_config({**TINY, "image_size": None, "init_from": str(init_model)})
    assert (config.backbone, config.embedding_size, config.image_size) == ("mobilefacenet", 32, "32x32")
    assert config.init_from == str(init_model) and config.init_from_sha256 == sha256_of_file(init_model)
    assert config.backbone_lr_mult == 0.1   # the fine-tuning default; 1 without --init-from
    assert resolve_config(TINY).backbone_lr_mult == 1.0
    assert json.loads(config.to_json())["init_from_sha256"] == config.init_from_sha256
    with pytest.raises(ValueError, match=r"--embedding-size 64 \(the init model's is 32\)"):
        resolve_config({**TINY, "init_from": str(init_model), "embedding_size": 64})
    with pytest.raises(ValueError, match=r"--image-size 112x96 \(the init model's is 32x32\)"):
        resolve_config({**TINY, "init_from": str(init_model), "image_size": "112x96"})
    with pytest.raises(ValueError, match=r"--backbone resface20"):
        resolve_config({**TINY, "init_from": str(init_model), "backbone": "resface20"})
    with pytest.raises(FileNotFoundError, match="model not found"):
        resolve_config({**TINY, "init_from": str(init_model.parent / "missing.keras")})


def test_fine_tuning_starts_from_the_weights_freezes_then_trains(init_model, tmp_path):
    """3 frozen steps: every backbone weight (BN statistics too) bit-identical to the init model's and the
    embeddings equal; the new head trained; resumed to 6 steps, the backbone has moved."""
    import keras

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    init, init_weights = _backbone_weights(init_model)
    run = new_run_dir(tmp_path / "run", "m", "l")
    config = resolve_config({**TINY, "init_from": str(init_model), "freeze_backbone_steps": 3, "max_steps": 3,
                             "checkpoint_every": 3})
    lines = []
    run_training(config, run, log=lines.append)
    assert any(line.startswith("fine-tuning: backbone mobilefacenet from") for line in lines)
    assert any("backbone frozen (weights and batch-norm statistics) for steps 1-3" in line for line in lines)
    frozen, frozen_weights = _backbone_weights(run / "export" / "embedding.keras")
    assert len(frozen_weights) == len(init_weights)
    assert all(np.array_equal(a, b) for a, b in zip(frozen_weights, init_weights))
    np.testing.assert_array_equal(np.asarray(frozen(images)), np.asarray(init(images)))
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3] and all(np.isfinite(e["loss"]) for e in log)

    config = resolve_config({**TINY, "init_from": str(init_model), "freeze_backbone_steps": 3, "max_steps": 6,
                             "resume": True})
    run_training(config, run, log=lambda *_: None)
    _, trained_weights = _backbone_weights(run / "export" / "embedding.keras")
    changed = [not np.array_equal(a, b) for a, b in zip(trained_weights, init_weights)]
    assert sum(changed) > len(changed) // 2
    keras.backend.clear_session()


def test_backbone_lr_mult_scales_only_the_backbone(init_model, tmp_path):
    """--backbone-lr-mult 0: the backbone's trainable weights never move; a run without validation says so once."""
    run = new_run_dir(tmp_path / "run", "m", "l")
    lines = []
    run_training(resolve_config({**TINY, "init_from": str(init_model), "backbone_lr_mult": 0.0,
                                          "weight_decay": 0.0, "max_steps": 2}), run, log=lines.append)
    # synthetic data has no held-out identities: said once
    assert len([line for line in lines if line.startswith("no validation:")]) == 1
    import keras
    init = keras.saving.load_model(str(init_model), safe_mode=True).get_layer("mobilefacenet")
    tuned = keras.saving.load_model(str(run / "export" / "embedding.keras"), safe_mode=True).get_layer("mobilefacenet")
    for a, b in zip(init.trainable_weights, tuned.trainable_weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_starter_resolves_from_the_env_and_says_when_absent(init_model, tmp_path, monkeypatch):
    from engines.model_file import resolve_model_path
    from engines.starter import STARTER_ENV, StarterMissing, starter_model_path

    monkeypatch.setenv(STARTER_ENV, str(tmp_path / "absent.keras"))
    with pytest.raises(StarterMissing, match="the starter model is not installed") as error:
        resolve_model_path("starter")
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="starter model is not installed"):
        resolve_config({**TINY, "init_from": "starter"})
    monkeypatch.setenv(STARTER_ENV, str(init_model))
    assert starter_model_path() == init_model and resolve_model_path("starter") == init_model
    assert resolve_config({**TINY, "init_from": "starter"}).init_from == str(init_model)
    # no --model and no run: the starter model; a run under runs/ still comes first
    assert resolve_model_path(None, tmp_path / "runs", starter_fallback=True) == init_model
    (tmp_path / "runs" / "r1" / "export").mkdir(parents=True)
    shutil.copy(init_model, tmp_path / "runs" / "r1" / "export" / "embedding.keras")
    assert resolve_model_path(None, tmp_path / "runs", starter_fallback=True).parent.parent.name == "r1"


def test_train_cli_refuses_a_mismatched_init_model_in_one_line(init_model, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "train.py"), "--init-from", str(init_model), "--embedding-size",
                          "64", "--output-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--embedding-size 64 (the init model's is 32)" in errors[0]
