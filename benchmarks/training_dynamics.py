#!/usr/bin/env python3
"""Training dynamics of the real training step: why a backbone learns or collapses.

Runs ``train.py``'s own state (training.state.build_training_state) and step
(training.trainer.make_train_step) on TFRecord shards, and every --probe-every steps measures, on
that step's batch, without changing the training:
- per stage: activation RMS and mean pairwise cosine of different images' activations,
  gradient norm, weight norm, lr·|grad|/|weight| (the relative size of one SGD step), PReLU slopes;
- the embeddings: mean norm, mean pairwise cosine of different-identity pairs, and the
  common-mode ratio |mean embedding| / RMS deviation from it;
- loss and training accuracy. At the end, held-out validation (accuracy, AUC, cosine of different
  people) through the same code as train.py's validation.

    python -m benchmarks.training_dynamics --data data/lfw_view1/shards --backbone resface20 \\
        --lr 0.1 --batch-size 64 --steps 30 --output data/dynamics/resface20_lr0.1.jsonl

Any train.py setting can be given as ``--set KEY=VALUE`` (e.g. ``--set warmup_steps=100``,
``--set backbone_options={batch_norm: true}``). One JSON line per probe, then a summary line.
"""

import argparse
import json
import sys
import time

from fileio.quiet_tensorflow import quiet_tensorflow

quiet_tensorflow()   # before TensorFlow loads: its C++ start-up lines stay out of the output


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="TFRecord folder (with held-out val split for the final check)")
    p.add_argument("--backbone", default="resface20")
    p.add_argument("--lr", type=float, default=0.1, help="peak lr of a constant schedule (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--probe-every", type=int, default=5)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig field (value parsed as YAML), repeatable")
    p.add_argument("--output", required=True, help="JSON-lines file of probes and the summary")
    return p.parse_args(argv)


def stage_of(path):
    """Group a layer or variable path: 'stem', 'stage1'..'stage4', 'embedding' or 'head'."""
    name = path.split("/")[-2] if "/" in path else path
    for part in name.split("_"):
        if part.startswith("stage"):
            return part
    if name.startswith(("embedding", "flatten", "head", "gdc")):
        return "embedding"
    return "stem"


