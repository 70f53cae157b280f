"""The ``litert``, ``litert-fp16``, ``litert-int8`` and ``litert-int8-mixed`` engines: a LiteRT (TFLite)
export under the LiteRT interpreter (the ``ai-edge-litert`` package, what phones run; tf.lite.Interpreter
where it is missing).

``litert`` is the float32 conversion, ``litert-fp16`` stores float16 weights (the interpreter computes
in float32 on a CPU), ``litert-int8`` is full-integer post-training quantisation (int8 weights and
activations; float32 input and output, quantised and dequantised inside), ``litert-int8-mixed`` the same
with the PReLUs left in float32 (engines.litert_export says why). All take RGB 0..255
[B, H, W, 3] (the scaling is inside) and return the raw embedding [B, D]. Which one a file is, and the
fingerprint of the Keras model it came from, are in its metadata (engines.litert_export).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engines.base import (
    FINGERPRINT_KEY,
    FORMAT_KEY,
    SOURCE_SHA256_KEY,
    EmbeddingModel,
    check_image_input,
    eval_dir_of,
    formats_with_extension,
)

LITERT_FORMATS = formats_with_extension(".tflite")
METADATA_NAME = "faceid"  # the TFLite metadata entry holding a JSON object of engines.base's *_KEY fields
# Images per interpreter call; the interpreter is resized only when a call's batch differs.
LITERT_MICRO_BATCH = 16


def interpreter_class():
    """(Interpreter class, where it came from): ai_edge_litert's, else TensorFlow's tf.lite.Interpreter."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite"


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


def read_metadata(model_bytes) -> dict:
    """The METADATA_NAME entry of a .tflite flatbuffer as a dict ({} when absent or unreadable)."""
    try:
        schema = _schema()
        model = schema.Model.GetRootAsModel(bytearray(model_bytes), 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() and entry.Name().decode() == METADATA_NAME:
                return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode())
    except Exception:  # a foreign or damaged file: the interpreter's own check names it
        return {}
    return {}


def load_litert_file(path, threads=None, engine=None) -> EmbeddingModel:
    """An EmbeddingModel for a .tflite export. engine: the engine asked for (None: whatever the file is);
    a file of another kind is a ValueError naming it. threads: the interpreter's threads (default 1 per core)."""
    import os

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LiteRT model not found: {path}")
    data = path.read_bytes()
    interpreter_type, _ = interpreter_class()
    try:
        interpreter = interpreter_type(model_content=data, num_threads=int(threads or os.cpu_count() or 1))
        interpreter.allocate_tensors()
    except Exception as error:  # ValueError "model identifier ... should be TFL3" and the like
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load LiteRT model {path} ({first_line}); export it again with "
                         "python export.py --format litert --model RUN") from None
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{path}: expected one image input and one embedding output; got {len(inputs)} and "
                         f"{len(outputs)}")
    shape = [int(v) for v in inputs[0]["shape_signature"]]
    image_size = check_image_input(path, shape, [(i["name"], shape) for i in inputs])
    if inputs[0]["dtype"] != np.float32 or outputs[0]["dtype"] != np.float32:
        raise ValueError(f"{path}: expected float32 input and output (RGB 0..255 in, embedding out); got "
                         f"{np.dtype(inputs[0]['dtype']).name} and {np.dtype(outputs[0]['dtype']).name}")
    metadata = read_metadata(data)
    kind = metadata.get(FORMAT_KEY) or _kind_of(interpreter)
    if engine is not None and engine != kind:
        raise ValueError(f"{path} is a {kind} export, not {engine}: pass --engine {kind} (or the {engine} file)")
    fingerprint = metadata.get(FINGERPRINT_KEY)
    if fingerprint is None:
        from fileio import sha256_of_file

        fingerprint = "sha256-file:" + sha256_of_file(path)
    input_index, output_index = inputs[0]["index"], outputs[0]["index"]
    batch = [int(inputs[0]["shape"][0])]

    def run(images):
        images = np.ascontiguousarray(images, np.float32)
        if len(images) != batch[0]:   # resizing re-plans the graph: only when the batch changes
            interpreter.resize_tensor_input(input_index, [len(images), *image_size, 3], strict=True)
            interpreter.allocate_tensors()
            batch[0] = len(images)
        interpreter.set_tensor(input_index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).copy()

    def embed(images):
        images = np.asarray(images)
        size = LITERT_MICRO_BATCH
        if len(images) <= size:
            return run(images)
        return np.concatenate([run(images[start:start + size]) for start in range(0, len(images), size)])

    return EmbeddingModel(path=path, engine=kind, image_size=image_size, fingerprint=fingerprint, embed_fn=embed,
                          eval_dir=eval_dir_of(path), source_sha256=metadata.get(SOURCE_SHA256_KEY))


def _kind_of(interpreter) -> str:
    """A foreign .tflite without our metadata: int8 when it holds int8 tensors (mixed when it dequantises
    more than its output), fp16 when float16 ones."""
    types = {np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
    if np.dtype(np.int8) in types:
        dequantise = sum(op["op_name"] == "DEQUANTIZE" for op in interpreter._get_ops_details())
        return "litert-int8-mixed" if dequantise > 1 else "litert-int8"
    return "litert-fp16" if np.dtype(np.float16) in types else "litert"


def _engine_loader(engine):
    def load(source, threads=None) -> EmbeddingModel:
        return load_litert_file(source, threads, engine)

    load.__doc__ = f"The {engine} engine: a .tflite file -> EmbeddingModel."
    return load


load_litert = _engine_loader("litert")
load_litert_fp16 = _engine_loader("litert-fp16")
load_litert_int8 = _engine_loader("litert-int8")
load_litert_int8_mixed = _engine_loader("litert-int8-mixed")
