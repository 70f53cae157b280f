"""Partial FC: RATE = 1 is the full head (loss, gradients, whole training runs), the sample holds
every positive and changes each step, unsampled centres stay put, and a sampled run resumes exactly."""

import json
import subprocess
import sys
from pathlib import Path

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


def test_initial_centres_are_the_same_rows_on_one_device_and_in_every_sharding(monkeypatch):
    """The start is a function of (seed, C) alone: a built head's centres, any shard's rows drawn
    as one tensor, and the blocks training writes in place into a shard's variable are the same
    rows of one N(0, 0.01) matrix (blocks of 4 rows here, so that shards straddle them)."""
    import keras

    import losses.partial_fc
    from training.partial_fc import fill_initial_centres
    from training.partial_fc_sharded import shard_bounds
    monkeypatch.setattr(losses.partial_fc, "CENTRE_BLOCK_ROWS", 4)   # 11 classes: blocks of 4, 4 and 3
    keras.utils.set_random_seed(3)
    built = PartialFCHead(11, "am_softmax")
    built.build((None, 64))
    whole = built.kernel.numpy()
    assert abs(whole.std() - 0.01) < 0.001 and abs(whole.mean()) < 0.001
    assert not np.allclose(whole[:4], whole[4:8])   # each block drawn from its own seed
    keras.utils.set_random_seed(3)
    sharded = build_partial_fc_head("am_softmax", 11, 0.5, holds_centres=False)
    assert sharded.centre_seed == built.centre_seed
    for replicas in (1, 2, 3):
        for start, size in shard_bounds(11, replicas):
            np.testing.assert_array_equal(sharded.initial_centre_rows(start, size, 64), whole[start:start + size])
            piece = tf.Variable(tf.zeros((size, 64)))
            fill_initial_centres(piece, sharded, start)
            np.testing.assert_array_equal(piece.numpy(), whole[start:start + size])
    keras.utils.set_random_seed(4)
    assert not np.allclose(PartialFCHead(11, "am_softmax").initial_centre_rows(0, 11, 64), whole)


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

    import training.state
    monkeypatch.setattr(training.state, "fill_initial_centres", lambda variable, head: variable.assign(
        keras.ops.transpose(keras.initializers.RandomNormal(stddev=0.01, seed=head.centre_seed)(variable.shape[::-1]))))
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


def test_every_shard_samples_its_positives_and_its_own_negatives():
    """Shards of 100,003 classes over 3 replicas (sizes 33,335 / 33,334 / 33,334): each shard's sample
    holds every label of the gathered batch that falls in it, maps it back exactly, marks the others
    -1, and draws negatives of its own."""
    from training.partial_fc_sharded import shard_bounds, shard_num_sample
    bounds = shard_bounds(100_003, 3)
    assert bounds == [(0, 33_335), (33_335, 33_334), (66_669, 33_334)]
    labels = tf.constant([5, 5, 33_334, 33_335, 66_668, 66_669, 100_002, 70_000])
    for step in range(2):
        for shard, (start, size) in enumerate(bounds):
            k = shard_num_sample(size, 0.1, 8)
            index, local = sample_centres(labels - start, size, k, seed=3, step=step, shard=shard)
            index, local = index.numpy(), local.numpy()
            assert k == 3_334 and index.shape == (k,) and np.all(np.diff(index) > 0) and index.max() < size
            mine = (labels.numpy() >= start) & (labels.numpy() < start + size)
            np.testing.assert_array_equal(index[local[mine]] + start, labels.numpy()[mine])
            assert np.all(local[~mine] == -1)
    shard0, _ = sample_centres(labels, 33_335, 3_334, seed=3, step=0)
    shard1, _ = sample_centres(labels - 33_335, 33_334, 3_334, seed=3, step=0, shard=1)
    assert len(set(shard0.numpy()) & set(shard1.numpy())) < 1_000   # ~333 by chance: not the same draw


def test_sharded_memory_line_states_each_replicas_share():
    from training.partial_fc_sharded import sharded_memory_line
    line = sharded_memory_line(10_000_000, 128, 8 * 128, 0.1, 8)
    assert line.startswith("partial FC sharded over 8 replicas: 1,250,000 of 10,000,000 centres per replica, "
                           "125,000 sampled per step; per replica: centres 0.64 GB, momentum 0.64 GB, "
                           "logits per step 1.54 GB"), line


