"""models/layers.py: the fused batch norm and the one-select PReLU against the stock Keras layers.

Forward, gradients (inputs and variables), moving statistics, inference mode; that the fused
kernel and PReLU's XLA training kernels really run on TensorFlow; checkpoints interchangeable
both ways; exports with stock layers only.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import models
from models.layers import FastPReLU, FusedBatchNormalization, with_stock_layers


def _train_step_results(layer, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        objective = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(objective, [x] + layer.trainable_variables)
    return [y] + grads + [v.numpy() for v in layer.non_trainable_variables] + [layer(x, training=False)]


@pytest.mark.parametrize("shape", [(6, 10, 8, 12), (16, 24)])
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("epsilon", [1e-3, 2e-5])
def test_fused_batch_norm_matches_stock(shape, scale, epsilon):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(3.0, 2.0, shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    stock = keras.layers.BatchNormalization(momentum=0.9, epsilon=epsilon, scale=scale)
    fused = FusedBatchNormalization(momentum=0.9, epsilon=epsilon, scale=scale)
    for layer in (stock, fused):
        layer.build(shape)
    if scale:
        gamma = rng.normal(1.0, 0.2, shape[-1]).astype("float32")
        stock.gamma.assign(gamma)
        fused.gamma.assign(gamma)
    assert fused._fused_applies(x, None)
    # Three steps: the moving statistics accumulate the same way.
    for _ in range(3):
        expected = _train_step_results(stock, x, upstream)
        got = _train_step_results(fused, x, upstream)
    names = ["output", "d input"] + [f"d {v.name}" for v in stock.trainable_variables] + \
            [v.name for v in stock.non_trainable_variables] + ["inference output"]
    for name, e, g in zip(names, expected, got):
        e, g = np.asarray(e), np.asarray(g)
        assert g.shape == e.shape, name
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(e).max()), err_msg=name)
    assert [v.path.split("/")[-1] for v in fused.weights] == [v.path.split("/")[-1] for v in stock.weights]


def test_fused_batch_norm_under_bfloat16_matches_stock():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(0.5, 1.5, (8, 7, 6, 16)).astype("float32"))
    stock = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3, dtype="mixed_bfloat16")
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-3, dtype="mixed_bfloat16")
    y_stock, y_fused = (layer(tf.cast(x, tf.bfloat16), training=True) for layer in (stock, fused))
    assert y_fused.dtype == y_stock.dtype == tf.bfloat16
    np.testing.assert_allclose(np.float32(y_fused), np.float32(y_stock), atol=0.05)
    np.testing.assert_allclose(fused.moving_variance.numpy(), stock.moving_variance.numpy(), rtol=1e-5)


def _traced_step(layer, x, training):
    """The graph of one forward + backward through `layer`, traced as train.py traces its step."""
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            objective = tf.reduce_sum(tf.square(layer(x, training=training)))
        return tape.gradient(objective, x)
    return step.get_concrete_function(x).graph


def test_fused_kernel_runs_in_the_traced_step():
    """Not only equal: the fast path is taken (a silent fallback would be equal and slow)."""
    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-3)
    x = tf.zeros((4, 6, 5, 8))
    layer.build(x.shape)
    ops = {op.type for op in _traced_step(layer, x, training=True).get_operations()}
    assert "FusedBatchNormV3" in ops and "FusedBatchNormGradV3" in ops
    stock = keras.layers.BatchNormalization()
    stock.build(x.shape)
    stock_ops = {op.type for op in tf.function(lambda x: stock(x, training=True))
                 .get_concrete_function(x).graph.get_operations()}
    assert "FusedBatchNormV3" not in stock_ops


def test_fast_prelu_matches_stock():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(4, 5, 4, 6)).astype("float32"))
    upstream = tf.constant(rng.normal(size=x.shape).astype("float32"))
    alpha = rng.normal(0.25, 0.1, (1, 1, 6)).astype("float32")
    results = []
    for cls in (keras.layers.PReLU, FastPReLU):
        layer = cls(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2])
        layer.build(x.shape)
        layer.alpha.assign(alpha)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            objective = tf.reduce_sum(y * upstream)
        results.append([y.numpy()] + [g.numpy() for g in tape.gradient(objective, [x, layer.alpha])])
    for name, e, g in zip(["output", "d input", "d alpha"], *results):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6, err_msg=name)


def _prelu_results(layer, x, upstream, training):
    """Output, d input and d alpha of one traced step (as train.py traces it)."""
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            objective = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
        return [y] + tape.gradient(objective, [x, layer.alpha])
    return [tf.cast(t, tf.float32).numpy() for t in step(x)]


@pytest.mark.parametrize("shape,shared_axes", [((4, 5, 4, 6), [1, 2]), ((4, 5, 4, 6), None),
                                               ((4, 5, 4, 6), [1]), ((3, 7), None)])
def test_fast_prelu_training_kernels_match_stock(shape, shared_axes):
    """The training path (XLA forward and backward, custom gradient) against the stock layer,
    alpha broadcast along the shared axes or per element."""
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    layers = [cls(shared_axes=shared_axes) for cls in (keras.layers.PReLU, FastPReLU)]
    for layer in layers:
        layer.build(x.shape)
    alpha = rng.normal(0.25, 0.1, layers[0].alpha.shape).astype("float32")
    for layer in layers:
        layer.alpha.assign(alpha)
    expected, got = (_prelu_results(layer, x, upstream, training=True) for layer in layers)
    for name, e, g in zip(["output", "d input", "d alpha"], expected, got):
        assert g.shape == e.shape, name
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6, err_msg=name)


def test_fast_prelu_training_under_bfloat16():
    """Mixed precision: bfloat16 in and out, alpha a float32 variable; d alpha, a sum over 16,384
    terms, is the float64 sum of the same bf16 values to within one bfloat16 rounding (2^-9)."""
    rng = np.random.default_rng(6)
    shape = (64, 16, 16, 4)
    x = tf.cast(tf.constant(-rng.uniform(0.5, 1.5, shape).astype("float32")), tf.bfloat16)
    upstream = tf.constant(rng.uniform(0.5, 1.5, shape).astype("float32"))
    layer = FastPReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], dtype="mixed_bfloat16")
    layer.build(shape)
    y, dx, dalpha = _prelu_results(layer, x, tf.cast(tf.cast(upstream, tf.bfloat16), tf.float32), training=True)
    x64 = np.float64(np.float32(x.numpy()))
    g64 = np.float64(np.float32(tf.cast(upstream, tf.bfloat16).numpy()))
    reference = (g64 * x64).sum(axis=(0, 1, 2)).reshape(1, 1, 4)
    np.testing.assert_allclose(dalpha, reference, rtol=2.0 ** -9)
    assert layer.alpha.dtype == "float32" and y.shape == shape
    np.testing.assert_allclose(dx, np.float32(tf.cast(0.25 * g64, tf.bfloat16)), rtol=1e-2)


def test_fast_prelu_xla_kernels_run_in_the_traced_step_only_in_training():
    """Not only equal: the training step holds the two XLA-compiled kernels; inference the select."""
    layer = FastPReLU(shared_axes=[1, 2])
    x = tf.zeros((4, 6, 5, 8))
    layer.build(x.shape)

    def compiled_functions(training):
        library = _traced_step(layer, x, training).as_graph_def().library.function
        return [f for f in library if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]

    assert len(compiled_functions(True)) == 2    # forward and backward
    assert compiled_functions(False) == []


def test_fast_prelu_at_exactly_zero():
    """The one documented difference: at x = 0 the stock expression's input gradient is 0 (relu'(0) = 0
    in both of its terms), the select's is 1; both are subgradients. Output and d alpha agree."""
    x = tf.zeros((1, 2, 2, 3))
    for cls, training, expected_dx in ((keras.layers.PReLU, False, 0.0), (FastPReLU, False, 1.0),
                                       (FastPReLU, True, 1.0)):
        layer = cls(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2])
        with tf.GradientTape() as tape:
            tape.watch(x)
            objective = tf.reduce_sum(layer(x, training=training))
        dx, dalpha = tape.gradient(objective, [x, layer.alpha])
        assert np.all(layer(x).numpy() == 0) and np.all(dalpha.numpy() == 0)
        assert np.all(dx.numpy() == expected_dx)


