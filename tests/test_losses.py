"""losses/: margin logits and gradients against closed-form numpy; heads train on a toy problem."""

import math

import numpy as np
import pytest
import tensorflow as tf

from losses import margins
from losses.heads import build_head
from losses.loss import margin_softmax_loss
from losses.registry import HEADS, list_heads

RNG = np.random.default_rng(0)


def _cos_grid():
    """cos θ values spanning (0, π) with points close to both ends, as a [B, C] batch."""
    thetas = np.concatenate([
        [1e-3, 1e-2, 0.05],                         # θ near 0
        RNG.uniform(0.1, math.pi - 0.1, size=40),   # generic
        [math.pi - 0.05, math.pi - 1e-2, math.pi - 1e-3],  # θ near π
    ])
    cos = np.cos(thetas).reshape(-1, 1) * np.ones((1, 5))
    cos[:, 1:] = RNG.uniform(-1, 1, size=(len(thetas), 4))  # other classes: anything
    one_hot = np.zeros_like(cos)
    one_hot[:, 0] = 1.0
    return cos, one_hot


def _logits_and_grad(fn, cos, one_hot, **kw):
    """Logits and d(sum of true-class logits)/d cos, computed by the Keras function in float32."""
    c = tf.constant(cos, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(c)
        out = fn(c, tf.constant(one_hot, tf.float32), **kw)
        target = tf.reduce_sum(out * one_hot)
    return out.numpy(), tape.gradient(target, c).numpy()


def _theta(cos):
    return np.arccos(np.clip(cos, -1, 1))


def test_am_softmax_matches_closed_form():
    cos, one_hot = _cos_grid()
    got, grad = _logits_and_grad(margins.am_softmax_logits, cos, one_hot, s=30.0, m=0.35)
    want = 30.0 * cos - 30.0 * 0.35 * one_hot
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(grad[:, 0], 30.0, rtol=1e-6)


@pytest.mark.parametrize("m", [0.5, 0.3])
def test_arcface_matches_closed_form_with_fallback(m):
    s = 64.0
    cos, one_hot = _cos_grid()
    got, grad = _logits_and_grad(margins.arcface_logits, cos, one_hot, s=s, m=m)
    theta = _theta(cos[:, 0])
    normal = theta + m <= math.pi
    want_target = np.where(normal, np.cos(theta + m), cos[:, 0] - m * math.sin(m))
    np.testing.assert_allclose(got[:, 0], s * want_target, rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(got[:, 1:], s * cos[:, 1:], rtol=1e-5, atol=1e-4)
    # d cos(θ+m)/d cos θ = sin(θ+m)/sin θ in the normal region, 1 in the fallback.
    want_grad = s * np.where(normal, np.sin(theta + m) / np.sin(theta), 1.0)
    # float32 cos θ near ±1 carries ~1e-7 absolute error, so sin θ = sqrt(1 − cos²) is only
    # good to ~1e-7 / sin²θ relative: compare with that conditioning.
    rtol = np.maximum(1e-4, 2e-7 / np.sin(theta) ** 2)
    assert np.all(np.abs(grad[:, 0] - want_grad) <= rtol * np.abs(want_grad) + 1e-3)
    assert np.all(np.isfinite(grad))


def test_arcface_fallback_is_monotonic_with_the_published_step():
    """insightface's fallback ``cos θ − m·sin m`` keeps the target monotonic in cos θ; at
    θ = π − m it steps from −cos m − m·sin m up to cos(π) = −1 (0.117 for m = 0.5)."""
    m = 0.5
    cos = np.linspace(-1, 1, 20001).reshape(-1, 1)
    got, _ = _logits_and_grad(margins.arcface_logits, cos, np.ones_like(cos), s=1.0, m=m)
    steps = np.diff(got[:, 0])
    assert np.all(steps >= -1e-6), "target logit must not decrease as cos θ grows"
    i = int(np.argmax(steps))
    assert cos[i, 0] <= math.cos(math.pi - m) < cos[i + 1, 0]
    np.testing.assert_allclose(steps[i], -1 + math.cos(m) + m * math.sin(m), atol=1e-3)


def test_arcface_easy_margin():
    cos, one_hot = _cos_grid()
    got, _ = _logits_and_grad(margins.arcface_logits, cos, one_hot, s=64.0, m=0.5, easy_margin=True)
    theta = _theta(cos[:, 0])
    want = np.where(cos[:, 0] > 0, np.cos(theta + 0.5), cos[:, 0])
    np.testing.assert_allclose(got[:, 0], 64.0 * want, rtol=1e-4, atol=2e-3)


def test_exact_theta_zero_and_pi_give_finite_gradients():
    cos = np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)
    one_hot = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    for fn, kw in [(margins.arcface_logits, {"s": 64.0, "m": 0.5}), (margins.sphereface_logits, {"s": 30.0, "m": 4}),
                   (margins.combined_margin_logits, {"s": 64.0, "m1": 1.35, "m2": 0.1, "m3": 0.1}),
                   (margins.combined_margin_logits, {"s": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2})]:
        got, grad = _logits_and_grad(fn, cos, one_hot, **kw)
        assert np.all(np.isfinite(got)) and np.all(np.isfinite(grad)), fn.__name__


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_sphereface_psi_matches_closed_form(m):
    cos, one_hot = _cos_grid()
    got, grad = _logits_and_grad(margins.sphereface_logits, cos, one_hot, s=1.0, m=m)
    theta = _theta(cos[:, 0])
    k = np.minimum(np.floor(m * theta / math.pi), m - 1)
    psi = (-1) ** k * np.cos(m * theta) - 2 * k
    np.testing.assert_allclose(got[:, 0], psi, atol=1e-4)
    # dψ/d cos θ = (−1)^k · m·sin(mθ)/sin θ  (T_m' = m·U_{m−1}).
    want_grad = (-1) ** k * m * np.sin(m * theta) / np.sin(theta)
    np.testing.assert_allclose(grad[:, 0], want_grad, rtol=1e-3, atol=1e-3)
    # ψ is monotonically decreasing in θ, i.e. increasing in cos θ.
    c = np.linspace(-1, 1, 4001).reshape(-1, 1)
    mono, _ = _logits_and_grad(margins.sphereface_logits, c, np.ones_like(c), s=1.0, m=m)
    assert np.all(np.diff(mono[:, 0]) >= -1e-5)


def test_sphereface_lambda_blends_with_cosine():
    cos, one_hot = _cos_grid()
    pure, _ = _logits_and_grad(margins.sphereface_logits, cos, one_hot, s=1.0, m=4)
    blended, _ = _logits_and_grad(margins.sphereface_logits, cos, one_hot, s=1.0, m=4, sphereface_lambda=5.0)
    np.testing.assert_allclose(blended[:, 0], (5.0 * cos[:, 0] + pure[:, 0]) / 6.0, atol=1e-5)


def test_sphereface_rejects_fractional_margin():
    with pytest.raises(ValueError, match="positive integer"):
        margins.sphereface_psi(tf.constant([[0.5]]), m=1.5)


def test_combined_margin_reduces_to_each_special_case():
    cos, one_hot = _cos_grid()
    s = 64.0
    comb = lambda **kw: _logits_and_grad(margins.combined_margin_logits, cos, one_hot, s=s, **kw)
    # (1, 0, m) is AM-Softmax / CosFace, everywhere.
    got, g1 = comb(m1=1.0, m2=0.0, m3=0.35)
    want, g2 = _logits_and_grad(margins.am_softmax_logits, cos, one_hot, s=s, m=0.35)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(g1, g2, rtol=1e-5)
    # (1, m, 0) is ArcFace wherever θ + m ≤ π (ArcFace adds its fallback beyond).
    theta = _theta(cos[:, 0])
    got, _ = comb(m1=1.0, m2=0.5, m3=0.0)
    want, _ = _logits_and_grad(margins.arcface_logits, cos, one_hot, s=s, m=0.5)
    normal = theta + 0.5 <= math.pi
    np.testing.assert_allclose(got[normal], want[normal], rtol=1e-5, atol=1e-3)
    # (m, 0, 0) with integer m is SphereFace's cos(mθ) on θ ≤ π/m (k = 0).
    got, _ = comb(m1=4.0, m2=0.0, m3=0.0)
    want, _ = _logits_and_grad(margins.sphereface_logits, cos, one_hot, s=s, m=4)
    first = theta <= math.pi / 4
    np.testing.assert_allclose(got[first], want[first], rtol=1e-4, atol=2e-3)
    # And the general case against its formula, with the acos path (m1 ≠ 1).
    got, grad = comb(m1=1.35, m2=0.1, m3=0.2)
    want_t = np.cos(1.35 * theta + 0.1) - 0.2
    np.testing.assert_allclose(got[:, 0], s * want_t, rtol=1e-4, atol=5e-3)
    want_g = s * 1.35 * np.sin(1.35 * theta + 0.1) / np.sin(theta)
    inner = (theta > 0.02) & (theta < math.pi - 0.02)  # acos is ill-conditioned at the ends
    np.testing.assert_allclose(grad[inner, 0], want_g[inner], rtol=1e-3, atol=1e-2)


def test_head_gradient_wrt_embeddings_matches_numpy():
    """Whole AM-Softmax head + cross-entropy: d loss / d x against the closed form."""
    B, D, C, s, m = 6, 8, 5, 30.0, 0.35
    x = RNG.normal(size=(B, D))
    labels = RNG.integers(0, C, size=B)
    head = build_head("am_softmax", C)
    head.build((None, D))
    w = RNG.normal(size=(D, C))
    head.kernel.assign(w.astype(np.float32))
    xt = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = margin_softmax_loss(labels, head(xt, labels))
    grad = tape.gradient(loss, xt).numpy()

    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    cos = xn @ wn
    onehot = np.eye(C)[labels]
    logits = s * (cos - m * onehot)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want_loss = -np.mean(np.log(p[np.arange(B), labels]))
    dcos = s * (p - onehot) / B                               # d loss / d cos
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # d cos_bc / d x_b = (wn_c − cos_bc · xn_b) / |x_b|
    want_grad = (dcos @ wn.T - np.sum(dcos * cos, axis=1, keepdims=True) * xn) / norms
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-3, atol=1e-5)


