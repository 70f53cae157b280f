"""The training loop: strategy, model, SGD, exact checkpoints, logs, validation and export."""

import json
import time
from pathlib import Path

import keras
import tensorflow as tf
from tqdm import tqdm

import losses
import models
from training.data import synthetic_data, tfrecord_data, total_steps
from training.guard import TrainingGuard
from training.export import build_embedding_model, export_embedding_model, save_keras_atomic
from training.run_dir import CHECKPOINT_SUBDIR
from training.state import build_training_state
from training.validation import make_validator


def make_strategy(name):
    """tf.distribute strategy for --strategy (multiworker reads the cluster from TF_CONFIG)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """Only the chief writes logs, exports and the real checkpoints (multi-worker convention)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def decayed_variables(backbone, head, head_wd_mult):
    """(variable, multiplier) pairs that get weight decay: conv/dense kernels of the backbone and
    the head's class centres (x head_wd_mult). BN gamma/beta, PReLU slopes and biases are excluded,
    as in insightface and the AM-Softmax reference."""
    pairs = [(v, 1.0) for v in backbone.trainable_variables if v.path.endswith("kernel")]
    pairs.append((head.kernel, float(head_wd_mult)))
    return pairs


def make_train_step(strategy, backbone, head, optimizer, config, global_batch):
    """A tf.function running one global step from a distributed iterator.

    Returns a dict of global sums: ``loss`` (Σ loss / global_batch, i.e. the mean), ``correct``
    (predictions without margin that hit the label), ``cosine_sum`` and ``cosine_pairs`` (cosine
    between the embeddings of every pair of different-identity images within a replica's batch:
    their mean near 1 means the model maps every face to one direction, see training/guard.py).
    The forward/backward pass is the XLA-compiled part (--xla); applying gradients stays
    outside XLA because its cross-replica all-reduce cannot run inside a compiled cluster.
    """
    variables = backbone.trainable_variables + head.trainable_variables
    decayed = decayed_variables(backbone, head, config.head_wd_mult)
    num_replicas = strategy.num_replicas_in_sync
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(images, labels):
        with tf.GradientTape() as tape:
            embeddings = backbone(images, training=True)
            logits = head(embeddings, labels)
            loss = losses.margin_softmax_loss(labels, logits, focal_gamma=config.focal)
            # Gradients are summed over replicas: weight each replica's mean by its share.
            share = tf.cast(tf.shape(labels)[0], tf.float32) / global_batch
            # SGD weight decay adds wd·w to each gradient (through momentum): that is the
            # gradient of ½·wd·Σw². (keras.regularizers.L2(λ) is λ·Σw², gradient 2λw.)
            l2 = tf.add_n([mult * tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v, mult in decayed])
            objective = loss * share + 0.5 * config.weight_decay * l2 / num_replicas
            if scales_loss:
                objective = optimizer.scale_loss(objective)
        grads = tape.gradient(objective, variables)
        labels = tf.cast(labels, tf.int32)
        predicted = tf.argmax(head.class_scores(embeddings), axis=-1, output_type=tf.int32)
        stats = {"loss": loss * share,
                 "correct": tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))}
        # B x B cosines of a B x D batch: ~B²·D multiply-adds, nothing next to the backbone.
        # Rows are first scaled to max |x| = 1, so exploded embeddings (1e20 and more, whose squares
        # overflow float32) still give their true cosines; the tiny common offset then makes
        # all-zero embeddings (a dead network) count as identical (cosine 1) rather than 0.
        unit = tf.cast(embeddings, tf.float32)
        unit = unit / (tf.reduce_max(tf.abs(unit), axis=1, keepdims=True) + 1e-30)
        unit = tf.math.l2_normalize(unit + 1e-6, axis=1)
        different = tf.cast(tf.not_equal(labels[:, None], labels[None, :]), tf.float32)
        stats["cosine_sum"] = tf.reduce_sum(tf.matmul(unit, unit, transpose_b=True) * different)
        stats["cosine_pairs"] = tf.reduce_sum(different)
        return grads, stats

    if config.xla:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(images, labels):
        grads, stats = forward_backward(images, labels)
        optimizer.apply_gradients(zip(grads, variables))
        return stats

    @tf.function
    def train_step(iterator):
        images, labels = next(iterator)
        stats = strategy.run(replica_step, args=(images, labels))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in stats.items()}

    return train_step


def open_data(config, per_replica_batch):
    image_size = models.parse_image_size(config.image_size) if config.image_size else None
    if config.data:
        return tfrecord_data(config.data, per_replica_batch, image_size=image_size,
                             shuffle_buffer=config.shuffle_buffer, seed=config.seed,
                             deterministic=config.deterministic)
    return synthetic_data(config.num_classes, image_size or (112, 96), per_replica_batch,
                          num_images=config.synthetic_images, seed=config.seed)


