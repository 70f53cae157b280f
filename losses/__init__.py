"""Margin-softmax heads (softmax, AM-Softmax/CosFace, ArcFace, SphereFace, combined, ...) and the loss.

Pure Keras 3 (``keras.ops``), so heads run on the TensorFlow, JAX and PyTorch backends. The head
table (``HEADS``: options, published defaults, valid ranges) lives in ``losses.registry``, which
imports no Keras: ``train.py --help`` builds its flags from it.

The names below load on first use (PEP 562), so ``python -m losses.plot_margins`` and ``train.py``
can answer ``--help`` before Keras is imported.
"""

import importlib

_HOMES = {
    "losses.registry": ["HEADS", "HeadSpec", "Option", "all_option_names", "check_focal_gamma", "check_head_options", "head_options",
                        "list_heads"],
    "losses.heads": ["NormalizedMarginHead", "SoftmaxHead", "SphereFaceHead", "build_head"],
    "losses.loss": ["class_weighted", "drop_negative_classes", "focal_weighted", "margin_softmax_loss"],
    "losses.partial_fc": ["PartialFCHead", "build_partial_fc_head", "partial_fc_num_sample"],
    "losses.margins": ["am_softmax_logits", "arcface_logits", "combined_margin_logits", "sphereface_logits",
                       "sphereface_psi"],
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = list(_HOME_OF)


def __getattr__(name):
    if name not in _HOME_OF:
        raise AttributeError(f"module 'losses' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value   # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