def test_focal_loss_matches_formula_and_gamma_zero_is_cross_entropy():
    logits = RNG.normal(size=(7, 4)).astype(np.float32) * 3
    labels = RNG.integers(0, 4, size=7)
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    ce = -logp[np.arange(7), labels]
    np.testing.assert_allclose(float(margin_softmax_loss(labels, logits)), ce.mean(), rtol=1e-5)
    focal = ((1 - np.exp(-ce)) ** 2 * ce).mean()
    np.testing.assert_allclose(float(margin_softmax_loss(labels, logits, focal_gamma=2.0)),
                               focal, rtol=1e-5)


def test_negatives_only_classes_and_example_weights_match_the_formula():
    """negative_classes: those columns leave every softmax; an example of such a class gets the mean
    −log softmax over the other classes (entropic open-set loss); class_weights scale its class's terms."""
    logits = RNG.normal(0, 5, size=(4, 5))
    labels = np.array([0, 3, 1, 4])
    negative = np.array([0.0, 0.0, 0.0, 1.0, 1.0])   # classes 3 and 4: negatives only
    class_weights = np.array([1.0, 2.0, 1.0, 0.5, 0.25])   # per class ...
    weights = class_weights[labels]                          # ... so per example 1, 0.5, 2, 0.25

    def log_softmax(x):
        x = x - x.max()
        return x - np.log(np.exp(x).sum())

    expected = []
    for row, label in zip(logits, labels):
        lp = log_softmax(row[:3])   # only the real classes take part
        expected.append(-lp.mean() if label >= 3 else -lp[label])
    got = margin_softmax_loss(tf.constant(labels), tf.constant(logits, tf.float32),
                                     negative_classes=tf.constant(negative), class_weights=tf.constant(class_weights))
    np.testing.assert_allclose(float(got), np.mean(weights * np.array(expected)), rtol=1e-5)
    # The open-set term is lowest when every class scores the same: it is then exactly ln 3.
    flat = margin_softmax_loss(tf.constant([3]), tf.constant([[2.0, 2.0, 2.0, 9.0, -9.0]]),
                                      negative_classes=tf.constant(negative))
    np.testing.assert_allclose(float(flat), math.log(3), rtol=1e-6)
    with tf.GradientTape() as tape:
        x = tf.constant(logits, tf.float32)
        tape.watch(x)
        loss = margin_softmax_loss(tf.constant(labels), x, negative_classes=tf.constant(negative))
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad[:, 3:] == 0.0)   # absent columns get no gradient


