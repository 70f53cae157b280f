"""The fast inference graph (batch norm folded, one compiled function) computes what the Keras model computes."""

import numpy as np
import pytest

from engines.fast_graph import computes_in_float32, make_fast_embed_fn
from engines.keras_engine import default_engine, make_embed_fn
from evaluation import combine_flips
from inference_helpers import embedding_model, randomize_inference_statistics

SIZE = (32, 32)


def built(name, seed=0, **options):
    return embedding_model(name, SIZE, 64, seed, **options)


def images(count=6, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, *SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("name, options, folded, affine", [
    ("mobilefacenet", {}, 50, 0),                      # every BN follows a conv or the FC
    ("resface20", {"batch_norm": True}, 21, 0),        # 20 convs + FC
    ("lresnet50e_ir", {}, 54, 25),                     # pre-activation BN of each unit + head BN stay affine
])
def test_fast_graph_equals_keras_to_float_rounding(name, options, folded, affine):
    model = built(name, **options)
    fast, summary = make_fast_embed_fn(model)
    assert summary["folded_batch_norms"] == folded and summary["affine_batch_norms"] == affine
    assert summary["layers_called_as_is"] == []
    x = images()
    keras_out, fast_out = make_embed_fn(model)(x), fast(x)
    relative = np.abs(fast_out - keras_out).max(axis=1) / np.linalg.norm(keras_out, axis=1)
    assert relative.max() <= 3e-6, relative.max()
    # The features verification compares (flip-concatenated, unit norm) agree to float32 rounding: on these
    # random networks 1-2e-6 (the Keras graph itself moves 2-5e-7 between batch sizes); on the trained
    # MobileFaceNet 1e-7 (benchmarks/inference_speed.py).
    x_flip = x[:, :, ::-1]
    features_keras = combine_flips(keras_out, make_embed_fn(model)(x_flip))
    features_fast = combine_flips(fast_out, fast(x_flip))
    assert np.abs(features_fast - features_keras).max() <= 2e-6
    cosines = lambda f: f @ f.T
    assert np.abs(cosines(features_fast) - cosines(features_keras)).max() <= 2e-6


def test_prelu_is_bitwise_the_keras_layer():
    """max(x, 0) + a·min(x, 0) (one XLA pass) and Keras' relu(x) − a·relu(−x) give identical floats."""
    import keras

    inputs = keras.Input((4, 4, 8))
    layer = keras.layers.PReLU(shared_axes=[1, 2])
    model = keras.Model(inputs, keras.layers.Flatten()(layer(inputs)))
    layer.alpha.assign(np.random.default_rng(1).uniform(-2, 2, layer.alpha.shape).astype("float32"))
    x = np.random.default_rng(2).normal(0, 3, (5, 4, 4, 8)).astype(np.float32)
    x[0, 0, 0, :] = 0.0
    fast, summary = make_fast_embed_fn(model)
    assert summary["prelu_layers"] == 1
    assert np.array_equal(fast(x), make_embed_fn(model)(x))


def test_unknown_layers_are_called_as_they_are():
    """A layer type the folder does not know (here LayerNormalization, ReLU) still computes right."""
    import keras

    inputs = keras.Input((*SIZE, 3))
    x = keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.LayerNormalization()(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(16)(x))
    randomize_inference_statistics(model, 3)
    fast, summary = make_fast_embed_fn(model)
    assert summary["layers_called_as_is"] == ["LayerNormalization", "ReLU"]
    assert summary["folded_batch_norms"] == 1
    np.testing.assert_allclose(fast(images()), make_embed_fn(model)(images()), rtol=1e-5, atol=1e-5)


def test_mixed_precision_model_runs_float32_and_keeps_the_keras_engine_by_default():
    import keras

    from engines.onnx_export import float32_twin
    from training.state import dtype_policy

    with dtype_policy("bfloat16"):
        model = built("mobilefacenet")
    assert not computes_in_float32(model) and default_engine(model) == "keras"
    twin = float32_twin(model)
    assert computes_in_float32(twin) and default_engine(twin) == "fast"
    assert keras.mixed_precision.global_policy().name == "float32"
    fast, _ = make_fast_embed_fn(model)
    want = make_embed_fn(twin)(images())
    # float32 rounding of two orders of summation over embeddings of magnitude ~20: a few ulps
    np.testing.assert_allclose(fast(images()), want, rtol=0, atol=5e-6 * np.abs(want).max())
