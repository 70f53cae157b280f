"""The heads of 2020-2022 (CurricularFace, AdaFace, MagFace, Sub-center ArcFace, ElasticFace) against plainly
written numpy versions of their reference code; reductions to their parent heads; head state that resumes."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from losses import margins
from losses.heads import build_head
from losses.loss import margin_softmax_loss

S = 64.0


def _thetas(rng):
    return np.concatenate([[0.0, 1e-3, 1e-2], rng.uniform(0.1, math.pi - 0.1, 30),
                           [math.pi - 1e-2, math.pi - 1e-3, math.pi]])


def _batch(seed=0, classes=5):
    """cos [B, C] (true class 0 spanning θ from 0 to π, the others anything), one_hot, norms [B, 1]."""
    rng = np.random.default_rng(seed)
    theta = _thetas(rng)
    cos = np.empty((len(theta), classes), np.float32)
    cos[:, 0] = np.cos(theta)
    cos[:, 1:] = rng.uniform(-1, 1, (len(theta), classes - 1))
    one_hot = np.zeros_like(cos)
    one_hot[:, 0] = 1
    norms = rng.uniform(1, 130, (len(theta), 1)).astype(np.float32)
    return cos, one_hot, norms


def _tol(cos):
    """float32 conditioning: sin θ = sqrt(1 − cos²) from a float32 cos carries ~6e-8/sin θ absolute error."""
    sin = np.sqrt(np.maximum(1 - cos.astype(np.float64) ** 2, 1e-14))
    return 1e-6 + 6e-8 / sin


def _np_sin(c):
    return np.sqrt(np.clip(1 - c ** 2, 1e-7, 1))


# -- the reference formulas, in numpy (float64 from the same float32 cosines) -------------------------

def np_curricularface(cos, one_hot, t, m=0.5, s=S):
    c = cos.astype(np.float64)
    target = (c * one_hot).sum(1, keepdims=True)
    cos_theta_m = target * math.cos(m) - _np_sin(target) * math.sin(m)
    final_target = np.where(target > math.cos(math.pi - m), cos_theta_m, target - math.sin(math.pi - m) * m)
    out = np.where(c > cos_theta_m, c * (t + c), c)             # hard negatives re-weighted
    return s * np.where(one_hot == 1, final_target, out)


def np_adaface(cos, one_hot, norms, mean, std, m=0.4, h=0.333, s=S):
    eps = 1e-3
    safe = np.clip(norms.astype(np.float64), 0.001, 100)
    scaler = np.clip(h * (safe - mean) / (std + eps), -1, 1)
    theta = np.arccos(np.clip(cos.astype(np.float64), -1 + eps, 1 - eps))
    theta_m = np.clip(theta + one_hot * (-m * scaler), eps, math.pi - eps)
    return s * (np.cos(theta_m) - one_hot * (m + m * scaler))


def np_magface(cos, one_hot, norms, easy_margin=True, l_a=10, u_a=110, l_m=0.45, u_m=0.8, s=S):
    c = cos.astype(np.float64)
    a = np.clip(norms.astype(np.float64), l_a, u_a)
    margin = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    phi = c * np.cos(margin) - _np_sin(c) * np.sin(margin)
    if easy_margin:
        phi = np.where(c > 0, phi, c)
    else:
        phi = np.where(c > np.cos(math.pi - margin), phi, c - np.sin(math.pi - margin) * margin)
    return s * np.where(one_hot == 1, phi, c)


def np_magface_g(norms, l_a=10, u_a=110):
    a = np.clip(norms.astype(np.float64), l_a, u_a)
    return np.mean(a / u_a ** 2 + 1 / a)


def np_arcface(cos, one_hot, m=0.5, s=S):
    return np_magface(cos, one_hot, np.full((len(cos), 1), 10.0), easy_margin=False, l_m=m, u_m=m, s=s)


def np_cross_entropy(logits, labels):
    z = logits - logits.max(1, keepdims=True)
    return np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels])


def _keras(fn, *arrays, **kw):
    return keras.ops.convert_to_numpy(fn(*[tf.constant(a) for a in arrays], **kw))


# -- margin functions against the formulas -------------------------------------------------------------

def _assert_logits(got, want, cos, one_hot):
    """Per element |got − want|/s within float32 conditioning of the true class's cosine."""
    tol = np.where(one_hot == 1, _tol(cos), 1e-6)
    err = np.abs(got - want) / S
    assert np.all(err <= tol), f"max excess {np.max(err - tol):.3g}"