def test_build_head_defaults_and_errors():
    assert build_head("am_softmax", 3).margin_args == {"s": 30.0, "m": 0.35}
    assert build_head("arcface", 3).margin_args == {"s": 64.0, "m": 0.5, "easy_margin": False}
    assert build_head("arcface", 3, s=30, m=0.4).margin_args["m"] == 0.4
    assert build_head("combined", 3, m1=1.0, m2=0.5, m3=0.0).margin_args["m2"] == 0.5
    with pytest.raises(ValueError, match="valid"):
        build_head("nosuchloss", 3)
    with pytest.raises(ValueError, match="not"):
        build_head("combined", 3, m=0.5)


def test_margin_weight_scales_the_am_softmax_margin_and_leaves_other_classes_alone():
    """--margin-warmup-steps: weight w gives am_softmax exactly m·w; every head keeps s·cos θ off the true
    class, w = 0 is the plain scores and w = 1 (or no weight) the full margin."""
    emb = tf.constant(RNG.normal(size=(6, 8)), tf.float32)
    labels = tf.constant([0, 1, 2, 3, 0, 1])
    head = build_head("am_softmax", 4, m=0.4)
    head.build((None, 8))
    cos = head.cosine(emb).numpy()
    one_hot = np.eye(4)[labels.numpy()]
    for w in (0.0, 0.25, 1.0):
        got = head(emb, labels, margin_weight=tf.constant(w)).numpy()
        np.testing.assert_allclose(got, 30.0 * (cos - 0.4 * w * one_hot), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head(emb, labels).numpy(), head(emb, labels, margin_weight=1.0).numpy(),
                               rtol=1e-6)
    arc = build_head("arcface", 4)
    arc.build((None, 8))
    full, half = arc(emb, labels).numpy(), arc(emb, labels, margin_weight=0.5).numpy()
    plain = arc.class_scores(emb).numpy()
    np.testing.assert_allclose(half[one_hot == 0], plain[one_hot == 0], rtol=1e-6)
    np.testing.assert_allclose(half[one_hot == 1], 0.5 * (full + plain)[one_hot == 1], rtol=1e-5, atol=1e-5)
    assert np.all(full[one_hot == 1] < half[one_hot == 1])   # the margin lowers the true-class logit
    np.testing.assert_allclose(arc(emb, labels, margin_weight=0.0).numpy(), plain, rtol=1e-6)


