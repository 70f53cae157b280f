"""The training loop: strategy, model, SGD, exact checkpoints, logs, validation and export."""

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import keras
import tensorflow as tf

from fileio import parse_image_size
from losses.loss import drop_negative_classes, margin_softmax_loss
from losses.partial_fc import partial_fc_num_sample
from tfrecords.manifest import open_shards
from training.checkpoints import RunCheckpoints
from training.config import SYNTHETIC_DEFAULTS, augmentation, export_formats
from training.data import singleton_roles, synthetic_data, tfrecord_data, total_steps
from training.data_identity import check_data_identity
from training.export import export_embedding_model
from training.guard import TrainingGuard
from training.hardware import resolve_auto_settings
from training.init_from import load_init_backbone
from training.logger import RunLogger
from training.partial_fc import gather_centres, head_memory_line, sample_centres, sparse_sgd_update
from training.partial_fc_sharded import ShardedPartialFC, check_sharded_options, sharded_memory_line, uses_replicas
from training.preemption import StopRequest, TrainingInterrupted
from training.run_dir import save_run_config, write_failure
from training.schedules import margin_warmup_weight
from training.state import build_training_state, peak_lr
from training.validation import Validation, best_rule, make_bin_validators, make_validator


def make_strategy(name):
    """tf.distribute strategy for --strategy (multiworker reads the cluster from TF_CONFIG)."""
    if name == "mirrored":
        # For tests only: FACEID_CPU_REPLICAS=N splits the CPU into N logical devices as the replicas.
        cpu_replicas = int(os.environ.get("FACEID_CPU_REPLICAS", "0"))
        if cpu_replicas:
            tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                                       [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
            return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
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


def different_identity_cosines(x, labels):
    """(sum, count) of the cosines between rows of ``x`` [B, ...] whose ``labels`` [B] differ.

    B x B cosines of a B x D batch: ~B²·D multiply-adds, nothing next to the backbone. Rows are first
    scaled to max |x| = 1, so exploded values (1e20 and more, whose squares overflow float32) still
    give their true cosines; the tiny common offset then makes all-zero rows (a dead network) count
    as identical (cosine 1) rather than 0.
    """
    unit = tf.reshape(tf.cast(x, tf.float32), (tf.shape(x)[0], -1))
    unit = unit / (tf.reduce_max(tf.abs(unit), axis=1, keepdims=True) + 1e-30)
    unit = tf.math.l2_normalize(unit + 1e-6, axis=1)
    labels = tf.cast(labels, tf.int32)
    different = tf.cast(tf.not_equal(labels[:, None], labels[None, :]), tf.float32)
    return tf.reduce_sum(tf.matmul(unit, unit, transpose_b=True) * different), tf.reduce_sum(different)


def batch_stats(loss, scores, targets, negative_classes, embeddings, labels):
    """One replica's step statistics (make_train_step's dict): ``loss`` its share of the mean loss,
    ``scores`` [B, K] margin-free against ``targets`` [B] (column indices: the classes, or Partial FC's
    sampled centres), ``negative_classes`` [K] or None, ``embeddings`` [B, D] with their ``labels`` [B]."""
    classified = tf.ones_like(targets, tf.float32)
    if negative_classes is not None:   # a negatives-only class is never a prediction nor a target
        scores = drop_negative_classes(scores, negative_classes)
        classified -= tf.gather(negative_classes, targets)
    hits = tf.cast(tf.equal(tf.argmax(scores, axis=-1, output_type=tf.int32), targets), tf.float32)
    stats = {"loss": loss, "correct": tf.reduce_sum(hits * classified), "classified": tf.reduce_sum(classified)}
    stats["cosine_sum"], stats["cosine_pairs"] = different_identity_cosines(embeddings, labels)
    return stats


def make_train_step(strategy, model, head, optimizer, config, global_batch, class_weights=None,
                    negative_classes=None, freeze_backbone=False):
    """A tf.function running one global step from a distributed iterator.

    ``class_weights`` and ``negative_classes`` (float lists [C] or None, training.data.singleton_roles)
    go to the loss. Returns a dict of global sums: ``loss`` (Σ loss / global_batch, i.e. the mean),
    ``correct`` (predictions without margin that hit the label), ``classified`` (examples that have a
    class to hit: all but the negatives-only ones), ``cosine_sum`` and ``cosine_pairs`` (cosine
    between the embeddings of every pair of different-identity images within a replica's batch:
    their mean near 1 means the model maps every face to one direction, see training/guard.py).
    The forward/backward pass is the XLA-compiled part (--xla); applying gradients stays
    outside XLA because its cross-replica all-reduce cannot run inside a compiled cluster.
    ``freeze_backbone`` (fine-tuning's --freeze-backbone-steps): the backbone runs in inference mode (its
    batch-norm statistics are not updated) and only the head's variables get gradients and updates.
    """
    variables = (head.trainable_variables if freeze_backbone
                 else model.trainable_variables + head.trainable_variables)
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    class_weights = None if class_weights is None else tf.constant(class_weights, tf.float32)
    negative_classes = None if negative_classes is None else tf.constant(negative_classes, tf.float32)

    def forward_backward(images, labels, margin_weight):
        with tf.GradientTape() as tape:
            # images in [0, 255]: the model scales them. Frozen: BN uses (and keeps) its moving statistics.
            embeddings = model(images, training=not freeze_backbone)
            logits = head(embeddings, labels, margin_weight=margin_weight)
            loss = margin_softmax_loss(labels, logits, focal_gamma=config.focal,
                                              class_weights=class_weights, negative_classes=negative_classes)
            loss += head.auxiliary_loss(embeddings)   # MagFace's magnitude regulariser; 0 for the others
            # Gradients are summed over replicas: weight each replica's mean by its share.
            share = tf.cast(tf.shape(labels)[0], tf.float32) / global_batch
            # Weight decay is not in the objective: the optimizer adds wd·mult·w after clipping
            # the loss gradient, in Caffe's order (training.state.ReferenceSGD).
            objective = loss * share
            if scales_loss:
                objective = optimizer.scale_loss(objective)
        grads = tape.gradient(objective, variables)
        labels = tf.cast(labels, tf.int32)
        stats = batch_stats(loss * share, head.class_scores(embeddings), labels, negative_classes, embeddings, labels)
        return grads, stats

    if config.partial_fc is not None:
        num_sample = partial_fc_num_sample(head.num_classes, config.partial_fc, config.batch_size)

        def sampled_forward_backward(images, labels, margin_weight, index, local_labels):
            # Partial FC: the loss sees K sampled centres; their gradient is taken as rows [K, D].
            centres = gather_centres(head, index)
            sampled = {"class_weights": class_weights, "negative_classes": negative_classes}
            sampled = {k: None if v is None else tf.gather(v, index) for k, v in sampled.items()}
            with tf.GradientTape() as tape:
                tape.watch(centres)
                embeddings = model(images, training=True)
                logits = head.sampled_logits(embeddings, centres, local_labels, margin_weight=margin_weight)
                loss = margin_softmax_loss(local_labels, logits, focal_gamma=config.focal, **sampled)
                loss += head.auxiliary_loss(embeddings)
                # the optimizer decays the backbone; sparse_sgd_update decays the sampled centres
                share = tf.cast(tf.shape(labels)[0], tf.float32) / global_batch
                objective = loss * share
            *grads, centre_grads = tape.gradient(objective, variables + [centres])
            stats = batch_stats(loss * share, head.sampled_scores(embeddings, centres), local_labels,
                                sampled["negative_classes"], embeddings, labels)
            return grads, centre_grads, stats

        forward_backward = sampled_forward_backward
    if config.xla:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(images, labels):
        # --margin-warmup-steps: the margin grows with the optimizer's step (None when off).
        margin_weight = margin_warmup_weight(optimizer.iterations, config.margin_warmup_steps)
        if config.partial_fc is None:
            grads, stats = forward_backward(images, labels, margin_weight)
            optimizer.apply_gradients(zip(grads, variables))
            return stats
        step = optimizer.iterations
        lr = optimizer.learning_rate   # this step's, read before apply_gradients advances the count
        index, local_labels = sample_centres(labels, head.num_classes, num_sample, config.seed, step)
        grads, centre_grads, stats = forward_backward(images, labels, margin_weight, index, local_labels)
        optimizer.apply_gradients(zip(grads, variables))
        sparse_sgd_update(head, index, centre_grads, lr, config.momentum,
                          config.weight_decay * config.head_wd_mult)
        return stats

    if isinstance(head, ShardedPartialFC):   # centres sharded over the replicas (partial_fc_sharded.py)
        check_sharded_options(negative_classes)

        def replica_step(images, labels):
            step, lr = optimizer.iterations, optimizer.learning_rate   # read before apply_gradients
            margin_weight = margin_warmup_weight(step, config.margin_warmup_steps)
            grads, update, stats = head.forward_backward(model, variables, images, labels, margin_weight, step,
                                                         config.seed, config.focal, class_weights)
            optimizer.apply_gradients(zip(grads, variables))
            head.apply_sparse_sgd(update, lr, config.momentum, config.weight_decay * config.head_wd_mult)
            return batch_stats(*stats)

    @tf.function
    def train_step(iterator):
        images, labels = next(iterator)
        stats = strategy.run(replica_step, args=(images, labels))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in stats.items()}

    return train_step