@pytest.mark.parametrize("t", [0.0, 0.3, 0.9])
def test_curricularface_logits_match_the_reference(t):
    cos, one_hot, _ = _batch(1)
    got = _keras(margins.curricularface_logits, cos, one_hot, s=S, m=0.5, t=np.float32(t))
    _assert_logits(got, np_curricularface(cos, one_hot, t), cos, one_hot)


@pytest.mark.parametrize("mean,std", [(20.0, 100.0), (30.0, 5.0)])
def test_adaface_logits_match_the_reference(mean, std):
    cos, one_hot, norms = _batch(2)
    got = _keras(margins.adaface_logits, cos, one_hot, norms, s=S, m=0.4, h=0.333, batch_mean=np.float32(mean),
                 batch_std=np.float32(std))
    # acos is used here, as in the reference, on cosines clipped to ±(1 − 0.001): conditioning ≤ 1/sin(0.045).
    np.testing.assert_allclose(got / S, np_adaface(cos, one_hot, norms, mean, std) / S, atol=3e-6)


@pytest.mark.parametrize("easy_margin", [True, False])
def test_magface_logits_and_regulariser_match_the_reference(easy_margin):
    cos, one_hot, norms = _batch(3)
    got = _keras(margins.magface_logits, cos, one_hot, norms, s=S, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8,
                 easy_margin=easy_margin)
    _assert_logits(got, np_magface(cos, one_hot, norms, easy_margin), cos, one_hot)
    g = float(_keras(margins.magface_regularizer, norms, l_a=10.0, u_a=110.0))
    np.testing.assert_allclose(g, np_magface_g(norms), rtol=1e-6)


def test_elasticface_logits_match_the_reference_for_given_margins():
    cos, one_hot, _ = _batch(4)
    m_i = np.random.default_rng(4).normal(0.5, 0.05, (len(cos), 1)).astype(np.float32)
    c = cos.astype(np.float64)
    # The reference: θ = acos(cos), θ_y += m_i, s·cos θ (here via the identity, no acos).
    want_arc = S * np.where(one_hot == 1, np.cos(np.arccos(c) + m_i), c)
    _assert_logits(_keras(margins.elastic_arc_logits, cos, one_hot, m_i, s=S), want_arc, cos, one_hot)
    want_cos = S * (c - one_hot * m_i)
    np.testing.assert_allclose(_keras(margins.elastic_cos_logits, cos, one_hot, m_i, s=S) / S, want_cos / S,
                               atol=1e-6)


# -- whole heads: cosines and norms from embeddings, state updates, the loss ------------------------------

def _head(name, num_classes=5, dim=8, seed=0, **options):
    head = build_head(name, num_classes, **options)
    head.build((None, dim))
    rng = np.random.default_rng(seed)
    head.kernel.assign(rng.normal(size=tuple(head.kernel.shape)).astype(np.float32))
    return head


def _embeddings(seed=0, batch=12, dim=8):
    rng = np.random.default_rng(seed)
    # norms from ~2 to ~120, so AdaFace's and MagFace's norm terms are exercised on both sides
    return (rng.normal(size=(batch, dim)) * rng.uniform(0.3, 40, (batch, 1))).astype(np.float32)


def _np_cos_norm(emb, kernel):
    e = emb.astype(np.float64)
    w = kernel.astype(np.float64)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    cos = (e / norms) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    return cos, norms


@pytest.mark.parametrize("name", ["curricularface", "adaface", "magface", "subcenter_arcface"])
def test_head_logits_state_and_loss_match_numpy(name):
    """Two training passes through each whole head: logits, the state update it makes before using its
    state (as the references do), and the cross-entropy (+ MagFace's λ_g·g) against numpy."""
    emb = _embeddings(5)
    labels = np.random.default_rng(6).integers(0, 5, len(emb))
    head = _head(name)
    one_hot = np.eye(5)[labels]
    t, mean, std = 0.0, 20.0, 100.0
    for _ in range(2):
        kernel = keras.ops.convert_to_numpy(head.kernel)
        cos, norms = _np_cos_norm(emb, kernel)
        if name == "curricularface":
            t = 0.01 * (cos * one_hot).sum(1).mean() + 0.99 * t
            want = np_curricularface(cos, one_hot, t)
        elif name == "adaface":
            safe = np.clip(norms, 0.001, 100)
            mean = 0.01 * safe.mean() + 0.99 * mean
            std = 0.01 * safe.std(ddof=1) + 0.99 * std
            want = np_adaface(cos, one_hot, norms, mean, std)
        elif name == "magface":
            want = np_magface(cos, one_hot, norms)
        else:
            want = np_arcface(cos.reshape(len(emb), 5, 3).max(-1), one_hot)
        logits = head(tf.constant(emb), tf.constant(labels))
        got = keras.ops.convert_to_numpy(logits)
        cos_true = (cos.reshape(len(emb), 5, -1).max(-1) * one_hot).sum(1, keepdims=True)
        np.testing.assert_allclose(got / S, want / S, atol=float(np.max(_tol(cos_true))) + 2e-6)
        loss = float(margin_softmax_loss(labels, logits) + head.auxiliary_loss(tf.constant(emb)))
        want_loss = np_cross_entropy(want, labels) + (35 * np_magface_g(norms) if name == "magface" else 0)
        np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    if name == "curricularface":
        np.testing.assert_allclose(float(head.t), t, rtol=1e-6)
    if name == "adaface":
        np.testing.assert_allclose([float(head.batch_mean), float(head.batch_std)], [mean, std], rtol=1e-6)


