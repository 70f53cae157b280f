"""Tests for models/: registry, output shapes, parameter counts and FLOPs against arithmetic done
here from the published architectures (not from models/ code), gradients, and .keras round trips."""

import functools
import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import models

SIZES = [(112, 96), (112, 112)]
NAMES = ["resface20", "resface36", "lresnet50e_ir", "mobilefacenet"]


@functools.cache
def built(name, image_size, embedding_size=512, **options):
    return models.build_backbone(name, image_size=image_size, embedding_size=embedding_size, **options)


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# ---- independent architecture arithmetic ------------------------------------------------------
# Each function returns (total params, trainable params, forward FLOPs) with FLOPs = 2 x multiply-adds
# of convs and FCs only. BN on c channels: gamma, beta trainable + mean, var (4c total); with fixed
# gamma: beta trainable + mean, var (3c). PReLU on c channels: c slopes.

def expected_resface(units, image_size, embedding, batch_norm=False):
    """SphereFace ResNet (make_spherenet.py): per stage conv3x3/2 (+bias) + PReLU, units of 2 x (conv3x3, PReLU)."""
    h, w = image_size
    total = trainable = macs = 0
    cin = 3
    for s, (c, n) in enumerate(zip((64, 128, 256, 512), units), start=1):
        positions = (h >> s) * (w >> s)
        convs = 1 + 2 * n
        weights = 9 * cin * c + 2 * n * 9 * c * c
        macs += positions * weights
        per_conv_extra = (2 * c if batch_norm else 0) + c          # BN gamma/beta, PReLU
        trainable += weights + convs * per_conv_extra + (0 if batch_norm else c)  # opening-conv bias
        total += weights + convs * (per_conv_extra + (2 * c if batch_norm else 0)) + (0 if batch_norm else c)
        cin = c
    flat = (h // 16) * (w // 16) * 512
    macs += flat * embedding
    fc_trainable = flat * embedding + (2 * embedding if batch_norm else embedding)
    trainable += fc_trainable
    total += fc_trainable + (2 * embedding if batch_norm else 0)
    return total, trainable, 2 * macs


def expected_lresnet50e_ir(image_size, embedding):
    """insightface fresnet, residual_unit_v3 with stages [3, 4, 14, 3], version_input=1, fc_type E."""
    h, w = image_size
    bn = lambda c: (4 * c, 2 * c)
    total, trainable = 27 * 64 + 4 * 64 + 64, 27 * 64 + 2 * 64 + 64   # stem conv, BN, PReLU
    macs = h * w * 27 * 64
    cin, hi, wi = 64, h, w
    for c, n in zip((64, 128, 256, 512), (3, 4, 14, 3)):
        for u in range(n):
            stride = 2 if u == 0 else 1
            ho, wo = hi // stride, wi // stride
            conv = 9 * cin * c + 9 * c * c
            t = conv + bn(cin)[0] + 2 * bn(c)[0] + c
            tt = conv + bn(cin)[1] + 2 * bn(c)[1] + c
            macs += hi * wi * 9 * cin * c + ho * wo * 9 * c * c
            if u == 0:  # projection shortcut: conv1x1/2 + BN
                t += cin * c + bn(c)[0]
                tt += cin * c + bn(c)[1]
                macs += ho * wo * cin * c
            total, trainable = total + t, trainable + tt
            cin, hi, wi = c, ho, wo
    flat = hi * wi * 512
    total += bn(512)[0] + flat * embedding + embedding + 3 * embedding
    trainable += bn(512)[1] + flat * embedding + embedding + embedding
    macs += flat * embedding
    return total, trainable, 2 * macs


def expected_mobilefacenet(image_size, embedding):
    """MobileFaceNet paper, Table 1 (expansion t, output c, repeats n, stride s), GDC head."""
    h, w = image_size
    total = trainable = macs = 0

    def add(params_total, params_trainable, mult_adds):
        nonlocal total, trainable, macs
        total, trainable, macs = total + params_total, trainable + params_trainable, macs + mult_adds

    # conv3x3/2 64 (+BN+PReLU), depthwise conv3x3 64 (+BN+PReLU)
    hi, wi = h // 2, w // 2
    add(27 * 64 + 5 * 64, 27 * 64 + 3 * 64, hi * wi * 27 * 64)
    add(9 * 64 + 5 * 64, 9 * 64 + 3 * 64, hi * wi * 9 * 64)
    cin = 64
    for t, c, n, s in [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            e = t * cin
            ho, wo = hi // stride, wi // stride
            weights = cin * e + 9 * e + e * c
            add(weights + 2 * 5 * e + 4 * c, weights + 2 * 3 * e + 2 * c,
                hi * wi * cin * e + ho * wo * (9 * e + e * c))
            cin, hi, wi = c, ho, wo
    add(128 * 512 + 5 * 512, 128 * 512 + 3 * 512, hi * wi * 128 * 512)   # conv1x1 512
    add(hi * wi * 512 + 4 * 512, hi * wi * 512 + 2 * 512, hi * wi * 512)   # linear GDConv
    add(512 * embedding + 3 * embedding, 512 * embedding + embedding, 512 * embedding)  # linear FC + BN
    return total, trainable, 2 * macs


EXPECTED = {
    "resface20": lambda size, emb: expected_resface((1, 2, 4, 1), size, emb),
    "resface36": lambda size, emb: expected_resface((2, 4, 8, 2), size, emb),
    "lresnet50e_ir": expected_lresnet50e_ir,
    "mobilefacenet": expected_mobilefacenet,
}


# ---- registry ---------------------------------------------------------------------------------

def test_registry_lists_all_backbones():
    assert models.list_backbones() == sorted(NAMES)
    assert set(models.BACKBONES) == set(NAMES)


def test_unknown_backbone_names_valid_ones():
    with pytest.raises(ValueError, match="resface20.*resface36|lresnet50e_ir.*mobilefacenet"):
        models.build_backbone("resnet18")


@pytest.mark.parametrize("bad", [(100, 96), (112, 90), (112,), "112x", (0, 16), (112.5, 96)])
def test_bad_image_size_rejected(bad):
    with pytest.raises(ValueError, match="image"):
        models.build_backbone("mobilefacenet", image_size=bad)


def test_image_size_parsing_and_other_multiples_of_16():
    model = models.build_backbone("mobilefacenet", image_size="64x48", embedding_size=32)
    assert model.output.shape == (None, 32)


def test_unknown_option_rejected():
    with pytest.raises(ValueError, match="dropout"):
        models.build_backbone("mobilefacenet", dropout=0.1)
    with pytest.raises(ValueError, match="embedding_size"):
        models.build_backbone("mobilefacenet", embedding_size=0)


# ---- shapes, parameters, FLOPs ----------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES)
def test_output_shape(name, size):
    model = built(name, size)
    assert model.input.shape == (None, *size, 3)
    x = np.random.default_rng(0).uniform(-1, 1, (2, *size, 3)).astype("float32")
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 512) and y.dtype == np.float32
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES)
def test_params_and_flops_match_architecture_arithmetic(name, size):
    model = built(name, size)
    total, trainable, flops = EXPECTED[name](size, 512)
    assert model.count_params() == total
    assert trainable_count(model) == trainable
    assert models.count_forward_flops(model) == flops


