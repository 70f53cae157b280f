"""Classification heads as Keras layers that own the class-centre weights.

``head(embeddings [B, D], labels [B] int) -> logits [B, C] float32``. All logit math runs in
float32 (the layer's dtype is pinned), also when the backbone runs in mixed precision: the
margins subtract small numbers from values scaled by s = 30..64, which float16 cannot resolve.
The class-centre weight is named ``kernel`` so training's weight-decay rule finds it.
"""

import keras
from keras import ops

from losses import margins

# Published defaults: AM-Softmax paper (s=30, m=0.35); CosFace/ArcFace as in insightface
# (s=64); SphereFace m=4; insightface's combined-margin example (1.0, 0.3, 0.2).
HEAD_DEFAULTS = {
    "softmax": {},
    "am_softmax": {"s": 30.0, "m": 0.35},
    "cosface": {"s": 64.0, "m": 0.35},
    "arcface": {"s": 64.0, "m": 0.5},
    "sphereface": {"s": 30.0, "m": 4},
    "combined": {"s": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2},
}


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

    def call(self, embeddings, labels=None):
        return self.class_scores(embeddings)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="faceid")
class NormalizedMarginHead(keras.layers.Layer):
    """cos θ between L2-normalised embeddings and class centres, then a margin on the true class.

    ``margin`` names one of the functions in ``losses.margins`` (am_softmax, arcface,
    sphereface, combined); ``margin_args`` are its keyword arguments (s, m, ...).
    """

    _MARGIN_FNS = {
        "am_softmax": margins.am_softmax_logits,
        "arcface": margins.arcface_logits,
        "sphereface": margins.sphereface_logits,
        "combined": margins.combined_margin_logits,
    }

    def __init__(self, num_classes, margin, margin_args=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if margin not in self._MARGIN_FNS:
            raise ValueError(f"unknown margin {margin!r}; valid: {sorted(self._MARGIN_FNS)}")
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

    def call(self, embeddings, labels):
        cos = self.cosine(embeddings)
        one_hot = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), self.num_classes,
                              dtype="float32")
        return self._MARGIN_FNS[self.margin](cos, one_hot, **self.margin_args)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "margin": self.margin, "margin_args": self.margin_args}


def list_heads():
    """Names accepted by ``build_head``."""
    return sorted(HEAD_DEFAULTS)


def build_head(name, num_classes, s=None, m=None, m1=None, m2=None, m3=None,
               easy_margin=False, sphereface_lambda=0.0):
    """Build a head by name; arguments left as None take the published default for that head.

    Names: softmax, am_softmax, cosface (the same formula as am_softmax, insightface's s=64),
    arcface, sphereface, combined. ``m`` is the margin of am_softmax/cosface/arcface/sphereface;
    ``m1, m2, m3`` are the combined margin's.
    """
    if name not in HEAD_DEFAULTS:
        raise ValueError(f"unknown head {name!r}; valid: {', '.join(list_heads())}")
    if name == "softmax":
        return SoftmaxHead(num_classes, name="softmax_head")
    given = {"s": s, "m": m, "m1": m1, "m2": m2, "m3": m3}
    unused = [k for k, v in given.items() if v is not None and k not in HEAD_DEFAULTS[name]]
    if unused:
        raise ValueError(f"head {name!r} takes {sorted(HEAD_DEFAULTS[name])}, not {unused}")
    args = {k: (given[k] if given[k] is not None else v) for k, v in HEAD_DEFAULTS[name].items()}
    if name == "arcface":
        args["easy_margin"] = bool(easy_margin)
    if name == "sphereface":
        args["lambda_"] = float(sphereface_lambda)
    margin = "am_softmax" if name == "cosface" else name
    return NormalizedMarginHead(num_classes, margin, args, name=f"{name}_head")