def test_elasticface_draws_margins_from_the_normal_and_plus_gives_hard_examples_the_largest():
    emb = _embeddings(7, batch=512)
    labels = np.random.default_rng(7).integers(0, 5, 512)
    keras.utils.set_random_seed(0)
    head = _head("elasticface_cos", m=0.35, std=0.05)
    cos = keras.ops.convert_to_numpy(head.cosine(tf.constant(emb)))
    one_hot = np.eye(5)[labels]
    got = keras.ops.convert_to_numpy(head(tf.constant(emb), tf.constant(labels)))
    drawn = ((S * cos - got) / S * one_hot).sum(1)                 # each example's m_i
    assert abs(drawn.mean() - 0.35) < 4 * 0.05 / math.sqrt(512) and abs(drawn.std() - 0.05) < 0.006
    np.testing.assert_allclose(got[one_hot == 0], S * cos[one_hot == 0], rtol=1e-6)
    plus = _head("elasticface_cos_plus")
    cos = keras.ops.convert_to_numpy(plus.cosine(tf.constant(emb)))
    got = keras.ops.convert_to_numpy(plus(tf.constant(emb), tf.constant(labels)))
    target = (cos * one_hot).sum(1)
    drawn = ((S * cos - got) / S * one_hot).sum(1)
    order = np.argsort(target)                                     # hardest (lowest target cosine) first
    assert np.all(np.diff(drawn[order]) <= 1e-5), "a harder example got a smaller margin"
    assert abs(drawn.std() - 0.02) < 0.003


# -- reductions to the parent heads --------------------------------------------------------------------

def test_reductions_to_the_parent_heads():
    cos, one_hot, norms = _batch(8)
    arc = _keras(margins.arcface_logits, cos, one_hot, s=S, m=0.5)
    # CurricularFace: where every negative is easy (cos θ_j ≤ cos(θ_y + m)), any t gives ArcFace.
    easy = cos.copy()
    target_m = np.cos(np.arccos(cos[:, :1].astype(np.float64)) + 0.5)
    easy[:, 1:] = np.minimum(cos[:, 1:], target_m - 0.01).clip(-1, 1)
    for t in (0.0, 0.5):
        np.testing.assert_allclose(_keras(margins.curricularface_logits, easy, one_hot, s=S, m=0.5, t=np.float32(t)),
                                   _keras(margins.arcface_logits, easy, one_hot, s=S, m=0.5), rtol=1e-6, atol=1e-5)
    # MagFace with l_m = u_m = m and no easy margin is ArcFace; with easy_margin, ArcFace's easy margin.
    for easy_margin in (False, True):
        got = _keras(margins.magface_logits, cos, one_hot, norms, s=S, l_a=10.0, u_a=110.0, l_m=0.5, u_m=0.5,
                     easy_margin=easy_margin)
        want = _keras(margins.arcface_logits, cos, one_hot, s=S, m=0.5, easy_margin=easy_margin)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    # AdaFace: a norm at the batch mean is CosFace; a norm h·σ below it (ẑ = −1) is ArcFace without fallback,
    # both on the cosines clipped to ±(1 − 0.001) as in the reference.
    clipped = np.clip(cos, -1 + 1e-3, 1 - 1e-3)
    at_mean = _keras(margins.adaface_logits, cos, one_hot, np.full_like(norms, 30.0), s=S, m=0.4, h=0.333,
                     batch_mean=np.float32(30.0), batch_std=np.float32(5.0))
    np.testing.assert_allclose(at_mean, _keras(margins.am_softmax_logits, clipped, one_hot, s=S, m=0.4), atol=2e-4)
    low = _keras(margins.adaface_logits, cos, one_hot, np.full_like(norms, 1.0), s=S, m=0.4, h=0.333,
                 batch_mean=np.float32(30.0), batch_std=np.float32(5.0))
    theta = np.arccos(clipped[:, 0].astype(np.float64))
    normal = theta + 0.4 <= math.pi - 1e-3
    np.testing.assert_allclose(low[normal, 0], S * np.cos(theta[normal] + 0.4), atol=2e-4)
    # ElasticFace with σ = 0 is ArcFace where θ + m ≤ π (ArcFace adds its fallback beyond) and CosFace.
    zero = np.full((len(cos), 1), 0.5, np.float32)
    normal = np.arccos(cos[:, 0].astype(np.float64)) + 0.5 <= math.pi
    np.testing.assert_allclose(_keras(margins.elastic_arc_logits, cos, one_hot, zero, s=S)[normal], arc[normal],
                               rtol=1e-6, atol=1e-5)
    emb = _embeddings(9)
    labels = np.arange(len(emb)) % 5
    elastic = _head("elasticface_cos", std=0.0)
    cosface = _head("cosface")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(elastic(tf.constant(emb), tf.constant(labels))),
                               keras.ops.convert_to_numpy(cosface(tf.constant(emb), tf.constant(labels))), rtol=1e-6)
    # Sub-center ArcFace with k = 1 is ArcFace.
    sub = _head("subcenter_arcface", k=1)
    arcface = _head("arcface")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sub(tf.constant(emb), tf.constant(labels))),
                               keras.ops.convert_to_numpy(arcface(tf.constant(emb), tf.constant(labels))), rtol=1e-6)


