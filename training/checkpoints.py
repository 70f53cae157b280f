"""The checkpoints of one run: weights, BN statistics, optimizer slots, step and best validation.

The chief writes RUN/checkpoints/ (three kept). Saving is collective under multi-worker training,
so the other workers save too, into a folder of their own (RUN/workers/tmp-N: the same weights,
which their own --resume reads). A checkpoint is never written from non-finite weights (the guard
checks every variable first). A head sharded over several workers (Partial FC) gathers every
shard for each save and read (``every_shard_here``), so that each of those folders holds all of it.
"""

import contextlib
import shutil
from pathlib import Path

import tensorflow as tf

from training.run_dir import CHECKPOINT_SUBDIR, write_failure


class RunCheckpoints:
    """``restore()`` on --resume, ``save(step)`` during training; ``step`` and ``best_val`` are saved
    with the model so a resumed run continues its count and its best-model choice."""

    def __init__(self, run_dir, strategy, chief, guard, backbone, head, optimizer, keep=3):
        self.guard = guard
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_val = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(backbone=backbone, head=head, optimizer=optimizer,
                                              step=self.step, best_val=self.best_val)
        self.run_dir = run_dir
        self.directory = (run_dir / CHECKPOINT_SUBDIR if chief
                          else run_dir / "workers" / f"tmp-{strategy.cluster_resolver.task_id}")
        self._remove_partial_saves()
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=keep)
        self.variables = backbone.variables + head.variables + optimizer.variables
        # a sharded head's pieces of other workers are present only within it (training/partial_fc_sharded.py)
        self._whole_head = getattr(head, "every_shard_here", lambda saving: contextlib.nullcontext())
        self.restored = None   # the checkpoint restore() read, until the next save

    def _remove_partial_saves(self):
        # A kill (or a full disk) during a save leaves a ckpt-N_temp folder no checkpoint index points to.
        for leftover in self.directory.glob("ckpt-*_temp*"):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()

    @property
    def latest(self):
        """Path prefix of the newest readable checkpoint (after a restore that passed over a damaged
        one: the one restored, until the next save), or None."""
        return self.restored or self.manager.latest_checkpoint

    def restore(self, log=print):
        """Restore the newest readable checkpoint; returns its step.

        A damaged newest checkpoint (truncated or overwritten files) is named in one logged line and
        the next older one is used, as if the run had stopped before the damaged save. ValueError,
        naming the files, when none can be read; FileNotFoundError when there is none.
        """
        if not self.manager.latest_checkpoint:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.directory}")
        damaged = []
        for prefix in reversed(self.manager.checkpoints):
            try:
                with self._whole_head(saving=False):
                    self.checkpoint.restore(prefix).assert_existing_objects_matched()
            except (tf.errors.OpError, IndexError, ValueError, AssertionError) as error:
                first_line = (str(error).strip() or "no message").splitlines()[0]
                damaged.append(f"{Path(prefix).name} ({type(error).__name__}: {first_line})")
                continue
            if damaged:
                log(f"warning: {self.directory}: checkpoint {', '.join(damaged)} cannot be read (damaged or "
                    f"truncated); resuming from the older {Path(prefix).name}")
            self.restored = prefix
            return int(self.step)
        raise ValueError(f"--resume: no checkpoint in {self.directory} can be read: {'; '.join(damaged)}. "
                         "Restore the folder from a backup, or start a new run with another --output-dir")

    def save(self, step):
        """Save the state after ``step`` (TrainingDiverged, and nothing written, if a weight is not finite).

        A save that fails (a full disk, ...) removes its partial files and raises RunWriteError: one
        line naming the run directory and how to continue."""
        self.guard.check_finite(step, self.variables)
        self.step.assign(step)
        try:
            with self._whole_head(saving=True):
                self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as error:
            self._remove_partial_saves()
            raise write_failure(self.run_dir, f"the checkpoint of step {step} in {self.directory}", error,
                                self.latest) from None
        self.restored = None   # the newest checkpoint is this one now
