"""SIGTERM and SIGINT during training: finish the step, save a checkpoint, say so, exit 128 + signal.

What a scheduler (Slurm, Kubernetes, a cloud's preemption notice), ``docker stop`` or Ctrl-C sends.
Python's default ends the process at once (SIGTERM, no message, no checkpoint: up to
--checkpoint-every steps lost) or raises KeyboardInterrupt in the middle of a step. As in
tf.distribute's PreemptionCheckpointHandler, the signal only sets a flag; the loop reads it after
each step, saves the checkpoint of that step and stops with ``TrainingInterrupted``, which train.py
turns into one line and the shell's conventional status (143 for SIGTERM, 130 for SIGINT). A second
signal while that checkpoint is written is ignored (the save is short; a kill -9 still works and
leaves the previous checkpoint, as the checkpoints' atomic saves guarantee).

Single worker only: under multi-worker training a signal reaches one worker, and a worker that
stopped alone would leave the others waiting in a collective step (the handler is not installed
there; tf.distribute's own handler is the tool for clusters).
"""

import contextlib
import signal


class TrainingInterrupted(Exception):
    """Training stopped by a signal after a checkpoint was saved; ``exit_code`` is 128 + the signal."""

    def __init__(self, signum, step, run_dir, checkpoint):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"{name} received: stopped after step {step}, checkpoint {checkpoint} saved; "
                         f"continue with `python train.py --resume --output-dir {run_dir}`")


class StopRequest:
    """``signum`` of the first SIGTERM/SIGINT received while installed (None until then)."""

    def __init__(self):
        self.signum = None

    def _handler(self, signum, frame):
        if self.signum is None:
            self.signum = signum

    @contextlib.contextmanager
    def installed(self, enabled=True):
        """Catch SIGTERM and SIGINT inside the block (previous handlers restored after it)."""
        if not enabled:
            yield self
            return
        previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
