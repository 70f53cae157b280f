"""LiteRT (TFLite) exports of the embedding model: float32, float16 weights, int8 (full or mixed).

TensorFlow's converter (tf.lite.TFLiteConverter.from_saved_model) on a SavedModel of the float32 twin
of the model (engines.onnx_export.float32_twin: a mixed-precision model's layers rebuilt in float32
around the same weights), so every format starts from what the Keras model computes in float32:

- ``litert``: float32 throughout;
- ``litert-fp16``: weights stored as float16 (half the file), dequantised once when loaded; the CPU
  interpreter computes in float32;
- ``litert-int8``: full-integer post-training quantisation: int8 weights (per channel) and int8
  activations whose ranges come from a calibration set of aligned faces (engines.calibration); only
  int8 builtin ops (TFLITE_BUILTINS_INT8), the input quantised and the output dequantised inside the
  graph, so the file still takes float32 RGB 0..255 [B, H, W, 3] (the scaling inside) and returns the
  raw float32 embedding [B, D] like every other export;
- ``litert-int8-mixed``: the same quantisation with the ops XNNPACK (LiteRT's CPU engine, on x86 and
  ARM) runs only in float32 left in float32 (FLOAT_OPS: PReLU), each with a dequantise before and a
  quantise after it, which XNNPACK also runs. In ``litert-int8`` those ops fall back to LiteRT's
  reference int8 kernels and split the graph into one XNNPACK partition per PReLU
  (benchmarks/litert_delegation.py); here the whole graph stays in XNNPACK. Made with TensorFlow's
  selective quantisation (tf.lite.experimental.QuantizationDebugger, denylisted_ops). For an int8-only
  accelerator (Edge TPU, NPUs) use ``litert-int8``.

The file carries a metadata entry ``faceid`` (JSON: format, the Keras model's fingerprint, the .keras
file and its sha256), read back by engines.litert_engine.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from engines.base import FINGERPRINT_KEY, FORMAT_KEY, INT8_FORMATS, SOURCE_KEY, SOURCE_SHA256_KEY
from engines.litert_engine import LITERT_FORMATS, METADATA_NAME
from fileio import sha256_of_file, write_bytes_atomic

# The ops litert-int8-mixed keeps in float32: XNNPACK has no int8 kernel for them.
FLOAT_OPS = ("PRELU",)


def convert_litert(model, export_format="litert", calibration=None) -> bytes:
    """The .tflite bytes of a Keras embedding model. calibration: uint8 [N, H, W, 3] aligned faces (the int8
    formats)."""
    import tensorflow as tf

    from engines.onnx_export import float32_twin

    if export_format not in LITERT_FORMATS:
        raise ValueError(f"not a LiteRT format: {export_format!r} (known: {', '.join(LITERT_FORMATS)})")
    if export_format in INT8_FORMATS and (calibration is None or not len(calibration)):
        raise ValueError(f"{export_format} needs calibration faces (--calibration-shards or --calibration-dir)")
    twin = float32_twin(model)
    twin(np.zeros((1, *twin.input_shape[1:]), np.float32))  # Keras exports only a model that has been called
    with tempfile.TemporaryDirectory(prefix="faceid-litert-") as tmp:
        twin.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if export_format == "litert-fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif export_format in INT8_FORMATS:
            faces = np.asarray(calibration, np.float32)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([faces[i:i + 1]] for i in range(len(faces)))
        if export_format == "litert-int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        try:
            if export_format == "litert-int8-mixed":
                options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS))
                with warnings.catch_warnings():   # the debugger's own tf.lite.Interpreter warns that it is deprecated
                    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
                    debugger = tf.lite.experimental.QuantizationDebugger(
                        converter=converter, debug_dataset=converter.representative_dataset, debug_options=options)
                return bytes(debugger.get_nondebug_quantized_model())
            return bytes(converter.convert())
        except Exception as error:  # the converter's errors are long MLIR dumps: the first line says what
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"the TFLite converter failed for {export_format} ({first})") from None


def _flatbuffer_utils():
    try:
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError:
        from tensorflow.lite.tools import flatbuffer_utils
    return flatbuffer_utils


def with_metadata(model_bytes, fields: dict) -> bytes:
    """The .tflite bytes with a METADATA_NAME entry holding ``fields`` as JSON."""
    utils = _flatbuffer_utils()
    schema = utils.schema_fb
    model = utils.convert_bytearray_to_object(bytearray(model_bytes))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(fields).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    return bytes(utils.convert_object_to_bytearray(model))


def export_litert(model, path, export_format="litert", calibration=None, fingerprint=None, source=None) -> Path:
    """Write ``model`` to ``path`` as ``export_format`` (atomically); returns the path."""
    from engines.model_file import model_fingerprint

    fields = {FORMAT_KEY: export_format, FINGERPRINT_KEY: fingerprint or model_fingerprint(model),
              SOURCE_KEY: str(source or model.name)}
    if source is not None and Path(source).is_file():
        fields[SOURCE_SHA256_KEY] = sha256_of_file(source)
    if calibration is not None and export_format in INT8_FORMATS:
        fields["faceid_calibration_images"] = len(calibration)
    write_bytes_atomic(path, with_metadata(convert_litert(model, export_format, calibration), fields))
    return Path(path)