def test_heads_compute_in_float32_under_mixed_precision():
    import keras
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        head = build_head("arcface", 4)
        emb = tf.cast(tf.random.normal((3, 8)), tf.float16)
        logits = head(emb, tf.constant([0, 1, 2]))
        assert logits.dtype == tf.float32
        assert head.kernel.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name,kw", [
    ("softmax", {}), ("am_softmax", {}), ("cosface", {}), ("arcface", {}),
    ("sphereface", {"sphereface_lambda": 5.0}), ("sphereface", {}), ("combined", {}),
    ("curricularface", {}), ("adaface", {}), ("magface", {}), ("subcenter_arcface", {"drop_step": 150}),
    ("elasticface_arc", {}), ("elasticface_arc_plus", {}), ("elasticface_cos", {}), ("elasticface_cos_plus", {}),
    ("am_softmax", {"focal": 2.0}),
])
def test_every_head_is_minimizable_on_a_toy_problem(name, kw):
    """A linear embedding + head on 8 well-separated Gaussian classes reaches > 95 % train accuracy."""
    import keras
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    C, D, n = 8, 20, 40
    centres = rng.normal(size=(C, D))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres * 3.0, n, axis=0) + rng.normal(scale=0.5, size=(C * n, D))
    y = np.repeat(np.arange(C), n)
    focal = kw.pop("focal", 0.0)
    embed = keras.layers.Dense(16)
    head = build_head(name, C, **kw)
    xt, yt = tf.constant(x, tf.float32), tf.constant(y, tf.int32)
    embed(xt), head.build((None, 16))
    opt = keras.optimizers.Adam(0.01)
    variables = embed.trainable_variables + head.trainable_variables

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            emb = embed(xt)
            loss = margin_softmax_loss(yt, head(emb, yt), focal_gamma=focal) + head.auxiliary_loss(emb)
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for _ in range(300):
        loss = step()
    assert np.isfinite(float(loss))
    acc = np.mean(np.argmax(head.class_scores(embed(xt)).numpy(), axis=1) == y)
    assert acc > 0.95, f"{name}: train accuracy {acc:.3f}"