def test_head_memory_line_states_centres_momentum_and_logits():
    line = head_memory_line(10_000_000, 128, 128, 1_000_000)
    assert line.startswith("partial FC: 1,000,000 of 10,000,000 centres per step; centres 5.12 GB, momentum 5.12 GB")
    assert "logits per step 1.54 GB" in line
    assert head_memory_line(1000, 512, 64).startswith("full head: 1,000 centres; centres 0.00205 GB")


def test_partial_fc_settings_are_refused_in_one_line():
    for values, message in (({"partial_fc": 0.0}, r"\(0, 1\]"), ({"partial_fc": 1.5}, r"\(0, 1\]"),
                            ({"partial_fc": 0.1, "loss": "softmax"}, "--loss softmax is not one of them"),
                            ({"partial_fc": 0.1, "strategy": "mirrored", "singletons": "negatives"},
                             "--strategy mirrored does not support --singletons negatives"),
                            ({"partial_fc": 0.1, "strategy": "multiworker", "singletons": "negatives"},
                             "--strategy multiworker does not support --singletons negatives"),
                            ({"partial_fc": 0.1, "clip_grad_norm": 1.0}, "clip-grad-norm"),
                            ({"partial_fc": 0.1, "mixed_precision": "float16"}, "float16")):
        with pytest.raises(ValueError, match=message):
            resolve_config({**TINY, **values})
    saved = resolve_config({**TINY}).__dict__
    with pytest.raises(ValueError, match="--resume cannot change partial_fc"):
        resolve_config({"partial_fc": 0.1}, base=saved)


def test_heads_with_state_or_sub_centres_are_refused_by_name():
    from losses import heads
    from losses.registry import HEADS, partial_fc_heads
    supported = partial_fc_heads()
    assert {"am_softmax", "cosface", "arcface", "combined", "magface"} <= set(supported)
    assert not {"softmax", "sphereface", "curricularface", "adaface", "subcenter_arcface"} & set(supported)
    # the registry's flag agrees with the layers: one centre per class and no variable or state beyond
    # NormalizedMarginHead's (its build and __init__ are the base class's)
    for name, entry in HEADS.items():
        layer = getattr(heads, entry.layer)
        samplable = (issubclass(layer, heads.NormalizedMarginHead) and layer.centres_per_class == 1
                     and layer.build is heads.NormalizedMarginHead.build
                     and layer.__init__ is heads.NormalizedMarginHead.__init__)
        assert entry.partial_fc == samplable, name
    with pytest.raises(ValueError, match="--loss curricularface is not one of them"):
        build_partial_fc_head("curricularface", 100, 0.1)
    for loss in ("adaface", "softmax", "sphereface"):   # refused before TensorFlow starts, by the config
        with pytest.raises(ValueError, match=f"--loss {loss} is not one of them"):
            resolve_config({**TINY, "partial_fc": 0.1, "loss": loss})


# --- sharded across replicas (training/partial_fc_sharded.py): two logical CPUs, in a subprocess,
# since the logical devices must be set before TensorFlow starts.
REPO = Path(__file__).resolve().parent.parent

SHARDED_EQUALS_FULL = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, sys.argv[1])
import keras
from losses.heads import build_head
from losses.loss import margin_softmax_loss
from losses.partial_fc import build_partial_fc_head
from training.partial_fc_sharded import ShardedPartialFC

