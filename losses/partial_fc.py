"""Partial FC (An et al., CVPR 2022, arXiv 2203.15565): a margin head whose softmax runs over the
batch's positive class centres plus sampled negatives, instead of all C centres.

The math is the full head's (``losses.heads.margin_logits``) on K sampled columns; which centres
are sampled and how they are updated is training's business (training/partial_fc.py), since the
centres are updated row by row outside the Keras optimizer. Centres are stored class-major,
[C, D], so a sampled row set is one gather and one scatter.
"""

import math

import keras
from keras import ops

from losses.heads import HEADS, build_head, margin_logits


def partial_fc_num_sample(num_classes, sample_rate, batch_size):
    """Centres per step K = ceil(rate · C), at least the batch (so every positive class fits), at most C."""
    return int(min(num_classes, max(math.ceil(sample_rate * num_classes), batch_size)))


def _unit_rows(x):
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))


@keras.saving.register_keras_serializable(package="faceid")
class PartialFCHead(keras.layers.Layer):
    """Class centres ``kernel`` [C, D] and their SGD ``momentum`` [C, D], both updated by training's
    sparse step (so neither is a trainable variable of the Keras optimizer).

    ``margin`` names a normalised head of ``losses.HEADS``; ``margin_args`` are its options.
    """

    # The full head's N(0, 0.01) start (arcface_torch's), drawn in [C, D] directly: a transposed
    # [D, C] draw would match a seeded full head's centres but hold a second copy of them at start.
    initial_centres = keras.initializers.RandomNormal(stddev=0.01)

    def __init__(self, num_classes, margin, margin_args=None, sample_rate=1.0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.margin = margin
        self.margin_args = dict(margin_args or {})
        self.scale = float(self.margin_args.get("s", 1.0))
        self.sample_rate = float(sample_rate)

    def build(self, embeddings_shape, labels_shape=None):
        dim = embeddings_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(self.num_classes, dim), trainable=False,
                                      initializer=self.initial_centres)
        self.momentum = self.add_weight(name="momentum", shape=(self.num_classes, dim), trainable=False,
                                        initializer="zeros")

    def sampled_scores(self, embeddings, centres):
        """``s·cos θ`` [B, K] against ``centres`` [K, D] (the sampled rows of ``kernel``), no margin."""
        return self.scale * self.sampled_cosine(embeddings, centres)

    def sampled_cosine(self, embeddings, centres):
        """cos θ [B, K] between ``embeddings`` [B, D] and ``centres`` [K, D].

        The centres' norms divide the [B, K] product instead of their [K, D] rows: the same cosine
        with one pass over the sampled centres (and their gradient) instead of several."""
        centres = ops.cast(centres, "float32")
        norms = ops.sqrt(ops.maximum(ops.sum(ops.square(centres), axis=-1), 1e-24))
        return ops.matmul(_unit_rows(embeddings), ops.transpose(centres)) / norms[None, :]

    def sampled_logits(self, embeddings, centres, local_labels, margin_weight=None):
        """Margin logits [B, K]: ``local_labels`` [B] index the rows of ``centres`` [K, D]."""
        return margin_logits(self.margin, self.margin_args, self.sampled_cosine(embeddings, centres),
                             local_labels, margin_weight)

    def class_scores(self, embeddings):
        """``s·cos θ`` over all C centres [B, C] (B·C·D work: not what a training step computes)."""
        return self.sampled_scores(embeddings, self.kernel)

    def call(self, embeddings, labels, margin_weight=None):
        """Margin logits over all C centres [B, C]: what the full head computes (RATE = 1)."""
        return self.sampled_logits(embeddings, self.kernel, labels, margin_weight)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "margin": self.margin,
                "margin_args": self.margin_args, "sample_rate": self.sample_rate}


def build_partial_fc_head(name, num_classes, sample_rate, **options):
    """Partial FC version of head ``name`` (options and their defaults as ``build_head``'s).

    ValueError for a rate outside (0, 1] or a head without normalised class centres (softmax).
    """
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"--partial-fc must be in (0, 1], got {sample_rate}")
    full = build_head(name, num_classes, **options)   # validates the name and the options
    if HEADS[name].margin is None:
        raise ValueError(f"--partial-fc needs a margin head (class centres on the unit sphere); "
                         f"--loss {name} has none: use am_softmax, cosface, arcface, sphereface or combined")
    return PartialFCHead(num_classes, name, full.margin_args, sample_rate, name=f"{name}_partial_fc_head")
