"""Classification heads as Keras layers that own the class-centre weights.

``head(embeddings [B, D], labels [B] int) -> logits [B, C] float32``. All logit math runs in
float32 (the layer's dtype is pinned), also when the backbone runs in mixed precision: the
margins subtract small numbers from values scaled by s = 30..64, which float16 cannot resolve.
The class-centre weight is named ``kernel`` so training's weight-decay rule finds it.
"""

import dataclasses
import inspect
from typing import Callable

import keras
from keras import ops

from losses import margins

@keras.saving.register_keras_serializable(package="faceid")
class SoftmaxHead(keras.layers.Layer):
    """Plain softmax baseline: unnormalised ``x·W + b`` (the reference's "softmax" loss)."""

    def __init__(self, num_classes, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)

    def build(self, embeddings_shape, labels_shape=None):
        dim = embeddings_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.num_classes),
            initializer=keras.initializers.GlorotUniform())
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")

    def class_scores(self, embeddings):
        """Logits without any margin [B, C]: what inference and training accuracy use."""
        return ops.matmul(ops.cast(embeddings, "float32"), self.kernel) + self.bias

    def call(self, embeddings, labels=None, margin_weight=None):
        # No margin to weigh: margin_weight is accepted so every head takes the same call.
        return self.class_scores(embeddings)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="faceid")
class NormalizedMarginHead(keras.layers.Layer):
    """cos θ between L2-normalised embeddings and class centres, then a margin on the true class.

    ``margin`` names a head of the registry (am_softmax, cosface, arcface, sphereface, combined);
    ``margin_args`` are its margin function's keyword arguments (s, m, ...).
    """

    def __init__(self, num_classes, margin, margin_args=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if HEADS.get(margin, HeadEntry(None, {})).margin is None:
            valid = sorted(n for n, e in HEADS.items() if e.margin is not None)
            raise ValueError(f"unknown margin {margin!r}; valid: {valid}")
        self.num_classes = int(num_classes)
        self.margin = margin
        self.margin_args = dict(margin_args or {})
        self.scale = float(self.margin_args.get("s", 1.0))

    def build(self, embeddings_shape, labels_shape=None):
        dim = embeddings_shape[-1]
        # arcface_torch initialises class centres with N(0, 0.01); only their direction matters.
        self.kernel = self.add_weight(
            name="kernel", shape=(dim, self.num_classes),
            initializer=keras.initializers.RandomNormal(stddev=0.01))

    def cosine(self, embeddings):
        """cos θ [B, C] between each embedding and each class centre."""
        x = ops.cast(embeddings, "float32")
        x = x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))
        w = self.kernel
        w = w / ops.sqrt(ops.maximum(ops.sum(ops.square(w), axis=0, keepdims=True), 1e-24))
        return ops.matmul(x, w)

    def class_scores(self, embeddings):
        """``s·cos θ`` without the margin [B, C]: what inference and training accuracy use."""
        return self.scale * self.cosine(embeddings)

    def call(self, embeddings, labels, margin_weight=None):
        """Margin logits [B, C]; ``margin_weight`` w (a float32 scalar in [0, 1], default 1) blends
        them with the plain scores, ``s·cos θ + w·(margin logits − s·cos θ)``: only the true class
        changes, and for am_softmax/cosface that is exactly the margin m scaled by w (a margin warm-up)."""
        return margin_logits(self.margin, self.margin_args, self.cosine(embeddings), labels, margin_weight)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "margin": self.margin, "margin_args": self.margin_args}


def margin_logits(margin, margin_args, cos, labels, margin_weight=None):
    """Logits [B, K] of head ``margin`` from cosines ``cos`` [B, K] and class indices ``labels`` [B]
    into those K columns: the full head (K = C) and Partial FC (K sampled centres) share this."""
    one_hot = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), ops.shape(cos)[-1], dtype="float32")
    logits = HEADS[margin].margin(cos, one_hot, **margin_args)
    if margin_weight is None:
        return logits
    plain = float(margin_args.get("s", 1.0)) * cos
    return plain + ops.cast(margin_weight, "float32") * (logits - plain)


@dataclasses.dataclass(frozen=True)
class HeadEntry:
    margin: Callable | None   # losses.margins function (cos, one_hot, **options) -> logits; None: plain softmax
    defaults: dict            # the published values of its options


# One entry per head: its margin function and the published defaults of that function's options.
# AM-Softmax paper (s=30, m=0.35); CosFace/ArcFace as in insightface (s=64); SphereFace m=4;
# insightface's combined-margin example (1.0, 0.3, 0.2).
HEADS = {
    "softmax": HeadEntry(None, {}),
    "am_softmax": HeadEntry(margins.am_softmax_logits, {"s": 30.0, "m": 0.35}),
    "cosface": HeadEntry(margins.am_softmax_logits, {"s": 64.0, "m": 0.35}),
    "arcface": HeadEntry(margins.arcface_logits, {"s": 64.0, "m": 0.5, "easy_margin": False}),
    "sphereface": HeadEntry(margins.sphereface_logits, {"s": 30.0, "m": 4, "sphereface_lambda": 0.0}),
    "combined": HeadEntry(margins.combined_margin_logits, {"s": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}),
}


def list_heads():
    """Names accepted by ``build_head``."""
    return sorted(HEADS)


def head_options(name):
    """The option names head ``name`` takes (its margin function's keyword arguments)."""
    entry = HEADS[name]
    if entry.margin is None:
        return []
    return [p for p in inspect.signature(entry.margin).parameters if p not in ("cos", "one_hot")]


def build_head(name, num_classes, **options):
    """Build head ``name``: (embeddings [B, D], labels [B]) -> float32 logits [B, C].

    ``options`` are its margin function's keyword arguments (s, m, ...; see ``head_options``);
    an option given as None, or not given, takes the published default (``HEADS``). Names: softmax,
    am_softmax, cosface (the am_softmax formula at insightface's s=64), arcface, sphereface, combined.
    Raises ValueError for an unknown name or an option the head does not take.
    """
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid: {', '.join(list_heads())}")
    given = {k: v for k, v in options.items() if v is not None}
    accepted = head_options(name)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ValueError(f"head {name!r} takes {accepted or 'no options'}, not {unknown}")
    if HEADS[name].margin is None:
        return SoftmaxHead(num_classes, name="softmax_head")
    return NormalizedMarginHead(num_classes, name, {**HEADS[name].defaults, **given}, name=f"{name}_head")