C, D, B = 11, 8, 3   # 11 classes on 2 replicas: shards of 6 and 5 rows
rng = np.random.default_rng(0)
centres = rng.normal(size=(C, D)).astype("float32")
weights = rng.normal(size=(D, D)).astype("float32")
x = rng.normal(size=(2 * B, D)).astype("float32")
labels = np.array([0, 5, 5, 6, 10, 3], "int32")   # both shards' classes, a class twice
out = {}
for name in ("am_softmax", "arcface"):
    full = build_head(name, C)
    full.build((None, D))
    full.kernel.assign(centres.T)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(D, use_bias=False)])
    model.layers[0].kernel.assign(weights)
    with tf.GradientTape() as tape:
        loss = margin_softmax_loss(labels, full(model(x), labels))
    g_model, g_centres = tape.gradient(loss, [model.trainable_variables[0], full.kernel])

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = keras.Sequential([keras.Input((D,)), keras.layers.Dense(D, use_bias=False)])
        mirrored.layers[0].kernel.assign(weights)
    head = ShardedPartialFC(strategy, build_partial_fc_head(name, C, 1.0, holds_centres=False), D, 2 * B)
    for v, (start, size) in zip(head.kernel.variables, [(0, 6), (6, 5)]):
        v.assign(centres[start:start + size])
    inputs = strategy.experimental_distribute_values_from_function(
        lambda ctx: (x[ctx.replica_id_in_sync_group * B:][:B], labels[ctx.replica_id_in_sync_group * B:][:B]))
    variables = mirrored.trainable_variables

    @tf.function
    def step(inputs):
        def replica(xs, ys):
            grads, update, stats = head.forward_backward(mirrored, variables, xs, ys, None, 0, 0)
            return stats[0], grads[0], update[3], update[2]
        return strategy.run(replica, args=inputs)

    loss_parts, model_grads, centre_grads, index = step(inputs)
    local = strategy.experimental_local_results
    out[name] = {
        "loss": [float(loss), float(sum(local(loss_parts)))],
        "model_grad": float(np.abs(sum(g.numpy() for g in local(model_grads)) - g_model.numpy()).max()),
        "centre_grad": float(np.abs(np.concatenate([g.numpy() for g in local(centre_grads)])
                                    - g_centres.numpy().T).max()),
        "index": [i.numpy().tolist() for i in local(index)],
        "model_grad_size": float(np.abs(g_model.numpy()).max()),
    }
# What a multi-worker save gathers: every shard's rows, here in chunks of 4 rows (6 = 4 + 2, 5 = 4 + 1)
head.momentum.variables[1].assign(tf.fill((5, D), 7.0))
chunks = list(head.gathered_rows(chunk_rows=4))
out["chunks"] = [[replica, first, int(k.shape[0])] for replica, first, k, _ in chunks]
pieces = {r: (np.concatenate([k for q, _, k, _ in chunks if q == r]), np.concatenate([m for q, _, _, m in chunks if q == r]))
          for r in (0, 1)}
out["gathered"] = float(max(np.abs(pieces[r][0] - head.kernel.variables[r].numpy()).max()
                            + np.abs(pieces[r][1] - head.momentum.variables[r].numpy()).max() for r in (0, 1)))
print("RESULT" + json.dumps(out))
"""


def _run_script(script, *args, timeout=600):
    out = subprocess.run([sys.executable, "-c", script, str(REPO), *map(str, args)], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.split("RESULT")[1])


def test_sharded_rate_one_equals_the_full_head_on_two_replicas():
    """Mirrored, 2 logical CPUs, 11 classes in shards of 6 and 5: the loss, the backbone's gradient
    (summed over the replicas, through all_gather) and every centre's gradient are the full head's;
    the rows a multi-worker save gathers are every shard's, chunk by chunk."""
    results = _run_script(SHARDED_EQUALS_FULL)
    assert results.pop("chunks") == [[0, 0, 4], [1, 0, 4], [0, 4, 2], [1, 4, 1]]
    assert results.pop("gathered") == 0.0
    for name, result in results.items():
        full_loss, sharded_loss = result["loss"]
        assert abs(sharded_loss - full_loss) <= 1e-6 * max(1.0, abs(full_loss)), (name, result)
        # float32 sums in another order: 1e-6 of the gradients' size (2-4 here)
        bound = 1e-6 * max(1.0, result["model_grad_size"])
        assert result["model_grad"] < bound and result["centre_grad"] < bound, (name, result)
        assert result["model_grad_size"] > 1e-3   # a gradient that could differ
        assert result["index"] == [list(range(6)), list(range(5))]


SHARDED_TRAINING = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 3)
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from losses.partial_fc import build_partial_fc_head
from training.config import resolve_config
from training.run_dir import new_run_dir
from training.trainer import run_training
from training.partial_fc_sharded import ShardedPartialFC

tmp = Path(sys.argv[2])
tiny = json.loads(sys.argv[3])
common = {**tiny, "num_classes": 11, "batch_size": 2, "partial_fc": 0.5, "lr_schedule": "constant", "lr": 0.1,
          "checkpoint_every": 2, "mixed_precision": "off"}
two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
three = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1", "/cpu:2"])
quiet = lambda *_: None