def test_subcenter_drop_keeps_each_class_its_dominant_sub_centre():
    """Before drop_step every sub-centre takes part (max over k); from it on, only the one that won most
    examples, for the training logits and the scores alike."""
    emb = _embeddings(10, batch=40)
    labels = np.arange(40) % 5
    head = _head("subcenter_arcface", drop_step=2)
    sub = keras.ops.convert_to_numpy(head.sub_center_cosines(tf.constant(emb)))        # [B, C, k]
    own = sub[np.arange(40), labels]                                                     # [B, k]
    want_counts = np.zeros((5, 3))
    np.add.at(want_counts, (labels, own.argmax(1)), 1)
    head(tf.constant(emb), tf.constant(labels))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head.counts), want_counts)
    dominant = want_counts.argmax(1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head.cosine(tf.constant(emb))), sub.max(-1), rtol=1e-6)
    logits = keras.ops.convert_to_numpy(head(tf.constant(emb), tf.constant(labels)))    # pass 2: dropping
    one_hot = np.eye(5)[labels]
    np.testing.assert_allclose(logits / S, np_arcface(sub[:, np.arange(5), dominant], one_hot) / S, atol=2e-6)
    head(tf.constant(emb), tf.constant(labels))                                          # counts frozen
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(head.counts), want_counts)
    cos = keras.ops.convert_to_numpy(head.cosine(tf.constant(emb)))
    np.testing.assert_allclose(cos, sub[:, np.arange(5), dominant], rtol=1e-6)


# -- gradients at the edges ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["curricularface", "adaface", "magface", "subcenter_arcface", "elasticface_arc",
                                  "elasticface_arc_plus", "elasticface_cos", "elasticface_cos_plus", "sphereface"])
def test_gradients_are_finite_at_theta_zero_and_pi(name):
    """Embeddings exactly on (θ = 0) and opposite (θ = π) their class centre, norms 0.5 and 200."""
    head = _head(name, num_classes=3, dim=4)
    kernel = np.eye(4, 3 * getattr(head, "centres_per_class", 1), dtype=np.float32)
    head.kernel.assign(kernel)
    emb = tf.constant(np.array([[0.5, 0, 0, 0], [-200.0, 0, 0, 0], [0, 3.0, 0, 0]], np.float32))
    labels = tf.constant([0, 0, 1])
    with tf.GradientTape() as tape:
        tape.watch(emb)
        loss = margin_softmax_loss(labels, head(emb, labels)) + head.auxiliary_loss(emb)
    grads = tape.gradient(loss, [emb, head.kernel])
    assert np.isfinite(float(loss)) and all(np.all(np.isfinite(g.numpy())) for g in grads), name


# -- state checkpoints and resumes exactly -------------------------------------------------------------

