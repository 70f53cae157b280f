"""Partial FC: RATE = 1 is the full head (loss, gradients, whole training runs), the sample holds
every positive and changes each step, unsampled centres stay put, and a sampled run resumes exactly."""

import numpy as np
import pytest
import tensorflow as tf

from losses.heads import build_head
from losses.loss import margin_softmax_loss
from losses.partial_fc import PartialFCHead, build_partial_fc_head
from training.config import resolve_config
from training.partial_fc import head_memory_line, sample_centres, sparse_sgd_update
from training.run_dir import new_run_dir
from training.trainer import run_training

TINY = {"backbone": "mobilefacenet", "image_size": "32x32", "embedding_size": 32, "batch_size": 4,
        "num_classes": 10, "synthetic_images": 64, "log_every": 1, "exports": "keras"}


def _heads(name, num_classes=12, dim=8, seed=0):
    """The full head and its Partial FC twin (rate 1) holding the same centres."""
    full = build_head(name, num_classes)
    full.build((None, dim))
    partial = build_partial_fc_head(name, num_classes, 1.0)
    partial.build((None, dim))
    centres = np.random.default_rng(seed).normal(size=(dim, num_classes)).astype("float32")
    full.kernel.assign(centres)
    partial.kernel.assign(centres.T)
    return full, partial


@pytest.mark.parametrize("name", ["am_softmax", "arcface"])
def test_rate_one_equals_the_full_head_loss_and_gradients(name):
    full, partial = _heads(name)
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(6, 8)).astype("float32"))
    labels = tf.constant([0, 3, 3, 7, 11, 5])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        full_loss = margin_softmax_loss(labels, full(x, labels))
        index, local = sample_centres(labels, 12, 12, seed=0, step=0)
        centres = tf.gather(partial.kernel, index)
        tape.watch(centres)
        partial_loss = margin_softmax_loss(local, partial.sampled_logits(x, centres, local))
    np.testing.assert_allclose(float(partial_loss), float(full_loss), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(partial_loss, x), tape.gradient(full_loss, x), atol=1e-6)
    # the full head's kernel is [D, C]; the sampled rows [K, D] come back in class order (index = 0..C-1)
    np.testing.assert_allclose(tape.gradient(partial_loss, centres),
                               tf.transpose(tape.gradient(full_loss, full.kernel)), atol=1e-6)


def test_sample_holds_every_positive_and_changes_each_step():
    labels = tf.constant([5, 5, 99_990, 12_345, 0, 77])
    samples = []
    for step in range(3):
        index, local = sample_centres(labels, 100_000, 1_000, seed=7, step=step)
        index = index.numpy()
        assert index.shape == (1_000,) and len(set(index)) == 1_000 and np.all(np.diff(index) > 0)
        np.testing.assert_array_equal(index[local.numpy()], labels.numpy())
        samples.append(set(index))
    assert len(samples[0] & samples[1]) < 100   # ~10 expected by chance, plus the 5 positives
    again, _ = sample_centres(labels, 100_000, 1_000, seed=7, step=1)
    assert set(again.numpy()) == samples[1]      # a pure function of (seed, step): resumes draw the same
    # negatives spread over the whole range (uniform, not the first K)
    negatives = np.array(sorted(samples[0] - set(labels.numpy())))
    assert negatives.min() < 5_000 and negatives.max() > 95_000


def test_sparse_update_is_keras_sgd_on_sampled_rows_and_leaves_the_rest():
    head = build_partial_fc_head("am_softmax", 6, 0.5)
    head.build((None, 3))
    rng = np.random.default_rng(0)
    kernel, slots = rng.normal(size=(6, 3)).astype("float32"), rng.normal(size=(6, 3)).astype("float32")
    head.kernel.assign(kernel)
    head.momentum.assign(slots)
    index = tf.constant([1, 4])
    grad = rng.normal(size=(2, 3)).astype("float32")
    sparse_sgd_update(head, index, grad, lr=0.1, momentum=0.9, weight_decay=5e-4)
    velocity = 0.9 * slots[[1, 4]] - 0.1 * (grad + 5e-4 * kernel[[1, 4]])
    np.testing.assert_allclose(head.momentum.numpy()[[1, 4]], velocity, rtol=1e-6)
    np.testing.assert_allclose(head.kernel.numpy()[[1, 4]], kernel[[1, 4]] + velocity, rtol=1e-6)
    untouched = [0, 2, 3, 5]
    np.testing.assert_array_equal(head.kernel.numpy()[untouched], kernel[untouched])
    np.testing.assert_array_equal(head.momentum.numpy()[untouched], slots[untouched])