def run(name, strategy, log=quiet, **extra):
    directory = tmp / name
    run_dir = directory if extra.get("resume") else new_run_dir(directory, "m", "l")
    run_training(resolve_config({**common, **extra}), run_dir, strategy=strategy, log=log)
    return run_dir

def losses_of(run_dir):
    lines = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"] for e in lines if "loss" in e}

def saved(run_dir, step):
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / f"ckpt-{step}"))
    return {k: reader.get_tensor(f"head/{k}/.ATTRIBUTES/VARIABLE_VALUE") for k in ("kernel", "momentum")}

lines = []
straight = run("straight", two, log=lines.append, max_steps=4)
split = run("split", two, max_steps=2)
split = run("split", two, max_steps=4, resume=True)
out = {"straight": losses_of(straight), "split": losses_of(split), "log": lines}
a, b = saved(straight, 4), saved(split, 4)
out["resume_centres"] = float(max(np.abs(a[k] - b[k]).max() for k in a))
out["moved"] = float(np.abs(a["kernel"] - saved(straight, 2)["kernel"]).max())
out["shape"] = list(a["kernel"].shape)

# Another replica count: three shards read the same rows of the [C, D] tensors, and training goes on.
head = ShardedPartialFC(three, build_partial_fc_head("am_softmax", 11, 0.5, holds_centres=False), 32, 6)
tf.train.Checkpoint(head=head).read(str(split / "checkpoints" / "ckpt-4")).expect_partial()
out["reshard_sizes"] = [int(v.shape[0]) for v in head.kernel.variables]
out["reshard"] = float(max(np.abs(np.concatenate([v.numpy() for v in getattr(head, k).variables]) - b[k]).max()
                           for k in b))
# (training on 3 replicas needs a process of its own: two strategies' collectives clash in one;
# test_train_cli_mirrored_partial_fc_on_two_cpus_resumes_on_three does it.)
# One device without a strategy: the unsharded head reads the same tensors and trains on.
one = run("split", tf.distribute.get_strategy(), max_steps=6, resume=True)
out["one"] = losses_of(one)
# ... and the other way: a one-device run (one [C, D] tensor) resumes sharded on 2 replicas.
single = run("single", tf.distribute.get_strategy(), max_steps=2)
single_saved = saved(single, 2)
resharded = ShardedPartialFC(two, build_partial_fc_head("am_softmax", 11, 0.5, holds_centres=False), 32, 4)
tf.train.Checkpoint(head=resharded).read(str(single / "checkpoints" / "ckpt-2")).expect_partial()
out["from_one"] = float(np.abs(np.concatenate([v.numpy() for v in resharded.kernel.variables])
                               - single_saved["kernel"]).max())
out["single_sharded"] = losses_of(run("single", two, max_steps=3, resume=True))
print("RESULT" + json.dumps(out))
"""


def test_sharded_training_resumes_exactly_and_reshards_to_another_replica_count(tmp_path):
    """Mirrored on 2 logical CPUs, 11 classes (shards of 6 and 5), RATE 0.5: 2 + 2 resumed steps give
    the straight run's losses and centres; the checkpoint's [C, D] layout restores into 3 shards
    row for row, and the run continues on one device without a strategy (the one-device head); a
    one-device run's checkpoint restores into 2 shards and resumes on 2 replicas."""
    result = _run_script(SHARDED_TRAINING, tmp_path, json.dumps(TINY))
    straight, split = result["straight"], result["split"]
    np.testing.assert_allclose([split[s] for s in ("3", "4")], [straight[s] for s in ("3", "4")], rtol=1e-5)
    assert result["resume_centres"] < 1e-6 and result["moved"] > 1e-4, result
    assert result["shape"] == [11, 32]
    assert result["reshard_sizes"] == [4, 4, 3] and result["reshard"] == 0.0, result
    assert "6" in result["one"] and np.isfinite(result["one"]["6"])
    assert result["from_one"] == 0.0 and np.isfinite(result["single_sharded"]["3"]), result
    memory = [line for line in result["log"] if line.startswith("partial FC sharded over 2 replicas")]
    assert memory and memory[0].startswith("partial FC sharded over 2 replicas: 6 of 11 centres per replica, "
                                           "4 sampled per step; per replica: centres"), result["log"]


