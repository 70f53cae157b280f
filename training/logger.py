"""Where a run reports: the progress bar, TensorBoard (RUN/logs/), RUN/train_log.jsonl, windowed means.

Only the chief writes; other workers get the same object with every output switched off.
"""

import json
import math

import tensorflow as tf
from tqdm import tqdm

from fileio import write_text_atomic


class RunLogger:
    """Accumulates each step's statistics and writes their means every log window.

    ``step_done(stats, seconds)`` after every step; ``end_window(step, lr, epoch)`` at each log point
    returns the window's means (loss, accuracy, embedding_cosine, images_per_sec); ``validation``
    records a validation result. The first step of an invocation (tracing, compilation) is kept out
    of every images/s figure.
    """

    def __init__(self, run_dir, chief, total_steps, start_step, global_batch):
        self.chief = chief
        self.global_batch = global_batch
        self.writer = (tf.summary.create_file_writer(str(run_dir / "logs")) if chief
                       else tf.summary.create_noop_writer())
        if chief:
            _drop_lines_after(run_dir / "train_log.jsonl", start_step)
        self.file = open(run_dir / "train_log.jsonl", "a") if chief else None
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", desc="train", dynamic_ncols=True,
                        disable=not chief)
        self.first_step_seconds = None
        self.timed_steps, self.timed_seconds = 0, 0.0          # over the whole invocation
        self.step_seconds = 0.0                                 # every step of the invocation, the first included
        self.last = {"loss": None, "accuracy": None}             # the last window's means
        self.last_step = {"loss": None, "accuracy": None}        # the last step's own values
        self._reset_window()

    def _reset_window(self):
        self.window = {"loss": 0.0, "correct": 0.0, "classified": 0.0, "cosine_sum": 0.0, "cosine_pairs": 0.0, "steps": 0,
                       "timed_steps": 0, "seconds": 0.0}

    def step_done(self, stats, seconds):
        """stats: the training step's global sums as floats (loss, correct, classified, cosine_sum, cosine_pairs)."""
        w = self.window
        self.step_seconds += seconds
        self.last_step = {"loss": stats["loss"], "accuracy": stats["correct"] / max(stats["classified"], 1.0)}
        first = self.first_step_seconds is None
        if first:
            self.first_step_seconds = seconds
        else:
            w["timed_steps"] += 1
            w["seconds"] += seconds
            self.timed_steps += 1
            self.timed_seconds += seconds
        for key in ("loss", "correct", "classified", "cosine_sum", "cosine_pairs"):
            w[key] += stats[key]
        w["steps"] += 1
        if first and not self.bar.disable:
            # The first step traces and compiles (seconds to minutes): restart the bar's clock after it, so its
            # first rate and time left are those of real steps, not 30000 x the compile time.
            done = self.bar.n + 1
            self.bar.reset(self.bar.total)
            self.bar.initial = self.bar.n = self.bar.last_print_n = done
            self.bar.refresh()
        else:
            self.bar.update(1)

    def end_window(self, step, lr, epoch):
        """Write the window's means (bar, TensorBoard, JSON line), start a new window; returns the means."""
        w = self.window
        ips = self.global_batch * w["timed_steps"] / w["seconds"] if w["timed_steps"] else float("nan")
        # Accuracy over the examples that have a class (negatives-only examples have none).
        means = {"loss": w["loss"] / w["steps"], "accuracy": w["correct"] / max(w["classified"], 1.0),
                 "embedding_cosine": w["cosine_sum"] / w["cosine_pairs"] if w["cosine_pairs"] else float("nan"),
                 "images_per_sec": ips}
        self.bar.set_postfix(loss=f"{means['loss']:.4f}", acc=f"{means['accuracy']:.3f}", lr=f"{lr:.3g}",
                             img_s=f"{ips:.1f}")
        with self.writer.as_default(step=step):
            tf.summary.scalar("train/loss", means["loss"])
            tf.summary.scalar("train/accuracy", means["accuracy"])
            tf.summary.scalar("train/lr", lr)
            tf.summary.scalar("train/images_per_sec", ips)
            tf.summary.scalar("train/embedding_cosine", means["embedding_cosine"])
        self._record({"step": step, "loss": means["loss"], "accuracy": means["accuracy"], "lr": lr,
                      "embedding_cosine": means["embedding_cosine"], "images_per_sec": ips, "epoch": epoch})
        self.last = means
        self._reset_window()
        return means

    def validation(self, step, name, metrics):
        """Record a validation result (TensorBoard val/NAME/... and a JSON line)."""
        with self.writer.as_default(step=step):
            for key in ("accuracy_mean", "val", "auc", "eer"):
                tf.summary.scalar(f"val/{name}/{key}", metrics[key])
        self._record({"step": step, "validation": name,
                      **{k: metrics[k] for k in ("accuracy_mean", "accuracy_std", "val", "auc", "eer")}})

    def selection_score(self, step, name, accuracy, auc, sets):
        """Record the mean over several sets that chooses best.keras (its AUC) when it is not one set's
        (TensorBoard val/NAME/accuracy_mean and auc, and a JSON line naming the sets it summarises)."""
        with self.writer.as_default(step=step):
            tf.summary.scalar(f"val/{name}/accuracy_mean", accuracy)
            tf.summary.scalar(f"val/{name}/auc", auc)
        self._record({"step": step, "validation": name, "accuracy_mean": accuracy, "auc": auc, "mean_of": sets})

    @property
    def images_per_sec(self):
        """Steady-state rate of this invocation (the first step left out)."""
        return self.global_batch * self.timed_steps / self.timed_seconds if self.timed_steps else math.nan

    def _record(self, entry):
        if self.file:
            self.file.write(json.dumps(entry) + "\n")
            self.file.flush()

    def close(self):
        self.bar.close()
        self.writer.flush()
        if self.file:
            self.file.close()


def _drop_lines_after(path, step):
    """Remove the JSON lines of steps after ``step`` (a resumed run redoes them; kill -9 left them)."""
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            late = json.loads(line).get("step", 0) > step
        except json.JSONDecodeError:   # a line cut short by a kill
            late = True
        if late:
            dropped += 1
        else:
            kept.append(line + "\n")
    if dropped:
        write_text_atomic(path, "".join(kept))