def main(argv=None):
    args = parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf
    import yaml

    from losses.loss import margin_softmax_loss
    from models.scaling import scale_images
    from tfrecords.manifest import open_shards
    from training.config import resolve_config
    from training.data import singleton_roles, tfrecord_data
    from training.schedules import margin_warmup_weight
    from training.state import build_training_state
    from training.trainer import different_identity_cosines, make_train_step
    from training.validation import make_validator

    cli = {"data": args.data, "backbone": args.backbone, "lr": args.lr, "lr_schedule": "constant",
           "batch_size": args.batch_size, "max_steps": args.steps}
    for item in args.set:
        key, _, value = item.partition("=")
        cli[key.replace("-", "_")] = yaml.safe_load(value)
    config = resolve_config(cli)
    from training.hardware import resolve_auto_settings

    for line in resolve_auto_settings(config):  # --mixed-precision/--xla auto, as train.py resolves them
        print(line)
    keras.utils.set_random_seed(config.seed)
    shards = open_shards(config.data)
    data = tfrecord_data(shards, config.batch_size, shuffle_buffer=config.shuffle_buffer, seed=config.seed)
    strategy = tf.distribute.get_strategy()
    state = build_training_state(config, data.num_classes, data.image_size, config.max_steps)
    backbone, head = state.backbone, state.head
    # --set singletons=negatives / singleton_weight=W reach the step (and the probe) as in train.py.
    class_weights, negative_classes, _ = singleton_roles(config, data)
    step_fn = make_train_step(strategy, state.model, head, state.optimizer, config, config.batch_size,
                              class_weights, negative_classes)

    # The last layer of each stage: its output is that stage's activation.
    stage_ends = {}
    for layer in backbone.layers[1:]:
        stage_ends[stage_of(layer.name + "/x")] = layer.name
    probe_model = keras.Model(backbone.inputs, [backbone.get_layer(n).output for n in stage_ends.values()])
    groups = {}
    variables = backbone.trainable_variables + head.trainable_variables
    for v in variables:
        groups.setdefault("head" if v is head.kernel else stage_of(v.path), []).append(v)

    def pairwise_cosine_of_different(x, labels):
        # The training step's own measure (overflow-safe), as a mean.
        total, pairs = different_identity_cosines(x, labels)
        return total / tf.maximum(pairs, 1.0)

    @tf.function
    def probe(images, labels):
        with tf.GradientTape() as tape:
            outs = probe_model(scale_images(images), training=True)   # the reader gives raw pixels
            embeddings = outs[-1]
            # The training step's margin and loss settings, so the probe's loss is the step's.
            margin_weight = margin_warmup_weight(state.optimizer.iterations, config.margin_warmup_steps)
            loss = margin_softmax_loss(
                labels, head(embeddings, labels, margin_weight=margin_weight), focal_gamma=config.focal,
                class_weights=class_weights, negative_classes=negative_classes) + head.auxiliary_loss(embeddings)
        grads = tape.gradient(loss, variables)
        grad_of = {id(v): g for v, g in zip(variables, grads)}
        stats = {"loss": loss}
        for name, act in zip(stage_ends, outs):
            act = tf.cast(act, tf.float32)
            stats[f"act_rms/{name}"] = tf.sqrt(tf.reduce_mean(tf.square(act)))
            stats[f"act_cos/{name}"] = pairwise_cosine_of_different(act, labels)
        for name, vs in groups.items():
            stats[f"grad/{name}"] = tf.linalg.global_norm([grad_of[id(v)] for v in vs])
            stats[f"weight/{name}"] = tf.linalg.global_norm([tf.cast(v, tf.float32) for v in vs])
        e = tf.cast(embeddings, tf.float32)
        mean = tf.reduce_mean(e, axis=0)
        stats["emb_norm"] = tf.reduce_mean(tf.norm(e, axis=1))
        stats["emb_common_mode"] = tf.norm(mean) / tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(e - mean), 1)))
        stats["emb_cos_different"] = pairwise_cosine_of_different(e, labels)
        return stats

    prelus = {}
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.PReLU):
            prelus.setdefault(stage_of(layer.name + "/x"), []).append(layer.alpha)

    # The probe must not change the training: BN moving statistics are restored after it.
    non_trainable = backbone.non_trainable_variables
    iterator = iter(data.dataset_fn(None, 0))
    # One fixed batch (another seed's stream) for every probe, so probes are comparable over steps.
    probe_images, probe_labels = next(iter(tfrecord_data(shards, config.batch_size, seed=1234).dataset_fn(None, 0)))
    out = open(args.output, "w")
    started = time.perf_counter()
    history = []
    for step in range(1, config.max_steps + 1):
        if step == 1 or step % args.probe_every == 0:
            saved = [v.numpy() for v in non_trainable]
            stats = {k: float(v) for k, v in probe(probe_images, probe_labels).items()}
            for v, value in zip(non_trainable, saved):
                v.assign(value)
            lr = float(state.schedule(state.optimizer.iterations))
            for name in groups:
                stats[f"update_ratio/{name}"] = lr * stats[f"grad/{name}"] / max(stats[f"weight/{name}"], 1e-12)
            for name, alphas in prelus.items():
                a = np.concatenate([np.ravel(x.numpy()) for x in alphas])
                stats[f"prelu/{name}"] = [float(a.mean()), float(a.min()), float(a.max())]
            stats.update(step=step - 1, lr=lr)   # the state before this step's update
            out.write(json.dumps(stats) + "\n")
            out.flush()
            history.append(stats)
            print(f"step {step - 1:4d} loss {stats['loss']:.3f} emb_cos {stats['emb_cos_different']:.3f} "
                  f"common {stats['emb_common_mode']:.2f} |e| {stats['emb_norm']:.3g} "
                  + " ".join(f"{g}:{stats[f'update_ratio/{g}']:.1e}" for g in groups), flush=True)
        loss = step_fn(iterator)["loss"]
    seconds = time.perf_counter() - started
    validator = make_validator(config, data)
    metrics = None
    if validator is not None:
        from training.export import build_embedding_model
        metrics = validator(build_embedding_model(backbone, data.image_size))
    summary = {"summary": True, "config": {k: getattr(config, k) for k in (
        "backbone", "backbone_options", "lr", "batch_size", "warmup_steps", "clip_grad_norm", "mixed_precision")},
        "steps": config.max_steps, "seconds": seconds, "last_train_loss": float(loss),
        "heldout": None if metrics is None else {k: metrics[k] for k in (
            "accuracy_mean", "auc", "different_similarity_mean", "same_similarity_mean")}}
    out.write(json.dumps(summary) + "\n")
    out.close()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
