"""training/guard.py: a diverged, collapsed or stuck run is stopped with a message that says what
happened and what to try; a healthy run is left alone; no checkpoint is written from non-finite
weights."""

import json
from pathlib import Path

import numpy as np
import pytest

from training import guard as guard_module
from training.config import resolve_config
from training.guard import TrainingCollapsed, TrainingDiverged, TrainingGuard
from training.run_dir import new_run_dir
from training.trainer import run_training


def _guard(**kwargs):
    return TrainingGuard(lambda: "RUN/checkpoints/ckpt-40", **kwargs)


def test_nan_loss_is_diverged_and_names_the_checkpoint():
    g = _guard()
    g.after_step(1, 3.0)
    with pytest.raises(TrainingDiverged, match="ckpt-40"):
        g.after_step(2, float("nan"))
    with pytest.raises(TrainingDiverged, match="inf"):
        _guard(enabled=False).after_step(2, float("inf"))   # NaN/Inf stops even with the guard off


def test_stuck_loss_stops_only_when_it_really_does_not_move():
    g = _guard()
    rng = np.random.default_rng(0)
    for step in range(200):   # a noisy healthy loss, however flat on average, never trips it
        g.after_step(step, 17.5 + 0.01 * rng.standard_normal())
    g = _guard()
    with pytest.raises(TrainingCollapsed, match="stuck") as err:
        for step in range(guard_module.STUCK_STEPS):
            g.after_step(step, 17.4068)
    assert "batch_norm=true" in str(err.value) and "ckpt-40" in str(err.value)
    off = _guard(enabled=False)
    for step in range(2 * guard_module.STUCK_STEPS):
        off.after_step(step, 17.4068)


def test_collapse_needs_consecutive_high_windows_after_the_grace_period():
    g = _guard(grace_steps=50)
    for step in (20, 40):             # inside the grace period: reported only
        g.after_window(step, 0.999)
    g.after_window(60, 0.5)           # a healthy window resets the count
    g.after_window(80, 0.99)
    g.after_window(100, 0.99)
    with pytest.raises(TrainingCollapsed, match=r"collapsed at step 120.*0\.9990"):
        g.after_window(120, 0.999)
    warm = _guard(grace_steps=10, warmup_steps=300)   # the warm-up extends the grace period
    for step in range(20, 301, 20):
        warm.after_window(step, 0.99)
    with pytest.raises(TrainingCollapsed):
        warm.after_window(320, 0.99)
    healthy = _guard(grace_steps=0)
    for step in range(1, 100):
        healthy.after_window(step, 0.3)


def test_non_finite_weights_are_never_checkpointed():
    import keras
    good = keras.Variable(np.ones(3, "float32"), name="good")
    bad = keras.Variable(np.array([1.0, np.inf, 0.0], "float32"), name="bad")
    _guard().check_finite(5, [good])
    with pytest.raises(TrainingDiverged, match="made 1 weight tensors non-finite.*bad"):
        _guard().check_finite(5, [good, bad])


def test_embeddings_that_overflow_at_a_validation_stop_the_run_as_diverged(tmp_path):
    """Finite weights whose outputs overflow (the embeddings a validation sees are Inf, NaN once
    normalised): the run stops as a divergence naming the step and the fix (train.py exit 1, which the
    LFW benchmark reports as a stopped run), not with the metrics' bare ValueError."""
    import evaluation
    from recipes.lfw_view1 import guard_stop
    from training.validation import Validation

    class Overflowing:
        name = "heldout"

        def __call__(self, model):
            inf = np.full((4, 8), np.inf, "float32")
            return evaluation.verification_metrics(inf, inf, np.array([True, False] * 2), np.array([0, 0, 1, 1]))

    with pytest.raises(evaluation.NonFiniteEmbeddings):   # what evaluate.py reports, as before
        Overflowing()(None)
    validation = Validation(Overflowing(), None, None, None, None, chief=True, log=lambda *_: None)
    with pytest.raises(TrainingDiverged, match=r"after step 3 became NaN or Inf on heldout.*lower --lr") as error:
        validation(3)
    (tmp_path / "train.log").write_text(f"train: 100%\nerror: {error.value}\n")   # as train.py prints it
    assert guard_stop(tmp_path / "train.log").startswith("the embeddings of the model after step 3")


# The published ResFace20 (no batch norm): what collapses. With training's default batch norm the
# same run trains (test_same_run_with_batch_norm_is_not_stopped).
TINY_RESFACE = {"backbone": "resface20", "backbone_options": {"batch_norm": False}, "image_size": "32x32",
                "embedding_size": 32, "batch_size": 8,
                "num_classes": 8, "synthetic_images": 64, "log_every": 5, "checkpoint_every": 10,
                "lr_schedule": "constant", "warmup_steps": 0, "exports": "keras"}


def test_collapsing_run_is_stopped_with_a_message(tmp_path):
    """ResFace20 without BN at lr 0.3 and no warm-up: the activations explode within a few steps
    and every embedding points one way (benchmarks/README.md, "Why ResFace20 collapsed"). The guard
    stops the run right after its grace period, and the checkpoint it names exists."""
    run = tmp_path / "run"
    config = resolve_config({**TINY_RESFACE, "lr": 0.3, "max_steps": 400, "log_every": 2})
    with pytest.raises(TrainingCollapsed, match="collapsed") as err:
        run_training(config, new_run_dir(run, "r", "l"), log=lambda *_: None)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] <= guard_module.COLLAPSE_GRACE_STEPS + 2 * guard_module.COLLAPSE_WINDOWS
    assert all(e["embedding_cosine"] > guard_module.COLLAPSE_COSINE for e in log[-3:])
    named = str(err.value).split("The last checkpoint is ")[1].split(". ")[0]
    assert Path(named + ".index").is_file()


def test_stuck_run_is_stopped_with_a_message(tmp_path):
    """The same broken run logged every 20 steps: its loss freezes to the last digit, and the guard
    says so before the second high-cosine window arrives."""
    config = resolve_config({**TINY_RESFACE, "lr": 0.3, "max_steps": 400, "log_every": 20})
    with pytest.raises(TrainingCollapsed, match="stuck"):
        run_training(config, new_run_dir(tmp_path / "run", "r", "l"), log=lambda *_: None)


def test_same_run_with_batch_norm_is_not_stopped(tmp_path):
    """The same settings with training's default (ResFace20 with batch norm) learn, and the guard
    lets them: a healthy run is never stopped."""
    config = resolve_config({**TINY_RESFACE, "backbone_options": {"batch_norm": True}, "lr": 0.3,
                                      "max_steps": 80, "log_every": 2})
    summary = run_training(config, new_run_dir(tmp_path / "run", "r", "l"),
                                    log=lambda *_: None)
    assert summary["last_step"] == 80 and summary["final_accuracy"] > 0.9
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert max(e["embedding_cosine"] for e in log) < guard_module.COLLAPSE_COSINE