@pytest.mark.parametrize("name,options", [("mobilefacenet", {}), ("resface20", {"batch_norm": True})])
def test_checkpoints_interchange_with_stock_layers(tmp_path, name, options):
    x = np.random.default_rng(3).uniform(-1, 1, (2, 112, 96, 3)).astype("float32")
    fast = models.build_backbone(name, (112, 96), 32, **options)
    for v in fast.non_trainable_variables:   # moving statistics away from their initial values
        v.assign(v + np.float32(0.1))
    stock = with_stock_layers(fast)
    assert not any(isinstance(layer, (FusedBatchNormalization, FastPReLU)) for layer in stock.layers)
    # stock -> fast: a checkpoint written by a model of stock layers restores into the fast one.
    tf.train.Checkpoint(backbone=stock).write(str(tmp_path / "stock"))
    fresh = models.build_backbone(name, (112, 96), 32, **options)
    tf.train.Checkpoint(backbone=fresh).read(str(tmp_path / "stock")).assert_consumed()
    np.testing.assert_allclose(fresh(x, training=False), stock(x, training=False), atol=1e-5)
    # fast -> stock.
    tf.train.Checkpoint(backbone=fast).write(str(tmp_path / "fast"))
    other = with_stock_layers(models.build_backbone(name, (112, 96), 32, **options))
    tf.train.Checkpoint(backbone=other).read(str(tmp_path / "fast")).assert_consumed()
    np.testing.assert_allclose(other(x, training=False), fast(x, training=False), atol=1e-5)


def test_export_holds_stock_layers_and_loads_in_safe_mode(tmp_path):
    from training.export import build_embedding_model, save_keras_atomic

    model = build_embedding_model(models.build_backbone("mobilefacenet", (112, 96), 32), (112, 96))
    path = save_keras_atomic(model, tmp_path / "embedding.keras")
    loaded = keras.saving.load_model(str(path), safe_mode=True, compile=False)   # no custom objects

    def classes(m):
        for layer in m.layers:
            yield type(layer)
            if isinstance(layer, keras.Model):
                yield from classes(layer)

    assert all(cls.__module__.startswith("keras.") for cls in classes(loaded))
    x = np.random.default_rng(4).uniform(0, 255, (3, 112, 96, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x, training=False), atol=1e-5)