@pytest.mark.parametrize("name", ["resface20", "mobilefacenet"])
def test_embedding_size_configurable(name):
    model = built(name, (112, 96), 128)
    total, _trainable, flops = EXPECTED[name]((112, 96), 128)
    assert model.output.shape == (None, 128)
    assert (model.count_params(), models.count_forward_flops(model)) == (total, flops)


def test_resface20_reference_figures():
    """Measured reference: ResFace20 at 112x96, 512-d FC: 22.67 M parameters, 3.50 GFLOP forward."""
    model = built("resface20", (112, 96))
    assert round(model.count_params() / 1e6, 2) == 22.67
    assert round(models.count_forward_flops(model) / 1e9, 2) == 3.50
    # by hand: 11,650,752 conv weights + 960 opening-conv biases + 4,672 PReLU slopes
    # + 21,504 x 512 FC weights + 512 biases
    assert model.count_params() == 11_650_752 + 960 + 4_672 + 21_504 * 512 + 512


def test_resface_batch_norm_variant():
    model = built("resface20", (112, 96), 512, batch_norm=True)
    total, trainable, flops = expected_resface((1, 2, 4, 1), (112, 96), 512, batch_norm=True)
    assert (model.count_params(), trainable_count(model), models.count_forward_flops(model)) == (
        total, trainable, flops)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_mobilefacenet_is_light():
    """MobileFaceNet paper: 0.99 M params and 221 M multiply-adds at 112x112 with a 128-d embedding.

    Kernels alone are 0.976 M here, 1.003 M with BN and PReLU parameters (the paper does not say which).
    """
    model = built("mobilefacenet", (112, 112), 128)
    kernels = sum(int(np.prod(w.shape)) for w in model.trainable_weights if w.path.endswith("kernel"))
    assert kernels == 976_000
    assert 0.97e6 < trainable_count(model) < 1.01e6
    assert 220e6 < models.count_forward_flops(model) / 2 < 222e6
    gdc = model.get_layer("gdc_dwconv")
    assert gdc.kernel.shape[:2] == (7, 7)
    assert built("mobilefacenet", (112, 96)).get_layer("gdc_dwconv").kernel.shape[:2] == (7, 6)