# The published defaults, written out here (not read from the registry): each from its source.
PUBLISHED_DEFAULTS = {
    "softmax": {},
    "am_softmax": {"s": 30.0, "m": 0.35},                                 # Wang et al. 2018, AM-Softmax
    "cosface": {"s": 64.0, "m": 0.35},                                    # insightface's CosFace
    "arcface": {"s": 64.0, "m": 0.5, "easy_margin": False},               # Deng et al. 2019 / insightface
    "sphereface": {"s": 30.0, "m": 4, "sphereface_lambda": None,          # sphereface_model.prototxt:
                   "lambda_base": 1000.0, "lambda_gamma": 0.12,           # base 1000, gamma 0.12, power 1,
                   "lambda_power": 1.0, "lambda_min": 5.0},               # lambda_min 5
    "combined": {"s": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2},             # insightface's combined example
    "curricularface": {"s": 64.0, "m": 0.5, "t_alpha": 0.01},             # HuangYG123/CurricularFace
    "adaface": {"s": 64.0, "m": 0.4, "h": 0.333, "t_alpha": 0.01},        # mk-minchul/AdaFace scripts
    "magface": {"s": 64.0, "l_a": 10.0, "u_a": 110.0, "l_m": 0.45,        # IrvingMeng/MagFace run script;
                "u_m": 0.8, "lambda_g": 35.0, "easy_margin": True},      # MagLinear's easy_margin=True
    "subcenter_arcface": {"s": 64.0, "m": 0.5, "k": 3, "drop_step": 0},   # Deng et al. 2020: K = 3
    "elasticface_arc": {"s": 64.0, "m": 0.5, "std": 0.05},                # fdbtrs/ElasticFace config.py
    "elasticface_arc_plus": {"s": 64.0, "m": 0.5, "std": 0.0175},
    "elasticface_cos": {"s": 64.0, "m": 0.35, "std": 0.05},
    "elasticface_cos_plus": {"s": 64.0, "m": 0.35, "std": 0.02},
}


def test_head_registry_holds_the_published_defaults():
    """Every head's defaults against the values its paper or reference code publishes (written above),
    and build_head applies them: a changed default, or a head built with other values, fails here."""
    assert list_heads() == sorted(PUBLISHED_DEFAULTS)
    for name, published in PUBLISHED_DEFAULTS.items():
        assert HEADS[name].defaults == published, name
        if published:
            assert build_head(name, 3).margin_args == published, name
    cosface = build_head("cosface", 3)
    assert cosface.margin == "cosface" and cosface.margin_args == {"s": 64.0, "m": 0.35}
    assert build_head("am_softmax", 3, s=None, m=0.2).margin_args == {"s": 30.0, "m": 0.2}
    assert build_head("sphereface", 3, m=2.0).margin_args["m"] == 2   # --m is a float flag
    with pytest.raises(ValueError, match="takes no options"):
        build_head("softmax", 3, m=0.35)
    for name, bad, message in [("arcface", {"m": 1.6}, "below pi/2"), ("sphereface", {"m": 1.5}, "positive integer"),
                               ("am_softmax", {"s": -1}, "> 0"), ("arcface", {"easy_margin": 1}, "true or false")]:
        with pytest.raises(ValueError, match=message):
            build_head(name, 3, **bad)


