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

from losses.heads import build_head, l2_normalize_with_norm
from losses.registry import check_head_options, check_partial_fc


def partial_fc_num_sample(num_classes, sample_rate, batch_size):
    """Centres per step K = ceil(rate · C), at least the batch (so every positive class fits), at most C."""
    return int(min(num_classes, max(math.ceil(sample_rate * num_classes), batch_size)))


@keras.saving.register_keras_serializable(package="faceid")
class PartialFCHead(keras.layers.Layer):
    """Class centres ``kernel`` [C, D] and their SGD ``momentum`` [C, D], both updated by training's
    sparse step (so neither is a trainable variable of the Keras optimizer).

    ``margin`` names a head of ``losses.registry.HEADS`` without state and with one centre per class;
    its logits come from that head's own ``blended_logits`` on the K sampled columns.
    """

    @staticmethod
    def initial_centres(shape, dtype="float32"):
        """The full head's N(0, 0.01) start (arcface_torch's), drawn in [C, D] directly (a transposed
        [D, C] draw would match a seeded full head's centres but hold a second copy of them at start),
        or one shard's rows of it. Drawn from Keras' global seed generator, which
        keras.utils.set_random_seed resets: a keras.initializers.RandomNormal made at import would
        take a Python random number then, and so shift the first run's backbone initialisation in a
        process against every later run's."""
        return keras.random.normal(shape, stddev=0.01, dtype=dtype)

    def __init__(self, num_classes, margin, margin_args=None, sample_rate=1.0, holds_centres=True, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        # False: the centres live elsewhere, one shard per replica (training/partial_fc_sharded.py),
        # and this layer only supplies the margin math; building it then creates no variable.
        self.holds_centres = bool(holds_centres)
        self.margin = margin
        self.sample_rate = float(sample_rate)
        # The registry's head supplies the margin math; it is never built (no [D, C] kernel) and is
        # kept outside Keras' tracking, since it holds no variable of this layer.
        object.__setattr__(self, "_margin_head", build_head(margin, num_classes, **(margin_args or {})))
        self.margin_args = dict(self._margin_head.margin_args)
        self.scale = float(self.margin_args.get("s", 1.0))

    def build(self, embeddings_shape, labels_shape=None):
        if not self.holds_centres:
            return
        dim = embeddings_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(self.num_classes, dim), trainable=False,
                                      initializer=self.initial_centres)
        self.momentum = self.add_weight(name="momentum", shape=(self.num_classes, dim), trainable=False,
                                        initializer="zeros")

    def sampled_cosine_and_norm(self, embeddings, centres):
        """(cos θ [B, K] between ``embeddings`` [B, D] and ``centres`` [K, D], the embeddings' norms [B, 1]).

        The centres' norms divide the [B, K] product instead of their [K, D] rows: the same cosine
        with one pass over the sampled centres (and their gradient) instead of several."""
        x, norm = l2_normalize_with_norm(ops.cast(embeddings, "float32"))
        centres = ops.cast(centres, "float32")
        centre_norms = ops.sqrt(ops.maximum(ops.sum(ops.square(centres), axis=-1), 1e-24))
        return ops.matmul(x, ops.transpose(centres)) / centre_norms[None, :], norm

    def sampled_scores(self, embeddings, centres):
        """``s·cos θ`` [B, K] against ``centres`` [K, D] (the sampled rows of ``kernel``), no margin."""
        return self.scale * self.sampled_cosine_and_norm(embeddings, centres)[0]

    def sampled_logits(self, embeddings, centres, local_labels, margin_weight=None):
        """Margin logits [B, K]: ``local_labels`` [B] index the rows of ``centres`` [K, D]."""
        cos, norm = self.sampled_cosine_and_norm(embeddings, centres)
        return self._margin_head.blended_logits(cos, norm, local_labels, margin_weight)

    def auxiliary_loss(self, embeddings):
        """The head's own extra loss term (MagFace's regulariser; 0 for most heads)."""
        return self._margin_head.auxiliary_loss(embeddings)

    def class_scores(self, embeddings):
        """``s·cos θ`` over all C centres [B, C] (B·C·D work: not what a training step computes)."""
        return self.sampled_scores(embeddings, self.kernel)

    def call(self, embeddings, labels, margin_weight=None):
        """Margin logits over all C centres [B, C]: what the full head computes (RATE = 1)."""
        return self.sampled_logits(embeddings, self.kernel, labels, margin_weight)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "margin": self.margin,
                "margin_args": self.margin_args, "sample_rate": self.sample_rate,
                "holds_centres": self.holds_centres}


def build_partial_fc_head(name, num_classes, sample_rate, holds_centres=True, **options):
    """Partial FC version of head ``name`` (options and their defaults as ``build_head``'s);
    ``holds_centres=False``: a head whose centres are sharded elsewhere (no variables of its own).

    ValueError for a rate outside (0, 1] or a head it cannot sample (softmax, heads with state,
    sub-centres).
    """
    check_head_options(name, options)   # an unknown name or option: the registry's one-line error
    check_partial_fc(name, sample_rate)
    return PartialFCHead(num_classes, name, options, sample_rate, holds_centres, name=f"{name}_partial_fc_head")