def test_count_forward_flops_by_hand():
    inputs = keras.Input((8, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)                 # 48 * 27 * 4
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", groups=2)(x)  # 12 * 18 * 8
    x = keras.layers.DepthwiseConv2D(3, padding="valid")(x)               # 2 * 9 * 8
    x = keras.layers.SeparableConv2D(5, 1)(x)                             # 2 * (8 + 40)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(7)(x)                                          # 10 * 7
    model = keras.Model(inputs, x)
    assert models.count_forward_flops(model) == 2 * (48 * 27 * 4 + 12 * 18 * 8 + 2 * 9 * 8 + 2 * 48 + 70)


def test_count_forward_flops_refuses_unknown_kernel_layers():
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.Conv2DTranspose(3, 3)(inputs))
    with pytest.raises(NotImplementedError, match="transposed"):
        models.count_forward_flops(model)


def test_count_forward_flops_nested_and_shared_layers():
    backbone = built("mobilefacenet", (112, 96))
    images = keras.Input((112, 96, 3))
    wrapper = keras.Model(images, backbone(images))
    assert models.count_forward_flops(wrapper) == models.count_forward_flops(backbone)
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(3)
    with pytest.raises(ValueError, match="more than once"):
        models.count_forward_flops(keras.Model(inputs, dense(dense(inputs))))


# ---- training and serialisation ---------------------------------------------------------------

@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradient check uses tf.GradientTape")
@pytest.mark.parametrize("name", ["mobilefacenet", "resface20"])
def test_forward_backward_gives_finite_gradients(name):
    import tensorflow as tf

    model = built(name, (112, 96), 64)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.uniform(-1, 1, (2, 112, 96, 3)), tf.float32)
    target = tf.constant(rng.normal(size=(2, 64)), tf.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True) - target))
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing, f"variables without gradient: {missing}"
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_keras_round_trip_safe_mode(name, tmp_path):
    # 64-d embedding keeps the file small; the architecture is otherwise the full one.
    model = built(name, (112, 96), 64)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 112, 96, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)),
                                  keras.ops.convert_to_numpy(model(x, training=False)))
    assert loaded.count_params() == model.count_params()


OTHER_BACKEND_CHECK = f"""
import numpy as np, keras, models
from losses.heads import build_head
from losses.loss import margin_softmax_loss
from losses.registry import list_heads
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (4, 112, 96, 3)).astype("float32")
for name, options in [(n, {{}}) for n in {NAMES!r}] + [("resface20", {{"batch_norm": False}})]:
    m = models.build_backbone(name, (112, 96), **options)
    for training in (True, False):
        out = keras.ops.convert_to_numpy(m(x, training=training))
        assert out.shape == (4, 512) and np.isfinite(out).all(), (name, options, training)
assert models.count_forward_flops(models.build_backbone("resface20", (112, 112), batch_norm=True)) > 0
emb, labels = rng.normal(size=(8, 16)).astype("float32"), rng.integers(0, 10, 8).astype("int32")
for head_name in list_heads():
    head = build_head(head_name, 10)
    for _ in range(2):   # heads with state update it on each pass
        logits = head(emb, labels)
    loss = margin_softmax_loss(labels, logits, focal_gamma=2.0,
                               class_weights=np.linspace(0.25, 1.0, 10).astype("float32"))
    loss = loss + head.auxiliary_loss(emb)
    assert np.isfinite(keras.ops.convert_to_numpy(head.class_scores(emb))).all(), head_name
    assert keras.ops.convert_to_numpy(logits).shape == (8, 10), head_name
    assert np.isfinite(keras.ops.convert_to_numpy(loss)).all(), head_name
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_builds_on_other_backends(backend):
    """Every backbone (training and inference forward) and every head with the loss run on Keras' other
    backends: models/ and losses/ use keras.* only (TensorFlow's own kernels only on that backend)."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed; models/ uses keras.* only, so it should build there")
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run([sys.executable, "-c", OTHER_BACKEND_CHECK], env=env, capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr[-3000:]
