"""The ``keras`` and ``fast`` engines: a loaded Keras model run by TensorFlow.

``keras`` runs the model's own graph in one tf.function; ``fast`` its inference graph with batch
norm folded into the convolutions (engines.fast_graph: the same function up to float rounding, about
2× faster on a CPU). ``default_engine`` picks ``fast`` where it computes what the model computes
(float32 layers) and ``keras`` for a model whose layers compute in float16/bfloat16 (the fast graph
runs those in float32).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.base import EmbeddingModel, eval_dir_of

KERAS_ENGINES = ("fast", "keras")


def default_engine(model) -> str:
    """"fast" when every layer computes in float32 (the fast graph is then the same function), else "keras"."""
    from engines.fast_graph import computes_in_float32

    return "fast" if computes_in_float32(model) else "keras"


def make_embed_fn(model, engine="keras"):
    """[B, H, W, 3] RGB 0..255 numpy -> float32 [B, D] numpy, compiled once (one trace for any batch size on TF).

    engine: "keras" (the model's graph) or "fast" (batch norm folded, engines.fast_graph; TensorFlow only).
    """
    import keras

    if engine not in KERAS_ENGINES:
        raise ValueError(f"engine must be one of {KERAS_ENGINES}, got {engine!r}")
    if engine == "fast":
        from engines.fast_graph import make_fast_embed_fn

        return make_fast_embed_fn(model)[0]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        shape = (None,) + tuple(model.input_shape[1:])
        forward = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32)])
        return lambda x: forward(tf.convert_to_tensor(np.asarray(x, np.float32))).numpy()
    return lambda x: np.asarray(model.predict_on_batch(np.asarray(x, np.float32)))


def from_keras_model(keras_model, path=None, engine="auto") -> EmbeddingModel:
    """An EmbeddingModel around a loaded Keras model (path: the file it came from, for reports and messages).
    engine: "keras", "fast" or "auto" (default_engine)."""
    from engines.model_file import model_fingerprint

    shape = tuple(keras_model.input_shape)
    engine = default_engine(keras_model) if engine == "auto" else engine
    if engine not in KERAS_ENGINES:
        raise ValueError(f"the {engine} engine runs an exported file (python export.py --format {engine} --model "
                         "RUN), not a Keras model")
    return EmbeddingModel(path=Path(path) if path else Path("<in memory>"), engine=engine,
                          image_size=(int(shape[1]), int(shape[2])), fingerprint=model_fingerprint(keras_model),
                          embed_fn=make_embed_fn(keras_model, engine),
                          eval_dir=eval_dir_of(path) if path else Path("eval"), keras_model=keras_model)


def _loader(engine):
    def load(source, threads=None) -> EmbeddingModel:
        """source: a .keras file or a Keras model. threads: unused (TensorFlow's own thread pools)."""
        if isinstance(source, (str, Path)):
            from engines.model_file import load_embedding_model

            keras_model, _ = load_embedding_model(source)
            return from_keras_model(keras_model, source, engine)
        return from_keras_model(source, None, engine)

    return load


load_keras = _loader("keras")
load_fast = _loader("fast")
