"""Engines: a loaded embedding model and what runs it, for evaluation/ and inference/ alike.

    from engines import load_model
    model = load_model("runs/RUN", engine="litert-int8")   # -> EmbeddingModel
    raw = model.embed_fn(crops_uint8)                      # [B, H, W, 3] RGB 0..255 -> float32 [B, D]

- ``base``: EmbeddingModel (the one interface every engine hands out), the export formats and
  their file names, the metadata keys exports carry.
- ``registry``: ENGINES, engine name -> loader; ``loading.load_model`` picks file and engine.
- One file per engine: ``keras_engine`` (keras, fast), ``fast_graph`` (the fast engine's folded
  graph), ``onnx_engine`` (onnx, onnx-int8), ``litert_engine`` (litert, litert-fp16, litert-int8,
  litert-int8-mixed).
- ``model_file``: finding and loading the .keras file, its fingerprint.
- Exports: ``export`` (every format, one function), ``onnx_export``, ``litert_export``, and
  ``calibration`` (the aligned faces int8 quantisation is calibrated on).

Layering: engines imports fileio, align (reading images) and models' Keras layers only, never
evaluation/ or inference/ (both import it). numpy only at import time.
"""

from engines.base import EXPORT_FORMATS, EmbeddingModel, export_path_for
from engines.loading import load_model
from engines.registry import ENGINE_NAMES, ENGINES

__all__ = ["ENGINES", "ENGINE_NAMES", "EXPORT_FORMATS", "EmbeddingModel", "export_path_for", "load_model"]
