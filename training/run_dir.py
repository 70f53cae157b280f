"""Run directories: RUN/config.json, RUN/checkpoints/, RUN/logs/, RUN/train_log.jsonl, RUN/export/."""

import json
import re
import time
from pathlib import Path

from fileio import write_text_atomic

RUNS_ROOT = Path("runs")
CHECKPOINT_SUBDIR = "checkpoints"


def has_checkpoint(run_dir):
    return (Path(run_dir) / CHECKPOINT_SUBDIR / "checkpoint").is_file()


def new_run_dir(output_dir, backbone, loss):
    """``output_dir`` or runs/<UTC time>-<backbone>-<loss>; refuses a folder that already holds a run."""
    run_dir = Path(output_dir) if output_dir else RUNS_ROOT / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{backbone}-{loss}"
    if has_checkpoint(run_dir):
        raise FileExistsError(f"{run_dir} already holds a training run: pass --resume to continue it, "
                              "or choose another --output-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_to_resume(output_dir=None):
    """The run ``--resume`` continues: ``output_dir``, else the newest run under runs/ with a checkpoint."""
    if output_dir:
        run_dir = Path(output_dir)
        if not has_checkpoint(run_dir):
            raise FileNotFoundError(f"--resume: {run_dir}/{CHECKPOINT_SUBDIR} holds no checkpoint")
        return run_dir
    runs = [d for d in RUNS_ROOT.glob("*") if has_checkpoint(d)]
    if not runs:
        raise FileNotFoundError(f"--resume: no run with a checkpoint under {RUNS_ROOT}/; pass --output-dir RUN")
    return max(runs, key=lambda d: (d / CHECKPOINT_SUBDIR / "checkpoint").stat().st_mtime)


def load_run_config(run_dir):
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: cannot resume a run without its resolved config")
    return json.loads(path.read_text())


def save_run_config(run_dir, config):
    write_text_atomic(Path(run_dir) / "config.json", config.to_json() + "\n")


class RunWriteError(RuntimeError):
    """A file of the run could not be written (a full disk, a quota, a file-size limit, ...)."""


def write_failure(run_dir, what, error, latest_checkpoint) -> RunWriteError:
    """One line: what could not be written and why, and how the run continues once there is room."""
    if isinstance(error, OSError):
        reason = error.strerror or str(error)
    else:  # tf.errors.OpError: "{{function_node ...}} /path/...tempstate123; File too large [Op:SaveV2]"
        reason = re.sub(r"\s*\[Op:\w+\].*$", "", getattr(error, "message", str(error)).strip(), flags=re.DOTALL)
        reason = reason.rsplit("; ", 1)[-1].splitlines()[0]
    then = (f"`python train.py --resume --output-dir {run_dir}` continues from {Path(latest_checkpoint).name}"
            if latest_checkpoint else "rerun the same command (no checkpoint was written yet)")
    return RunWriteError(f"cannot write {what}: {reason}; free space in {run_dir} (or lift the file-size "
                         f"limit), then {then}")
