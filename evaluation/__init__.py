"""Face verification: pair lists, flip-augmented embedding, 10-fold LFW metrics, insightface .bin sets.

One home for what evaluate.py and training's validation callback share. numpy only at import time;
Keras/TensorFlow are imported when a model is loaded (engines.model_file).
"""

from fileio.quiet_tensorflow import quiet_tensorflow_for_api

quiet_tensorflow_for_api()   # before any TensorFlow import below: its C++ start-up lines stay out of the terminal

from evaluation.embed import FLIP_MODES, combine_flips, embed_images, embed_paths, evaluate_pairs, gather_pairs
from evaluation.metrics import (
    ACCURACY_THRESHOLDS,
    VAL_THRESHOLDS,
    NonFiniteEmbeddings,
    auc_standard_error,
    l2_normalize,
    roc_points,
    squared_distances,
    verification_metrics,
)
from evaluation.pairs import PairSet, PairsFormatError, read_pairs

__all__ = [
    "ACCURACY_THRESHOLDS",
    "FLIP_MODES",
    "VAL_THRESHOLDS",
    "NonFiniteEmbeddings",
    "PairSet",
    "PairsFormatError",
    "auc_standard_error",
    "combine_flips",
    "embed_images",
    "embed_paths",
    "evaluate_pairs",
    "gather_pairs",
    "l2_normalize",
    "read_pairs",
    "roc_points",
    "squared_distances",
    "verification_metrics",
]
