"""Partial FC (An et al., CVPR 2022, arXiv 2203.15565): a margin head whose softmax runs over the
batch's positive class centres plus sampled negatives, instead of all C centres.

The math is the full head's (``losses.heads.margin_logits``) on K sampled columns; which centres
are sampled and how they are updated is training's business (training/partial_fc.py), since the
centres are updated row by row outside the Keras optimizer. Centres are stored class-major,
[C, D], so a sampled row set is one gather and one scatter.
"""

import math
import random

import keras
from keras import ops

from losses.heads import build_head, l2_normalize_with_norm
from losses.registry import check_head_options, check_partial_fc

CENTRE_BLOCK_ROWS = 1 << 16   # rows of one seeded draw of the initial centres


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

    def __init__(self, num_classes, margin, margin_args=None, sample_rate=1.0, holds_centres=True,
                 draw_centres=True, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        # False: the centres live elsewhere, one shard per replica (training/partial_fc_sharded.py),
        # and this layer only supplies the margin math; building it then creates no variable.
        self.holds_centres = bool(holds_centres)
        # False: build() leaves the centres at zero, for the caller to write initial_centre_rows
        # into them in place (training.partial_fc.fill_initial_centres: no [C, D] temporary).
        self.draw_centres = bool(draw_centres)
        self.margin = margin
        self.sample_rate = float(sample_rate)
        # The registry's head supplies the margin math; it is never built (no [D, C] kernel) and is
        # kept outside Keras' tracking, since it holds no variable of this layer.
        object.__setattr__(self, "_margin_head", build_head(margin, num_classes, **(margin_args or {})))
        self.margin_args = dict(self._margin_head.margin_args)
        self.scale = float(self.margin_args.get("s", 1.0))
        # The initial centres are a function of this seed and of C alone, so one device and every
        # sharding of them start from the same rows. Drawn as a Keras initializer made here would
        # draw its seed (Python's random, which keras.utils.set_random_seed seeds), and whether or
        # not this layer holds the centres, so that what is drawn after it does not depend on that.
        self.centre_seed = random.randint(1, 10 ** 9)

    @property
    def centre_block_rows(self):
        """Rows R of one seeded draw of the initial centres: min(CENTRE_BLOCK_ROWS, C)."""
        return min(CENTRE_BLOCK_ROWS, self.num_classes)

    def centre_block(self, block, dim):
        """Rows [block·R, (block + 1)·R) of the initial centres [C, dim], N(0, 0.01) (arcface_torch's
        start), float32 [R, dim]; drawn from (centre_seed, block) alone (the last block's rows past
        C are never used)."""
        seed = (self.centre_seed + block * 0x9E3779B1) & 0xFFFFFFFF   # a distinct 32-bit seed per block
        return keras.random.normal((self.centre_block_rows, dim), stddev=0.01, seed=seed)

    def initial_centre_pieces(self, start, size, dim):
        """Rows [start, start + size) of the initial centres [C, dim], block by block: yields
        (first row, relative to ``start``; its rows [n, dim]) for each block the range spans."""
        rows = self.centre_block_rows
        for block in range(start // rows, (start + size - 1) // rows + 1):
            low, high = max(start, block * rows), min(start + size, (block + 1) * rows)
            yield low - start, self.centre_block(block, dim)[low - block * rows:high - block * rows]

    def initial_centre_rows(self, start, size, dim):
        """Rows [start, start + size) of the initial centres [C, dim] as one tensor [size, dim]."""
        return ops.concatenate([piece for _, piece in self.initial_centre_pieces(start, size, dim)], axis=0)

    def build(self, embeddings_shape, labels_shape=None):
        if not self.holds_centres:
            return
        dim = embeddings_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(self.num_classes, dim), trainable=False,
            initializer=(lambda shape, dtype=None: self.initial_centre_rows(0, shape[0], shape[1]))
            if self.draw_centres else "zeros")
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


def build_partial_fc_head(name, num_classes, sample_rate, holds_centres=True, draw_centres=True, **options):
    """Partial FC version of head ``name`` (options and their defaults as ``build_head``'s);
    ``holds_centres=False``: a head whose centres are sharded elsewhere (no variables of its own);
    ``draw_centres=False``: centres built at zero, for the caller to fill (see ``PartialFCHead``).

    ValueError for a rate outside (0, 1] or a head it cannot sample (softmax, heads with state,
    sub-centres).
    """
    check_head_options(name, options)   # an unknown name or option: the registry's one-line error
    check_partial_fc(name, sample_rate)
    return PartialFCHead(num_classes, name, options, sample_rate, holds_centres, draw_centres,
                         name=f"{name}_partial_fc_head")