def test_margin_functions_have_no_defaults_of_their_own():
    """One home for the defaults: the margin functions take every option explicitly (a default there
    could silently disagree with the registry)."""
    import inspect
    for fn in (margins.am_softmax_logits, margins.arcface_logits, margins.sphereface_logits,
               margins.combined_margin_logits):
        params = inspect.signature(fn).parameters
        assert all(params[p].default is inspect.Parameter.empty for p in ("s",)), fn.__name__
    from losses.heads import sphereface_lambda  # the λ schedule's published values: the registry's too
    assert all(p.default is inspect.Parameter.empty for p in inspect.signature(sphereface_lambda).parameters.values())
    from losses.registry import option_kind
    assert option_kind("easy_margin") is bool and option_kind("m") is float   # sphereface's int m: converted
    with pytest.raises(TypeError):
        margins.am_softmax_logits(tf.zeros((1, 2)), tf.zeros((1, 2)))


def test_train_help_lists_every_head_option_with_its_defaults():
    """train.py's head flags come from the registry: every option has a flag whose help names each
    head's default; the config accepts every option name as a key."""
    import train
    from training.config import HEAD_OPTION_KEYS
    help_text = " ".join(train.build_parser().format_help().split())
    for name, spec in HEADS.items():
        for option, value in spec.defaults.items():
            assert f"--{option.replace('_', '-')}" in help_text
            shown = "off" if value is None else str(value).lower() if isinstance(value, bool) else f"{value:g}"
            assert f"{name} {shown}" in help_text, (name, option)
            assert option in HEAD_OPTION_KEYS


def sphereface_lambda_at(iteration):
    """λ of the published schedule (the registry's defaults) at forward pass ``iteration``."""
    from losses.heads import sphereface_lambda
    d = HEADS["sphereface"].defaults
    return sphereface_lambda(iteration, d["lambda_base"], d["lambda_gamma"], d["lambda_power"], d["lambda_min"])


def _sphereface_step(head, emb, labels):
    return head(tf.constant(emb), tf.constant(labels)).numpy()


