"""Learning-rate schedules, evaluated at the optimizer's step so a resumed run gets the same lr."""

import itertools
import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="faceid")
class FaceLRSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise-constant steps, cosine or polynomial decay, with optional linear warm-up.

    kind "step":   lr = values[i] for boundaries[i] <= step < boundaries[i+1].
    kind "cosine": lr = base·(1 + cos(π·t)) / 2, t = (step − W) / (total_steps − W), clipped to [0, 1].
    kind "poly":   lr = base·(1 − t)^power (insightface's polynomial decay, power 2), the same t.
    Warm-up (W = ``warmup_steps``) multiplies by (step + 1) / W during the first W steps. Cosine and
    poly decay only after it, as arcface_torch's PolyScheduler does, so the peak ``base`` is reached
    at step W − 1 and held at W (t = 0); a step schedule's values are only multiplied by the ramp.
    """

    def __init__(self, kind, base_lr=0.1, boundaries=(), values=(), total_steps=1,
                 warmup_steps=0, power=2.0):
        self.kind = kind
        self.base_lr = float(base_lr)
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = int(warmup_steps)
        self.power = float(power)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.kind == "step":
            lr = ops.convert_to_tensor(self.values[0], "float32")
            for boundary, value in zip(self.boundaries[1:], self.values[1:]):
                lr = ops.where(step >= boundary, value, lr)
        else:
            # decay over the steps after the warm-up, so the ramp ends at the peak (arcface_torch)
            decay_steps = max(self.total_steps - self.warmup_steps, 1)
            t = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
            if self.kind == "cosine":
                lr = self.base_lr * 0.5 * (1.0 + ops.cos(math.pi * t))
            else:
                lr = self.base_lr * ops.power(1.0 - t, self.power)
        if self.warmup_steps > 0:
            lr = lr * ops.minimum((step + 1.0) / self.warmup_steps, 1.0)
        return lr

    def get_config(self):
        return {"kind": self.kind, "base_lr": self.base_lr, "boundaries": self.boundaries,
                "values": self.values, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "power": self.power}


# The AM-Softmax reference schedule (CASIA, batch 256): lr x0.1 at 16k, 24k and 28k of 30k steps.
REFERENCE_TOTAL_STEPS = 30000
REFERENCE_DROPS = (16000, 24000, 28000)


def build_lr_schedule(spec, base_lr, total_steps, warmup_steps=0):
    """Parse ``--lr-schedule``: "reference", "cosine", "poly", "constant", or a step list
    "0:0.1,16000:0.01,...".

    "reference" is the AM-Softmax step schedule stretched to ``total_steps``: ``base_lr``, then x0.1 at
    16/30, 24/30 and 28/30 of the run (exactly 16k, 24k, 28k for 30k steps), so a shorter run still
    ends at a low lr instead of stopping in the middle of the first plateau.

    A step list must start at step 0 and have increasing steps. ``base_lr`` (``--lr``) is the
    peak for cosine/poly/constant; a step list carries its own values.
    """
    spec = spec.strip()
    if spec == "reference":
        boundaries = [0] + [round(d * total_steps / REFERENCE_TOTAL_STEPS) for d in REFERENCE_DROPS]
        values = [base_lr / 10 ** k for k in range(4)]
        return FaceLRSchedule("step", boundaries=boundaries, values=values, warmup_steps=warmup_steps)
    if spec in ("cosine", "poly"):
        return FaceLRSchedule(spec, base_lr, total_steps=total_steps, warmup_steps=warmup_steps)
    if spec == "constant":
        return FaceLRSchedule("step", boundaries=[0], values=[base_lr], warmup_steps=warmup_steps)
    boundaries, values = [], []
    for item in spec.split(","):
        try:
            step, value = item.split(":")
            boundaries.append(int(step))
            values.append(float(value))
        except ValueError:
            raise ValueError(f"--lr-schedule item {item!r} is not STEP:LR (e.g. "
                             "'0:0.1,16000:0.01'), nor cosine/poly/constant") from None
    if boundaries[0] != 0 or any(b <= a for a, b in itertools.pairwise(boundaries)):
        raise ValueError(f"--lr-schedule steps must start at 0 and increase: {spec!r}")
    if not all(math.isfinite(v) and v >= 0 for v in values):   # a negative lr climbs the loss; nan poisons it
        raise ValueError(f"--lr-schedule learning rates must be finite and >= 0: {spec!r}")
    return FaceLRSchedule("step", boundaries=boundaries, values=values, warmup_steps=warmup_steps)


def margin_warmup_weight(step, warmup_steps):
    """The margin's weight at optimizer step ``step`` (0-based, a scalar tensor): ``(step + 1) /
    warmup_steps`` during the first ``warmup_steps`` steps, then 1 (float32). Counted like the lr
    warm-up and read from the optimizer's step, so a resumed run continues the same ramp. None when
    ``warmup_steps`` is 0: the head then returns its plain margin logits, without a blend."""
    if warmup_steps <= 0:
        return None
    return ops.minimum((ops.cast(step, "float32") + 1.0) / float(warmup_steps), 1.0)