def run_training(config, run_dir, strategy=None, log=print):
    """Train per ``config`` into ``run_dir`` (resuming from its checkpoints when config.resume).

    Returns a summary dict (steps, losses, images/s, validation, export paths). Raises
    TrainingDiverged on a NaN/Inf loss or weights and TrainingCollapsed on collapsed embeddings or
    a stuck loss (training/guard.py), leaving the last checkpoint, whose weights are finite, in place.
    """
    wall_start = time.perf_counter()
    run_dir = Path(run_dir)
    strategy = strategy or make_strategy(config.strategy)
    chief = is_chief(strategy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas
    data = open_data(config, config.batch_size)
    steps = total_steps(config, data, global_batch)
    if config.xla and config.backbone == "mobilefacenet" and not tf.config.list_physical_devices("GPU"):
        # benchmarks/train_speed.py: XLA's CPU depthwise convolution made MobileFaceNet 0.24x
        # as fast as without XLA (ResFace20 gained 1.42x) on a 2-core CPU.
        log("warning: --xla makes mobilefacenet about 4x SLOWER on CPU (depthwise convolutions); "
            "drop --xla for it (it helps resface20 about 1.4x)")
    validator = make_validator(config, data)
    log(f"data: {data.description}")
    log(f"model: {config.backbone} + {config.loss} head, {data.num_classes} classes, "
        f"{data.image_size[0]}x{data.image_size[1]}; {replicas} replica(s) x batch {config.batch_size} "
        f"= global batch {global_batch}; {steps} steps; run dir {run_dir}")

    with strategy.scope():
        state = build_training_state(config, data.num_classes, data.image_size, steps)
    backbone, head, optimizer, schedule = state.backbone, state.head, state.optimizer, state.schedule
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    best_val = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
    checkpoint = tf.train.Checkpoint(backbone=backbone, head=head, optimizer=optimizer,
                                     step=step_var, best_val=best_val)
    # Non-chief workers must take part in saving (it is collective) but write to a scratch dir.
    ckpt_dir = run_dir / CHECKPOINT_SUBDIR if chief else run_dir / "workers" / f"tmp-{strategy.cluster_resolver.task_id}"
    manager = tf.train.CheckpointManager(checkpoint, str(ckpt_dir), max_to_keep=3)
    if config.resume:
        if not manager.latest_checkpoint:
            raise FileNotFoundError(f"--resume: no checkpoint in {ckpt_dir}")
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"resumed from {manager.latest_checkpoint} at step {int(step_var)} "
            f"(lr {float(schedule(optimizer.iterations)):.6g})")
    start = int(step_var)
    checkpoint_variables = backbone.variables + head.variables + optimizer.variables

    embedding_model = build_embedding_model(backbone, data.image_size)
    dist_data = strategy.distribute_datasets_from_function(lambda ctx: data.dataset_fn(ctx, start))
    iterator = iter(dist_data)
    train_step = make_train_step(strategy, backbone, head, optimizer, config, global_batch)
    writer = tf.summary.create_file_writer(str(run_dir / "logs")) if chief else tf.summary.create_noop_writer()
    log_file = open(run_dir / "train_log.jsonl", "a") if chief else None

    def record(entry):
        if log_file:
            log_file.write(json.dumps(entry) + "\n")
            log_file.flush()

    def validate(step):
        if validator is None:
            return None
        started = time.perf_counter()
        metrics = validator(embedding_model)
        log(f"step {step}: validation on {validator.name}: accuracy {metrics['accuracy_mean']:.4f} "
            f"± {metrics['accuracy_std']:.4f}, VAL {metrics['val']:.4f} at FAR {metrics['far']:.2g} "
            f"(target 1e-3), AUC {metrics['auc']:.4f} ({time.perf_counter() - started:.1f} s)")
        with writer.as_default(step=step):
            for key in ("accuracy_mean", "val", "auc", "eer"):
                tf.summary.scalar(f"val/{validator.name}/{key}", metrics[key])
        record({"step": step, "validation": validator.name,
                **{k: metrics[k] for k in ("accuracy_mean", "accuracy_std", "val", "auc", "eer")}})
        if metrics["accuracy_mean"] > float(best_val) and chief:
            best_val.assign(metrics["accuracy_mean"])
            save_keras_atomic(embedding_model, run_dir / "export" / "best.keras")
        return metrics

    time_up = _time_limit_check(strategy, config, wall_start)
    guard = TrainingGuard(lambda: manager.latest_checkpoint, enabled=config.collapse_guard,
                          warmup_steps=config.warmup_steps)
    window_loss, window_correct, window_steps, timed_steps, window_time = 0.0, 0.0, 0, 0, 0.0
    window_cosine, window_pairs = 0.0, 0.0
    total_timed_steps, total_timed_time = 0, 0.0
    last_step, time_limited = start, False
    last = {"loss": None, "accuracy": None}
    val_metrics = None
    first_step_seconds = None
    bar = tqdm(total=steps, initial=start, unit="step", desc="train", dynamic_ncols=True, disable=not chief)
    try:
        for step in range(start + 1, steps + 1):
            t0 = time.perf_counter()
            stats = {k: float(v) for k, v in train_step(iterator).items()}
            elapsed = time.perf_counter() - t0
            loss, correct = stats["loss"], stats["correct"]
            guard.after_step(step, loss)
            if first_step_seconds is None:
                first_step_seconds = elapsed   # includes tracing/compilation: kept out of img/s
            else:
                window_time += elapsed
                timed_steps += 1
                total_timed_time += elapsed
                total_timed_steps += 1
            window_loss += loss
            window_correct += correct
            window_cosine += stats["cosine_sum"]
            window_pairs += stats["cosine_pairs"]
            window_steps += 1
            bar.update(1)
            if step % config.log_every == 0 or step == steps:
                lr = float(schedule(optimizer.iterations))
                ips = global_batch * timed_steps / window_time if timed_steps else float("nan")
                last = {"loss": window_loss / window_steps,
                        "accuracy": window_correct / (window_steps * global_batch),
                        "embedding_cosine": window_cosine / window_pairs if window_pairs else float("nan")}
                bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}",
                                lr=f"{lr:.3g}", img_s=f"{ips:.1f}")
                with writer.as_default(step=step):
                    tf.summary.scalar("train/loss", last["loss"])
                    tf.summary.scalar("train/accuracy", last["accuracy"])
                    tf.summary.scalar("train/lr", lr)
                    tf.summary.scalar("train/images_per_sec", ips)
                    tf.summary.scalar("train/embedding_cosine", last["embedding_cosine"])
                record({"step": step, "loss": last["loss"], "accuracy": last["accuracy"], "lr": lr,
                        "embedding_cosine": last["embedding_cosine"], "images_per_sec": ips,
                        "epoch": _epoch(data, step, global_batch)})
                window_loss, window_correct, window_steps, timed_steps, window_time = 0.0, 0.0, 0, 0, 0.0
                window_cosine, window_pairs = 0.0, 0.0
                guard.after_window(step, last["embedding_cosine"])
            last_step = step
            time_limited = step < steps and time_up(step)
            if step % config.checkpoint_every == 0 or step == steps or time_limited:
                guard.check_finite(step, checkpoint_variables)
                step_var.assign(step)
                manager.save(checkpoint_number=step)
            if step % config.val_every == 0 or step == steps or time_limited:
                val_metrics = validate(step)
            if time_limited:
                log(f"--time-limit {config.time_limit:g} min reached after step {step} of {steps}: "
                    f"checkpoint saved; --resume continues the run")
                break
    finally:
        bar.close()
        writer.flush()
        if log_file:
            log_file.close()

    exports = export_embedding_model(embedding_model, run_dir / "export") if chief else {}
    summary = {"run_dir": str(run_dir), "steps": steps, "start_step": start, "last_step": last_step,
               "time_limited": time_limited, "global_batch": global_batch,
               "final_loss": last["loss"], "final_accuracy": last["accuracy"],
               "first_step_seconds": first_step_seconds,
               # Steady-state rate: the first step (tracing, compilation) is left out.
               "images_per_sec": (global_batch * total_timed_steps / total_timed_time
                                  if total_timed_steps else float("nan")),
               "wall_seconds": time.perf_counter() - wall_start, "validation": val_metrics,
               "best_validation_accuracy": float(best_val) if float(best_val) >= 0 else None,
               "exports": exports, "synthetic": data.synthetic}
    if chief:
        # One line per invocation: a resumed or time-limited run appends its own.
        with open(run_dir / "train_summary.jsonl", "a") as f:
            f.write(json.dumps(summary) + "\n")
    return summary


def _time_limit_check(strategy, config, wall_start):
    """``time_up(step) -> bool`` for --time-limit: this process's clock, read after every step."""
    if config.time_limit is None:
        return lambda step: False
    if getattr(strategy.extended, "_num_workers", 1) > 1:
        # Every worker must stop at the same step (steps are collective) and their clocks differ.
        raise ValueError("--time-limit is not supported with several workers; use --max-steps")
    limit_seconds = 60.0 * config.time_limit
    return lambda step: time.perf_counter() - wall_start >= limit_seconds


def _epoch(data, step, global_batch):
    per_epoch = data.steps_per_epoch(global_batch)
    return None if per_epoch is None else step / per_epoch