def test_sphereface_anneals_lambda_as_the_reference_layer():
    """MarginInnerProductLayer: iter_ += 1, then λ = max(λ_min, base·(1 + γ·iter)^(−power)); target
    s·(λ·cos θ + ψ(θ)) / (1 + λ). Checked at several forward passes against that formula."""
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(4, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 0])
    head = build_head("sphereface", 3)
    head.build((None, 8))
    one_hot = np.eye(3)[labels]
    cos = head.cosine(tf.constant(emb)).numpy()
    pure = margins.sphereface_psi(tf.constant(cos), 4).numpy()
    # The first passes one by one, then later ones (the counter set to the pass before): λ reaches
    # λ_min = 5 between passes 1658 (5.001) and 1659 (4.998).
    for it in (1, 2, 3, 10, 100, 1000, 1658, 1659, 30000):
        if it > 3:
            head.iteration.assign(float(it - 1))
        got = _sphereface_step(head, emb, labels)
        want_lambda = max(5.0, 1000.0 * (1 + 0.12 * it) ** -1.0)
        assert float(head.iteration.numpy()) == it
        np.testing.assert_allclose(float(head.current_lambda()), want_lambda, rtol=1e-6)
        want = 30.0 * np.where(one_hot == 1, (want_lambda * cos + pure) / (1 + want_lambda), cos)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert float(head.current_lambda()) == 5.0 and float(sphereface_lambda_at(1658)) > 5.0
    # A constant λ stays reachable, and the state never enters the margin-free scores.
    constant = build_head("sphereface", 3, sphereface_lambda=0.0)
    constant.build((None, 8))
    constant.kernel.assign(head.kernel)
    got = _sphereface_step(constant, emb, labels)
    np.testing.assert_allclose(got, 30.0 * np.where(one_hot == 1, pure, cos), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(constant.class_scores(tf.constant(emb)).numpy(),
                               head.class_scores(tf.constant(emb)).numpy(), rtol=1e-6)


def test_sphereface_lambda_state_checkpoints_and_resumes_exactly(tmp_path):
    """The iteration counter is a non-trainable head variable: RunCheckpoints' tf.train.Checkpoint saves
    it, and a restored head continues the schedule where it stopped."""
    from training.checkpoints import RunCheckpoints

    class _Guard:
        def check_finite(self, step, variables):
            pass

    def make():
        head = build_head("sphereface", 3)
        head.build((None, 8))
        backbone = tf.keras.Sequential([tf.keras.layers.Dense(8)])
        backbone.build((None, 4))
        import keras
        opt = keras.optimizers.SGD(0.1)
        opt.build(head.trainable_variables)
        strategy = tf.distribute.get_strategy()
        return head, RunCheckpoints(tmp_path, strategy, True, _Guard(), backbone, head, opt)

    emb = np.random.default_rng(4).normal(size=(2, 8)).astype(np.float32)
    head, ckpt = make()
    for _ in range(7):
        _sphereface_step(head, emb, np.array([0, 1]))
    ckpt.save(7)
    want_next = _sphereface_step(head, emb, np.array([0, 1]))
    fresh, ckpt2 = make()
    assert ckpt2.restore(log=lambda *_: None) == 7 and float(fresh.iteration.numpy()) == 7
    np.testing.assert_array_equal(_sphereface_step(fresh, emb, np.array([0, 1])), want_next)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_focal_gradient_is_finite_where_cross_entropy_is_zero(gamma):
    """logits [[100, 0, 0]], label 0: CE is exactly 0 in float32; γ < 1 once gave NaN gradients."""
    x = tf.constant([[100.0, 0.0, 0.0], [1.0, 2.0, 0.5]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = margin_softmax_loss(tf.constant([0, 0]), x, focal_gamma=gamma)
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad)), (gamma, grad)
    # The second example's gradient against the closed form of d[(1 − p)^γ·CE]/d logits.
    z = np.array([1.0, 2.0, 0.5])
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    ce = -np.log(p[0])
    dl_dce = (1 - p[0]) ** gamma + (gamma * (1 - p[0]) ** (gamma - 1) * p[0] * ce if gamma else 0.0)
    np.testing.assert_allclose(grad[1], dl_dce * (p - np.eye(3)[0]) / 2, rtol=1e-5)
    np.testing.assert_allclose(grad[0], 0.0, atol=1e-30)


def test_focal_refuses_negative_gamma():
    with pytest.raises(ValueError, match="--focal.*>= 0"):
        margin_softmax_loss(tf.constant([0]), tf.constant([[1.0, 0.0]]), focal_gamma=-0.5)
    from training.config import resolve_config
    with pytest.raises(ValueError, match="--focal.*>= 0"):
        resolve_config({"data": "x", "focal": -1.0})


def test_plot_margins_draws_the_embeddings_and_centres_it_is_given():
    """The plotted values themselves: each point at its embedding's direction (radius in [0.88, 1]),
    each centre line from 0 along the unit centre to 1.15, one panel per head titled with its options."""
    from losses import plot_margins
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(10), 3)
    emb = rng.normal(size=(30, 2)) * 4
    centres = rng.normal(size=(10, 2))
    fig = plot_margins.draw_panels({"softmax": ({}, emb, None), "arcface": ({"s": 10.0, "m": 0.2}, emb, centres)}, y)
    soft, arc = fig.axes
    assert soft.get_title() == "softmax\nno margin" and arc.get_title() == "arcface\ns=10, m=0.2"
    assert not soft.lines and len(arc.lines) == 10
    unit_c = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    for line, c in zip(arc.lines, unit_c):
        np.testing.assert_allclose(np.stack(line.get_data(), axis=1), [[0, 0], 1.15 * c], atol=1e-12)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for ax in (soft, arc):
        points = np.concatenate([c.get_offsets() for c in ax.collections])   # class by class
        order = np.concatenate([np.flatnonzero(y == k) for k in range(10)])
        r = np.linalg.norm(points, axis=1)
        assert np.all((r >= 0.88 - 1e-9) & (r <= 1 + 1e-9))
        np.testing.assert_allclose(points / r[:, None], unit[order], atol=1e-9)


@pytest.mark.slow
def test_plot_margins_draws_every_head(tmp_path):
    """python -m losses.plot_margins: one panel per head, a PNG (one epoch here; the README's figure
    is the default 60)."""
    from losses import plot_margins
    out = tmp_path / "margins.png"
    assert plot_margins.main(["--output", str(out), "--epochs", "1"]) == 0
    assert out.stat().st_size > 20_000
    assert set(plot_margins.PLOT_HEADS) == {"softmax", "am_softmax", "arcface", "sphereface", "combined"}