@pytest.mark.parametrize("name,options", [("sphereface", {}), ("curricularface", {}), ("adaface", {}),
                                          ("subcenter_arcface", {"drop_step": 3}), ("elasticface_arc_plus", {})])
def test_head_state_resumes_exactly(name, options, tmp_path):
    """RunCheckpoints (tf.train.Checkpoint) saves the head's non-trainable state; a restored head's next
    pass equals the uninterrupted one's, bit for bit."""
    from training.checkpoints import RunCheckpoints

    class NoGuard:
        def check_finite(self, step, variables):
            pass

    def make(seed):
        keras.utils.set_random_seed(seed)   # the restore must bring back the head's state, not the seed
        head = _head(name, seed=seed, **options)
        backbone = keras.Sequential([keras.layers.Dense(8)])
        backbone.build((None, 4))
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(head.trainable_variables)
        checkpoints = RunCheckpoints(tmp_path, tf.distribute.get_strategy(), True, NoGuard(), backbone, head,
                                     optimizer)
        return head, checkpoints

    emb, labels = tf.constant(_embeddings(11)), tf.constant(np.arange(12) % 5)
    head, checkpoints = make(0)
    assert head.non_trainable_variables, f"{name} has no state to resume"
    for _ in range(4):
        head(emb, labels)
    checkpoints.save(4)
    want = keras.ops.convert_to_numpy(head(emb, labels))
    fresh, restored = make(1)
    assert restored.restore(log=lambda *_: None) == 4
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fresh(emb, labels)), want)
    for a, b in zip(head.non_trainable_variables, fresh.non_trainable_variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_new_heads_from_flags_and_config_files(tmp_path):
    """--loss NAME with its option flags, and head_options: in a config file, reach build_head checked."""
    from training.config import resolve_config
    cfg = tmp_path / "c.yaml"
    cfg.write_text("loss: subcenter_arcface\nhead_options: {k: 2}\ndrop_step: 100\n")
    config = resolve_config({"data": "x"}, cfg)
    head = build_head(config.loss, 3, **config.head_options)
    assert head.margin_args == {"s": 64.0, "m": 0.5, "k": 2, "drop_step": 100}
    config = resolve_config({"data": "x", "loss": "adaface", "h": 0.5})
    assert build_head(config.loss, 3, **config.head_options).margin_args == {
        "s": 64.0, "m": 0.4, "h": 0.5, "t_alpha": 0.01}
    with pytest.raises(ValueError, match="--t-alpha of --loss curricularface must be a number in"):
        resolve_config({"data": "x", "loss": "curricularface", "t_alpha": 2.0})
    with pytest.raises(ValueError, match=r"--loss magface takes .* not \['k'\]"):
        resolve_config({"data": "x", "loss": "magface", "k": 3})


@pytest.mark.parametrize("loss", ["adaface"])   # ~25 s; the others: test_head_state_resumes_exactly
def test_training_with_a_stateful_head_resumes_exactly(loss, tmp_path):
    """train.py's loop: 6 steps straight == 3 steps, checkpoint, a new state, resume to 6 (the head's
    moving averages / λ counter come back from the checkpoint)."""
    from training.config import resolve_config
    from training.run_dir import new_run_dir
    from training.trainer import run_training
    tiny = {"backbone": "mobilefacenet", "image_size": "32x32", "embedding_size": 16, "batch_size": 4,
            "num_classes": 6, "synthetic_images": 32, "log_every": 1, "exports": "keras", "loss": loss,
            "lr_schedule": "constant", "lr": 0.05, "checkpoint_every": 3, "val_every": 100}
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_training(resolve_config({**tiny, "max_steps": 6}), new_run_dir(straight, "m", "l"),
                          log=lambda *_: None)
    run_training(resolve_config({**tiny, "max_steps": 3}), new_run_dir(split, "m", "l"),
                          log=lambda *_: None)
    run_training(resolve_config({**tiny, "max_steps": 6, "resume": True}), split, log=lambda *_: None)

    def losses_of(run):
        lines = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
        return {e["step"]: e["loss"] for e in lines if "loss" in e}

    a, b = losses_of(straight), losses_of(split)
    np.testing.assert_allclose([b[s] for s in (4, 5, 6)], [a[s] for s in (4, 5, 6)], rtol=1e-5)
    names = [name for name, _ in tf.train.list_variables(tf.train.latest_checkpoint(str(split / "checkpoints")))]
    state = {"adaface": "batch_mean", "sphereface": "iteration"}[loss]
    assert any(f"head/{state}" in n for n in names), names