def test_train_cli_mirrored_partial_fc_on_two_cpus_resumes_on_three(tmp_path):
    """train.py --strategy mirrored --partial-fc 0.5 on 2 logical CPUs (FACEID_CPU_REPLICAS, for
    tests only), then --resume on 3: the shards are re-cut from the checkpoint's [C, D] layout."""
    import os
    run = tmp_path / "run"
    args = [sys.executable, str(REPO / "train.py"), "--strategy", "mirrored", "--partial-fc", "0.5",
            "--backbone", "mobilefacenet", "--image-size", "32x32", "--embedding-size", "16", "--batch-size", "2",
            "--num-classes", "11", "--synthetic-images", "32", "--log-every", "1", "--checkpoint-every", "2",
            "--exports", "keras", "--mixed-precision", "off", "--output-dir", str(run)]
    env = {**os.environ, "FACEID_CPU_REPLICAS": "2"}
    first = subprocess.run(args + ["--max-steps", "2"], capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "partial FC sharded over 2 replicas: 6 of 11 centres per replica" in first.stdout + first.stderr
    env["FACEID_CPU_REPLICAS"] = "3"
    again = subprocess.run(args + ["--max-steps", "3", "--resume"], capture_output=True, text=True, timeout=600,
                           env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    text = again.stdout + again.stderr
    assert "partial FC sharded over 3 replicas: 4 of 11 centres per replica" in text and "resumed from" in text
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3] and all(np.isfinite(e["loss"]) for e in log if "loss" in e)


@pytest.mark.slow
def test_two_workers_shard_the_centres_and_every_checkpoint_holds_all_of_them(tmp_path):
    """--partial-fc 1.0 under --strategy multiworker: two train.py processes on localhost (one
    replica each; 5 classes in shards of 3 and 2) train as one device at batch 4 does (the same
    losses); each worker's checkpoint holds every centre and momentum row (the one-device run's),
    and the chief's resumes on one device, whose next step is the one-device run's."""
    from cluster_helpers import run_train_workers
    settings = {"backbone": "resface20", "image_size": "32x32", "embedding_size": 16, "num_classes": 5,
                "synthetic_images": 32, "log_every": 1, "max_steps": 3, "lr_schedule": "constant", "lr": 0.01,
                "checkpoint_every": 3, "mixed_precision": "off", "partial_fc": 1.0, "exports": "keras"}
    args = [arg for key, value in settings.items() for arg in (f"--{key.replace('_', '-')}", str(value))]
    chief, other = tmp_path / "worker0", tmp_path / "worker1"
    outputs = run_train_workers([chief, other], args + ["--batch-size", "2", "--backbone-option", "batch_norm=false",
                                                        "--no-collapse-guard"])
    assert "partial FC sharded over 2 replicas: 3 of 5 centres per replica" in "".join(outputs[0])
    one_device = {**settings, "backbone_options": {"batch_norm": False}, "batch_size": 4, "collapse_guard": False}
    single = new_run_dir(tmp_path / "single", "r", "l")
    run_training(resolve_config({**one_device, "max_steps": 4}), single, log=lambda *_: None)

    def losses_of(run_dir):
        lines = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
        return {e["step"]: e["loss"] for e in lines if "loss" in e}

    def head_of(prefix):
        reader = tf.train.load_checkpoint(str(prefix))
        return [reader.get_tensor(f"head/{k}/.ATTRIBUTES/VARIABLE_VALUE") for k in ("kernel", "momentum")]

    np.testing.assert_allclose([losses_of(chief)[s] for s in (1, 2, 3)], [losses_of(single)[s] for s in (1, 2, 3)],
                               rtol=1e-4)
    expected = head_of(single / "checkpoints" / "ckpt-3")
    assert np.abs(expected[1]).max() > 1e-4   # momentum that could be lost
    for saved, wanted in zip(head_of(chief / "checkpoints" / "ckpt-3"), expected):
        assert saved.shape == (5, 16)
        np.testing.assert_allclose(saved, wanted, atol=1e-5)
    for saved, chiefs in zip(head_of(other / "workers" / "tmp-1" / "ckpt-3"), head_of(chief / "checkpoints" / "ckpt-3")):
        np.testing.assert_array_equal(saved, chiefs)
    run_training(resolve_config({**one_device, "max_steps": 4, "resume": True}), chief, log=lambda *_: None)
    np.testing.assert_allclose(losses_of(chief)[4], losses_of(single)[4], rtol=1e-4)