def open_data(config, per_replica_batch):
    image_size = parse_image_size(config.image_size) if config.image_size else None
    if config.data:   # the run's one reading of manifest.json: the Shards handle goes everywhere from here
        return tfrecord_data(open_shards(config.data), per_replica_batch, image_size=image_size,
                             shuffle_buffer=config.shuffle_buffer, seed=config.seed,
                             deterministic=config.deterministic, augmentation=augmentation(config))
    # image_size None: a synthetic run saved before SYNTHETIC_DEFAULTS named its size, resumed
    return synthetic_data(config.num_classes, image_size or parse_image_size(SYNTHETIC_DEFAULTS["image_size"]),
                          per_replica_batch,
                          num_images=config.synthetic_images, seed=config.seed)


def run_training(config, run_dir, strategy=None, log=print):
    """Train per ``config`` into ``run_dir`` (resuming from its checkpoints when config.resume).

    First resolves ``auto`` in config.mixed_precision / config.xla for this machine (in place,
    training.hardware) and writes the config as RUN/config.json, so a --resume keeps that choice.

    Returns a summary dict (steps, losses, images/s, validation, export paths). Raises
    TrainingDiverged on a NaN/Inf loss or weights and TrainingCollapsed on collapsed embeddings or
    a stuck loss (training/guard.py), leaving the last checkpoint, whose weights are finite, in place.
    """
    wall_start = time.perf_counter()
    run_dir = Path(run_dir)
    if config.backbone_lr_mult is None:   # an API caller's TrainConfig that resolve_config did not resolve
        config.backbone_lr_mult = 0.1 if config.init_from else 1.0
    for line in resolve_auto_settings(config):   # the one place they are resolved: before config.json records them
        log(line)
    config.output_dir = str(run_dir)
    save_run_config(run_dir, config)
    strategy = strategy or make_strategy(config.strategy)
    chief = is_chief(strategy)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    global_batch = config.batch_size * strategy.num_replicas_in_sync
    data = open_data(config, config.batch_size)
    check_data_identity(run_dir, data.data_dir, data.manifest, config.resume, chief, log)   # other shards: refused
    steps = total_steps(config, data, global_batch)
    _warn_about_settings(config, log)
    class_weights, negative_classes, singletons = singleton_roles(config, data)
    if singletons:
        log(f"singletons: {singletons}")
    with _data_errors_explained(data):
        validator = make_validator(config, data)
    bin_validators = make_bin_validators(config, data.image_size, log)
    log(f"data: {data.description}")
    if best_rule(validator, bin_validators):
        log(f"validation every {config.val_every} steps; {best_rule(validator, bin_validators)}")
    else:   # said once: without it nothing measures the model during training and no best.keras is chosen
        log("no validation: these shards hold no held-out identities and no --val-pairs/--val-dir or --val-bin was "
            "given, so nothing is measured during training and no best.keras is written (the export is the last "
            "step's model). Build the shards with --val-identities N, or pass --val-pairs FILE --val-dir DIR")
    lr_given = config.lr is not None
    _record_resolved(config, run_dir, chief, data, steps, global_batch)
    log(f"model: {config.backbone} + {config.loss} head, {data.num_classes} classes, "
        f"{data.image_size[0]}x{data.image_size[1]}; {strategy.num_replicas_in_sync} replica(s) x batch "
        f"{config.batch_size} = global batch {global_batch}; {steps} steps, peak lr {peak_lr(config, global_batch):g}"
        f"{'' if lr_given else ' (0.1 x global batch / 256; --lr sets it)'}; backbone precision "
        f"{'float32' if config.mixed_precision == 'off' else config.mixed_precision}, XLA {'on' if config.xla else 'off'}; "
        f"run dir {run_dir}")

    sharded = config.partial_fc is not None and uses_replicas(strategy)
    num_sample = (None if config.partial_fc is None
                  else partial_fc_num_sample(data.num_classes, config.partial_fc, config.batch_size))
    log(sharded_memory_line(data.num_classes, config.embedding_size, global_batch, config.partial_fc,
                            strategy.num_replicas_in_sync) if sharded
        else head_memory_line(data.num_classes, config.embedding_size, config.batch_size, num_sample))
    with strategy.scope():
        state = build_training_state(config, data.num_classes, data.image_size, steps, global_batch,
                                     head_holds_centres=not sharded)
    if sharded:   # outside the scope, so that the strategy does not mirror the shards
        state.head = ShardedPartialFC(strategy, state.head, config.embedding_size, global_batch)
        if config.xla:
            log("partial FC sharded: the step runs without XLA (its all-gathers and all-reduces cannot run "
                "inside a compiled cluster)")
    guard = TrainingGuard(lambda: checkpoints.latest, enabled=config.collapse_guard,
                          warmup_steps=config.warmup_steps)
    checkpoints = RunCheckpoints(run_dir, strategy, chief, guard, state.backbone, state.head, state.optimizer)
    start = checkpoints.restore(log) if config.resume else 0
    if config.resume:
        log(f"resumed from {checkpoints.restored} at step {start} "
            f"(lr {float(state.schedule(state.optimizer.iterations)):.6g})")
    if config.init_from and start == 0:   # a resumed run's checkpoint holds the fine-tuned weights already
        log(load_init_backbone(state.backbone, config))
    if config.init_from or config.backbone_lr_mult != 1.0 or config.freeze_backbone_steps:
        log(f"backbone lr x {config.backbone_lr_mult:g} (--backbone-lr-mult)"
            + (f"; backbone frozen (weights and batch-norm statistics) for steps 1-{config.freeze_backbone_steps}, "
               "then trained" if config.freeze_backbone_steps else ""))
    iterator = iter(strategy.distribute_datasets_from_function(lambda ctx: data.dataset_fn(ctx, start)))
    train_step = make_train_step(strategy, state.model, state.head, state.optimizer, config, global_batch,
                                 class_weights, negative_classes)
    frozen_step = (make_train_step(strategy, state.model, state.head, state.optimizer, config, global_batch,
                                   class_weights, negative_classes, freeze_backbone=True)
                   if config.freeze_backbone_steps > start else None)
    logger = RunLogger(run_dir, chief, steps, start, global_batch)
    validate = Validation(validator, state.model, logger, checkpoints.best_val,
                          run_dir / "export" / "best.keras", chief, log, bin_validators=bin_validators)
    time_up = _time_limit_check(strategy, config, wall_start)

    last_step, time_limited, val_metrics, validation_seconds = start, False, None, 0.0
    stop = StopRequest()   # SIGTERM/SIGINT: a checkpoint of the step, then TrainingInterrupted (preemption.py)
    catch_signals = (getattr(strategy.extended, "_num_workers", 1) <= 1
                     and threading.current_thread() is threading.main_thread())
    try:
        with _data_errors_explained(data), stop.installed(catch_signals):
            for step in range(start + 1, steps + 1):
                t0 = time.perf_counter()
                step_fn = frozen_step if step <= config.freeze_backbone_steps else train_step
                stats = {k: float(v) for k, v in step_fn(iterator).items()}
                guard.after_step(step, stats["loss"])
                logger.step_done(stats, time.perf_counter() - t0)
                time_limited = step < steps and time_up(step)
                # the curves get the first and the last step of every invocation, whatever --log-every
                if step % config.log_every == 0 or step == steps or step == start + 1 or time_limited:
                    window = logger.end_window(step, float(state.schedule(state.optimizer.iterations)),
                                               _epoch(data, step, global_batch))
                    guard.after_window(step, window["embedding_cosine"])
                last_step = step
                if stop.signum is not None:
                    checkpoints.save(step)
                    raise TrainingInterrupted(stop.signum, step, run_dir, checkpoints.latest)
                if step % config.checkpoint_every == 0 or step == steps or time_limited:
                    checkpoints.save(step)
                if step % config.val_every == 0 or step == steps or time_limited:
                    t_val = time.perf_counter()
                    val_metrics = validate(step)
                    validation_seconds += time.perf_counter() - t_val
                if time_limited:
                    log(f"--time-limit {config.time_limit:g} min reached after step {step} of {steps}: "
                        f"checkpoint saved; --resume continues the run")
                    break
    finally:
        logger.close()

    t_export = time.perf_counter()
    try:
        exports = (export_embedding_model(state.model, run_dir / "export", export_formats(config.exports), log=log)
                   if chief else {})
    except (OSError, tf.errors.OpError) as error:
        raise write_failure(run_dir, f"the export in {run_dir / 'export'}", error, checkpoints.latest) from None
    export_seconds = time.perf_counter() - t_export
    _wait_for_every_worker(strategy, chief)
    wall_seconds = time.perf_counter() - wall_start
    summary = {"run_dir": str(run_dir), "steps": steps, "start_step": start, "last_step": last_step,
               "time_limited": time_limited, "global_batch": global_batch,
               # the last step's own loss and accuracy (train_log.jsonl's last line: its window's means)
               "final_loss": logger.last_step["loss"], "final_accuracy": logger.last_step["accuracy"],
               "last_window_loss": logger.last["loss"], "last_window_accuracy": logger.last["accuracy"],
               "first_step_seconds": logger.first_step_seconds,
               # Steady-state rate: the first step (tracing, compilation) is left out.
               "images_per_sec": logger.images_per_sec,
               "wall_seconds": wall_seconds, "validation": val_metrics,
               # where the wall time went: the steps, the validations, the export; setup is the rest (data,
               # model, checkpoint restore, the validation sets' loading)
               "train_seconds": logger.step_seconds, "validation_seconds": validation_seconds,
               "export_seconds": export_seconds,
               "setup_seconds": wall_seconds - logger.step_seconds - validation_seconds - export_seconds,
               "bin_validation": validate.last_bins, "best_rule": validate.rule,
               # the AUC of the model best.keras holds (on a resumed run without a new choice: the best seen)
               "best_validation_auc": validate.best if validate.best_score is None else validate.best_score,
               "best_validation_step": validate.best_step,
               "best_validation_accuracy": validate.best_accuracy, "exports": exports, "synthetic": data.synthetic,
               "peak_lr": peak_lr(config, global_batch)}
    if chief:
        # One line per invocation: a resumed or time-limited run appends its own.
        with open(run_dir / "train_summary.jsonl", "a") as f:
            f.write(json.dumps(summary) + "\n")
    return summary


