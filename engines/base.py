"""What every engine hands out: an EmbeddingModel, and the export formats' names and files.

Every engine has one contract: ``embed_fn(images)`` takes aligned RGB crops [B, H, W, 3] with values
0..255 (uint8, or float32 holding those values) and returns float32 [B, D] raw embeddings; the model
scales its input itself. The flip-concatenated, L2-normalised features are made from these outputs
by one function for every engine (evaluation.embed.embed_images), so raw outputs (not features) are
the engines' common ground: evaluation's other flip modes (sum, concat_raw) and the face-quality
score (the raw embedding's norm) need them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Export formats: name -> what follows the model's stem (RUN/export/best.keras -> RUN/export/best.int8.tflite).
EXPORT_SUFFIXES = {
    "onnx": ".onnx",
    "onnx-int8": ".int8.onnx",
    "litert": ".tflite",
    "litert-fp16": ".fp16.tflite",
    "litert-int8": ".int8.tflite",
    "litert-int8-mixed": ".int8-mixed.tflite",
}
EXPORT_FORMATS = tuple(EXPORT_SUFFIXES)


def formats_with_extension(extension) -> tuple:
    """The export formats whose files end in ``extension`` (".onnx", ".tflite")."""
    return tuple(f for f, suffix in EXPORT_SUFFIXES.items() if suffix.endswith(extension))


INT8_FORMATS = ("onnx-int8", "litert-int8", "litert-int8-mixed")  # these need a calibration set of aligned faces
# Metadata every export carries (ONNX metadata_props, TFLite model metadata): what the file is and whose.
FINGERPRINT_KEY = "faceid_model_fingerprint"
SOURCE_KEY = "faceid_source_model"
SOURCE_SHA256_KEY = "faceid_source_sha256"  # sha256 of the .keras file it was exported from
FORMAT_KEY = "faceid_format"                # one of EXPORT_FORMATS


@dataclass
class EmbeddingModel:
    """A loaded embedding model.

    path: the .keras, .onnx or .tflite file; engine: a name of engines.ENGINES; image_size: (H, W) of
    the aligned crops it takes; fingerprint: "sha256:..." of the Keras model's weights (the same for
    every export of it); embed_fn: [B, H, W, 3] RGB 0..255 -> float32 [B, D] raw embeddings; eval_dir:
    where evaluate.py writes this model's reports (RUN/eval); keras_model: the Keras model (None for
    an export); source_sha256: for an export, sha256 of the .keras file it was made from.
    """

    path: Path
    engine: str
    image_size: tuple
    fingerprint: str
    embed_fn: Callable
    eval_dir: Path
    keras_model: object = None
    source_sha256: str | None = None

    def describe(self) -> str:
        from engines.starter import is_starter

        starter = "the starter model (trained on LFW DevTrain people; docs/using-a-model.md) " if is_starter(
            self.path) else ""
        return f"{starter}{self.path} ({self.engine} engine)"


def export_path_for(keras_path, export_format) -> Path:
    """The file of ``export_format`` beside a .keras export: RUN/export/best.keras -> RUN/export/best.onnx,
    best.int8.onnx, best.tflite, best.fp16.tflite, best.int8.tflite, best.int8-mixed.tflite."""
    if export_format not in EXPORT_SUFFIXES:
        raise ValueError(f"unknown export format {export_format!r}; known: {', '.join(EXPORT_FORMATS)}")
    keras_path = Path(keras_path)
    return keras_path.with_name(keras_path.stem + EXPORT_SUFFIXES[export_format])


def format_of_file(path) -> str | None:
    """The export format a file name says (best.int8.tflite -> litert-int8), None for anything else."""
    name = Path(path).name
    for export_format, suffix in sorted(EXPORT_SUFFIXES.items(), key=lambda item: -len(item[1])):
        if name.endswith(suffix):
            return export_format
    return None


def micro_batched(embed_fn, size):
    """embed_fn run on consecutive slices of at most ``size`` images; the outputs concatenated in order."""

    def embed(images):
        if len(images) <= size:
            return embed_fn(images)
        return np.concatenate([embed_fn(images[start:start + size]) for start in range(0, len(images), size)])

    return embed


def eval_dir_of(path) -> Path:
    from engines.model_file import run_dir_of

    return run_dir_of(path) / "eval"


def check_image_input(path, shape, inputs_described):
    """(H, W) of a [B, H, W, 3] input with fixed H, W; else ValueError naming the file."""
    if shape is None or len(shape) != 4 or shape[3] != 3 or not all(isinstance(v, (int, np.integer)) and v > 0
                                                                    for v in shape[1:3]):
        raise ValueError(f"{path}: expected one image input [B, H, W, 3] with fixed H, W; got {inputs_described}")
    return int(shape[1]), int(shape[2])
