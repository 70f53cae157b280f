"""The checkpoints of one run: weights, BN statistics, optimizer slots, step and best validation.

The chief writes RUN/checkpoints/ (three kept). Saving is collective under multi-worker training,
so the other workers save too, into a scratch folder nobody reads. A checkpoint is never written
from non-finite weights (the guard checks every variable first).
"""

import shutil

import tensorflow as tf

from training.run_dir import CHECKPOINT_SUBDIR


class RunCheckpoints:
    """``restore()`` on --resume, ``save(step)`` during training; ``step`` and ``best_val`` are saved
    with the model so a resumed run continues its count and its best-model choice."""

    def __init__(self, run_dir, strategy, chief, guard, backbone, head, optimizer, keep=3):
        self.guard = guard
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_val = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(backbone=backbone, head=head, optimizer=optimizer,
                                              step=self.step, best_val=self.best_val)
        self.directory = (run_dir / CHECKPOINT_SUBDIR if chief
                          else run_dir / "workers" / f"tmp-{strategy.cluster_resolver.task_id}")
        # A kill during a save leaves a ckpt-N_temp folder that no checkpoint index points to.
        for leftover in self.directory.glob("ckpt-*_temp*"):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.directory), max_to_keep=keep)
        self.variables = backbone.variables + head.variables + optimizer.variables

    @property
    def latest(self):
        """Path prefix of the newest checkpoint, or None."""
        return self.manager.latest_checkpoint

    def restore(self):
        """Restore the newest checkpoint; returns its step. FileNotFoundError when there is none."""
        if not self.manager.latest_checkpoint:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.directory}")
        self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return int(self.step)

    def save(self, step):
        """Save the state after ``step`` (TrainingDiverged, and nothing written, if a weight is not finite)."""
        self.guard.check_finite(step, self.variables)
        self.step.assign(step)
        self.manager.save(checkpoint_number=step)
