"""ENGINES: engine name -> loader. Every loader is ``load(source, threads=None) -> EmbeddingModel``
(engines.base), source being the file it runs (keras and fast also take a loaded Keras model).
A new engine is one file here with its loader, and one line below."""

from engines.base import EXPORT_FORMATS
from engines.keras_engine import load_fast, load_keras
from engines.litert_engine import load_litert, load_litert_fp16, load_litert_int8, load_litert_int8_mixed
from engines.onnx_engine import load_onnx, load_onnx_int8

ENGINES = {
    "fast": load_fast,               # TensorFlow, batch norm folded (engines.fast_graph)
    "keras": load_keras,             # TensorFlow, the model's own graph
    "onnx": load_onnx,               # ONNX Runtime, float32 export
    "onnx-int8": load_onnx_int8,     # ONNX Runtime, QDQ int8 export
    "litert": load_litert,           # LiteRT interpreter, float32 export
    "litert-fp16": load_litert_fp16, # LiteRT interpreter, float16 weights
    "litert-int8": load_litert_int8, # LiteRT interpreter, full-integer int8
    "litert-int8-mixed": load_litert_int8_mixed,  # LiteRT interpreter, int8 with float32 PReLU
}
ENGINE_NAMES = tuple(ENGINES)
# The engines that run the float32 model's own function (their embeddings agree to 1e-4, tests/test_engines.py):
# an evaluation made with one of them holds for all. litert-fp16 and the int8 engines compute another function.
FLOAT32_ENGINES = ("fast", "keras", "onnx", "litert")
# The engine each export format runs with (the same names).
EXPORT_ENGINES = EXPORT_FORMATS