def _record_resolved(config, run_dir, chief, data, steps, global_batch):
    """Put the values the run resolved into config (and RUN/config.json): the data's classes and image size,
    the peak lr, the steps. config.json then says what was trained, not what was left to defaults."""
    config.num_classes = data.num_classes
    config.image_size = config.image_size or f"{data.image_size[0]}x{data.image_size[1]}"
    config.max_steps = steps if config.epochs is None else config.max_steps
    if config.lr is None:
        config.lr = peak_lr(config, global_batch)
    if chief and (run_dir / "config.json").is_file():   # train.py wrote it; an API caller may not have
        from training.run_dir import save_run_config
        save_run_config(run_dir, config)


@contextlib.contextmanager
def _data_errors_explained(data):
    """Turn the input pipeline's errors that name no file (a corrupt record, an image of another size
    than manifest.json says) into one line naming the shard or manifest and the fix."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        explained = data.read_error(e)
        if explained is None:
            raise
        raise explained from None


def _warn_about_settings(config, log):
    if config.xla and not tf.config.list_physical_devices("GPU"):
        # benchmarks/backbone_step.py and xla_layers.py on a 2-core AMD EPYC: with XLA the step ran at
        # 0.09x (MobileFaceNet: XLA's CPU depthwise convolution), 0.79x (ResFace20), 0.82x (LResNet50E-IR).
        log("warning: --xla is slower on CPU for every backbone (mobilefacenet about 10x slower: XLA's CPU "
            "depthwise convolution; resface/lresnet about 0.8x); --xla auto leaves it off on CPU")


# After the end-of-run barrier the chief, whose process hosts TensorFlow's coordination service,
# waits this long before it returns, so that the other workers exit first, and exits well before
# the service's heartbeat timeout would call a departed worker unhealthy.
EXIT_GRACE_SECONDS = 3.0


def _wait_for_every_worker(strategy, chief):
    """Under several workers, return once every worker has come here (the chief's exports done),
    the chief a little later than the others. A worker that exits while another still runs shows
    there as an error line of TensorFlow's collectives (tensorflow/tensorflow#58434), and so does
    the coordination service's process (the chief's) exiting before the others. A collective
    all-reduce of one number is the barrier."""
    if getattr(strategy.extended, "_num_workers", 1) > 1:
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.ones(())), axis=None)
        if chief:
            time.sleep(EXIT_GRACE_SECONDS)


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