def _losses_and_weights(run_dir, summary):
    import json

    import keras
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    model = keras.saving.load_model(summary["exports"]["keras"], safe_mode=True)
    return {e["step"]: e["loss"] for e in log if "loss" in e}, model.get_weights()


def test_training_at_rate_one_equals_the_full_head(tmp_path, monkeypatch):
    """Four SGD steps (momentum, a strong weight decay, an lr drop): the same losses and backbone weights.
    ResFace20 without batch norm: MobileFaceNet's batch-4 statistics amplify float32 rounding (two
    matmul layouts) chaotically, as much as a 1e-5 change of the lr does."""
    common = {**TINY, "backbone": "resface20", "backbone_options": {"batch_norm": False}, "max_steps": 4,
              "lr_schedule": "0:0.01,2:0.005", "weight_decay": 0.05, "checkpoint_every": 4}
    # Start from the full head's very centres: its seeded [D, C] draw, transposed.
    import keras
    monkeypatch.setattr(PartialFCHead, "initial_centres", staticmethod(
        lambda shape, dtype=None: keras.ops.transpose(
            keras.initializers.RandomNormal(stddev=0.01)((shape[1], shape[0]), dtype))))
    runs = {}
    for name, extra in (("full", {}), ("partial", {"partial_fc": 1.0})):
        run = new_run_dir(tmp_path / name, "m", "l")
        summary = run_training(resolve_config({**common, **extra}), run, log=lambda *_: None)
        runs[name] = _losses_and_weights(run, summary)
    np.testing.assert_allclose(list(runs["partial"][0].values()), list(runs["full"][0].values()), rtol=1e-5)
    for a, b in zip(runs["partial"][1], runs["full"][1]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_sampled_run_resumes_exactly_and_logs_the_head_memory(tmp_path):
    common = {**TINY, "num_classes": 40, "partial_fc": 0.2, "lr_schedule": "constant", "lr": 0.1,
              "checkpoint_every": 2}
    lines = []
    straight = new_run_dir(tmp_path / "straight", "m", "l")
    run_training(resolve_config({**common, "max_steps": 4}), straight, log=lines.append)
    split = new_run_dir(tmp_path / "split", "m", "l")
    run_training(resolve_config({**common, "max_steps": 2}), split, log=lambda *_: None)
    run_training(resolve_config({**common, "max_steps": 4, "resume": True}), split, log=lambda *_: None)
    a = _losses_and_weights(straight, {"exports": {"keras": straight / "export" / "embedding.keras"}})
    b = _losses_and_weights(split, {"exports": {"keras": split / "export" / "embedding.keras"}})
    np.testing.assert_allclose([b[0][s] for s in (3, 4)], [a[0][s] for s in (3, 4)], rtol=1e-5)
    assert any(line.startswith("partial FC: 8 of 40 centres per step") for line in lines), lines


def test_head_memory_line_states_centres_momentum_and_logits():
    line = head_memory_line(10_000_000, 128, 128, 1_000_000)
    assert line.startswith("partial FC: 1,000,000 of 10,000,000 centres per step; centres 5.12 GB, momentum 5.12 GB")
    assert "logits per step 1.54 GB" in line
    assert head_memory_line(1000, 512, 64).startswith("full head: 1,000 centres; centres 0.00205 GB")


def test_partial_fc_settings_are_refused_in_one_line():
    for values, message in (({"partial_fc": 0.0}, r"\(0, 1\]"), ({"partial_fc": 1.5}, r"\(0, 1\]"),
                            ({"partial_fc": 0.1, "loss": "softmax"}, "needs a margin head"),
                            ({"partial_fc": 0.1, "strategy": "mirrored"}, "one device"),
                            ({"partial_fc": 0.1, "clip_grad_norm": 1.0}, "clip-grad-norm"),
                            ({"partial_fc": 0.1, "mixed_precision": "float16"}, "float16")):
        with pytest.raises(ValueError, match=message):
            resolve_config({**TINY, **values})
    saved = resolve_config({**TINY}).__dict__
    with pytest.raises(ValueError, match="--resume cannot change partial_fc"):
        resolve_config({"partial_fc": 0.1}, base=saved)


def test_heads_with_state_or_sub_centres_are_refused_by_name():
    from losses.partial_fc import partial_fc_heads
    supported = partial_fc_heads()
    assert {"am_softmax", "cosface", "arcface", "combined", "magface"} <= set(supported)
    assert not {"softmax", "sphereface", "curricularface", "adaface", "subcenter_arcface"} & set(supported)
    with pytest.raises(ValueError, match="--loss curricularface is not one of them"):
        build_partial_fc_head("curricularface", 100, 0.1)
