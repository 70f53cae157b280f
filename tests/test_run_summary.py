"""The end of a run says what happened: the summary against the run's own log, config.json's resolved
values, the curves' first and last points, the progress bar's first estimate, and TensorBoard's start-up
lines kept out of an API user's terminal."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.config import resolve_config
from training.run_dir import new_run_dir, save_run_config
from training.trainer import run_training

REPO = Path(__file__).resolve().parents[1]
TINY = {"backbone": "mobilefacenet", "image_size": None, "embedding_size": 32, "batch_size": 4, "num_classes": 7,
        "synthetic_images": 64, "exports": "keras", "lr_schedule": "constant", "lr": None, "checkpoint_every": 100,
        "val_every": 100, "log_every": 3, "max_steps": 7}


def test_summary_config_and_curves_match_the_runs_own_log(tmp_path):
    run = new_run_dir(tmp_path / "run", "m", "l")
    config = resolve_config({k: v for k, v in TINY.items() if v is not None} | {"lr_schedule": "cosine"})
    config.lr = None   # as with --data and no --lr (the synthetic preset sets 0.1): the reference lr for batch 4
    save_run_config(run, config)   # as train.py does before training
    lines = []
    summary = run_training(config, run, log=lines.append)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    windows = {e["step"]: e for e in log if "loss" in e}
    assert sorted(windows) == [1, 3, 6, 7]   # --log-every 3, plus the first and the last step
    # the last window holds step 7 alone: the summary's final loss is that step's
    assert summary["final_loss"] == pytest.approx(windows[7]["loss"], rel=1e-6)
    assert summary["final_accuracy"] == pytest.approx(windows[7]["accuracy"])
    parts = [summary[k] for k in ("train_seconds", "validation_seconds", "export_seconds", "setup_seconds")]
    assert all(p >= 0 for p in parts) and sum(parts) == pytest.approx(summary["wall_seconds"])
    assert summary["export_seconds"] > 0 and any(line.startswith("export: ") for line in lines)
    saved = json.loads((run / "config.json").read_text())
    assert saved["num_classes"] == 7 and saved["image_size"] == "112x96" and saved["max_steps"] == 7
    assert saved["lr"] == pytest.approx(summary["peak_lr"]) and saved["lr"] == pytest.approx(0.1 * 4 / 256)
    from training.curves import read_scalars
    steps = [s for s, _ in read_scalars(run / "logs")["train/loss"]]
    assert steps[0] == 1 and steps[-1] == 7


def test_progress_bar_first_estimate_leaves_the_compile_step_out(tmp_path):
    from training.logger import RunLogger

    logger = RunLogger(tmp_path, True, 60, 0, 4)
    stats = {"loss": 1.0, "correct": 1.0, "classified": 4.0, "cosine_sum": 0.0, "cosine_pairs": 1.0}
    logger.step_done(stats, 20.0)   # a first step of 20 s (tracing): 60 x 20 s would announce 20 minutes
    bar = logger.bar.format_dict
    assert bar["n"] == 1 and bar["initial"] == 1 and bar["elapsed"] < 5
    assert "<?" in str(logger.bar)   # no time left announced until a real step is timed
    logger.step_done(stats, 0.1)
    assert logger.bar.n == 2 and logger.last_step["accuracy"] == 0.25
    logger.close()


def test_importing_the_packages_keeps_tensorflows_start_up_lines_out(tmp_path):
    script = ("import training.trainer, inference, evaluation\n"
              "import tensorflow as tf\n"
              "print(float(tf.reduce_sum(tf.ones(3))))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FACEID_TF_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "3.0", out.stderr[-2000:]
    assert not any(noise in out.stderr for noise in ("oneDNN", "cuInit", "I0000", "absl::InitializeLog")), out.stderr
    assert math.isfinite(float(out.stdout))
