"""Stop a run that can no longer learn, early and with a message that says what to try.

Three failures, each cheap to see from what the training step already returns:
- **diverged**: the loss is NaN or Inf; a checkpoint is never written from non-finite weights,
  so the one the message names can be resumed from;
- **collapsed**: the embeddings of different identities in the batch all point one way (their
  mean pairwise cosine stays above ``COLLAPSE_COSINE`` for ``COLLAPSE_WINDOWS`` log windows in a
  row): the model maps every face to one direction and validation sits at 50 %;
- **stuck**: the per-step loss has not moved by more than ``STUCK_SPREAD`` (relative) over
  ``STUCK_STEPS`` steps: the network's output no longer depends on its input.
"""

import collections
import math

import numpy as np

# A healthy run's different-identity cosine starts below ~0.6 for every backbone here and falls as
# it learns; collapsed ResFace20 runs sat at 0.99+ (benchmarks/README.md, "training dynamics").
COLLAPSE_COSINE = 0.9
COLLAPSE_WINDOWS = 3
# Before this many steps (or the end of the warm-up, if later) the guard only reports, it does not
# stop: the first updates of an un-normalised network may briefly align its outputs.
COLLAPSE_GRACE_STEPS = 50
STUCK_STEPS = 50
STUCK_SPREAD = 1e-5

ADVICE = ("use a backbone with batch norm (resface20/resface36: --backbone-option batch_norm=true, the "
          "training default), a lower --lr or --warmup-steps; see docs/training.md, 'When training collapses'")


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or Inf; the checkpoint named in the message is finite."""


class TrainingCollapsed(RuntimeError):
    """The embeddings collapsed to one direction, or the loss stopped moving."""


class TrainingGuard:
    """Called by the loop after every step (``after_step``), at every log point (``after_window``)
    and before every checkpoint (``check_finite``). ``last_checkpoint()`` names the newest checkpoint
    on disk, for the messages."""

    def __init__(self, last_checkpoint, enabled=True, warmup_steps=0, grace_steps=None):
        self.last_checkpoint = last_checkpoint
        self.enabled = enabled
        grace_steps = COLLAPSE_GRACE_STEPS if grace_steps is None else grace_steps
        self.grace = max(int(grace_steps), int(warmup_steps))
        self.recent_losses = collections.deque(maxlen=STUCK_STEPS)
        self.high_windows = 0

    def _where(self, good=False):
        return f"The last {'good ' if good else ''}checkpoint is {self.last_checkpoint() or '(none yet)'}"

    def after_step(self, step, loss):
        """loss: this step's mean loss (float)."""
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} at step {step}; training stopped. {self._where(good=True)} (its weights are "
                f"finite): lower --lr or set --clip-grad-norm, check --data, then --resume from it.")
        if not self.enabled:
            return
        self.recent_losses.append(loss)
        if len(self.recent_losses) == STUCK_STEPS:
            spread = max(self.recent_losses) - min(self.recent_losses)
            if spread <= STUCK_SPREAD * max(1.0, abs(loss)):
                raise TrainingCollapsed(
                    f"training is stuck at step {step}: the loss has stayed at {loss:.6g} (spread {spread:.2g}) "
                    f"for {STUCK_STEPS} steps, so the output no longer depends on the input. {self._where()}. "
                    f"Start a new run: {ADVICE}.")

    def after_window(self, step, mean_cosine):
        """mean_cosine: mean cosine between embeddings of different identities over the log window."""
        if not self.enabled or not math.isfinite(mean_cosine):
            return
        self.high_windows = self.high_windows + 1 if mean_cosine > COLLAPSE_COSINE else 0
        if self.high_windows >= COLLAPSE_WINDOWS and step > self.grace:
            raise TrainingCollapsed(
                f"training collapsed at step {step}: the embeddings of different identities point the same "
                f"way (mean cosine {mean_cosine:.4f} > {COLLAPSE_COSINE} for {self.high_windows} log windows "
                f"in a row), so the model cannot tell faces apart. {self._where()}. "
                f"Start a new run: {ADVICE}. (--no-collapse-guard trains on regardless.)")

    def check_finite(self, step, variables):
        """Refuse to checkpoint non-finite weights (a finite loss can still produce them)."""
        bad = [v.path for v in variables if not np.all(np.isfinite(np.asarray(v.numpy(), dtype=np.float32)))]
        if bad:
            raise TrainingDiverged(
                f"the update of step {step} made {len(bad)} weight tensors non-finite (e.g. {bad[0]}); "
                f"training stopped without saving them. {self._where(good=True)} (its weights are finite): lower --lr "
                f"or set --clip-grad-norm, then --resume from it.")
