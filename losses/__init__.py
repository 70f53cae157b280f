"""Margin-softmax heads (softmax, AM-Softmax/CosFace, ArcFace, SphereFace, combined) and the loss.

Pure Keras 3 (``keras.ops``), so heads run on the TensorFlow, JAX and PyTorch backends.
"""

from losses.heads import HEADS, HeadEntry, NormalizedMarginHead, SoftmaxHead, build_head, head_options, list_heads
from losses.loss import margin_softmax_loss
from losses.margins import (am_softmax_logits, arcface_logits, combined_margin_logits,
                            sphereface_logits, sphereface_psi)

__all__ = [
    "HEADS", "HeadEntry", "NormalizedMarginHead", "SoftmaxHead", "build_head", "head_options", "list_heads",
    "margin_softmax_loss", "am_softmax_logits", "arcface_logits", "combined_margin_logits",
    "sphereface_logits", "sphereface_psi",
]
