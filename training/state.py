"""The training state built from a config: the model (input scaling + backbone), head, lr schedule, SGD.

``train.py``, the benchmarks and the diagnostics build their models through ``build_training_state``,
so what they time or probe is what ``train.py`` trains.
"""

import contextlib
import dataclasses

import keras

import losses
import models
from training.config import reference_lr
from training.export import build_embedding_model
from training.schedules import build_lr_schedule


@dataclasses.dataclass
class TrainingState:
    model: keras.Model             # RGB [B, H, W, 3] in [0, 255] -> float32 embeddings [B, D]: trained and exported
    backbone: keras.Model          # scaled images [B, H, W, 3] -> embeddings [B, D] (inside ``model``)
    head: keras.layers.Layer       # (embeddings [B, D], labels [B]) -> float32 logits [B, C]
    optimizer: keras.optimizers.Optimizer
    schedule: keras.optimizers.schedules.LearningRateSchedule


def backbone_options(config):
    """The keyword options ``models.build_backbone`` gets: ``config.backbone_options`` plus --dropout."""
    options = dict(config.backbone_options or {})
    if config.dropout is not None:
        options["dropout"] = config.dropout
    return options


def build_training_state(config, num_classes, image_size, total_steps, global_batch=None):
    """Build (under the current tf.distribute scope, if any) everything the loop updates.

    ``image_size`` is (H, W); ``total_steps`` sizes the schedule; ``global_batch`` (default: the
    config's batch size) sets the peak lr when ``config.lr`` is None (``peak_lr``). Mixed precision
    applies to the backbone only: heads pin their own dtype to float32.
    """
    with dtype_policy(config.mixed_precision):
        backbone = models.build_backbone(config.backbone, image_size=image_size,
                                         embedding_size=config.embedding_size, **backbone_options(config))
        head = (losses.build_partial_fc_head(config.loss, num_classes, config.partial_fc, **config.head_options)
                if config.partial_fc is not None else losses.build_head(config.loss, num_classes, **config.head_options))
        head.build((None, config.embedding_size))
        schedule = build_lr_schedule(config.lr_schedule, peak_lr(config, global_batch or config.batch_size),
                                     total_steps, config.warmup_steps)
        optimizer = build_optimizer(config, schedule, backbone.trainable_variables + head.trainable_variables)
        model = build_embedding_model(backbone, image_size)
    return TrainingState(model, backbone, head, optimizer, schedule)


def build_optimizer(config, schedule, variables):
    """SGD with momentum over ``variables`` (built, so its slots exist before a checkpoint restore);
    wrapped in loss scaling for float16."""
    # clipnorm is per variable in Keras; global_clipnorm bounds the whole update direction,
    # which is what guards against one exploding step (None = no clipping).
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum,
                                     global_clipnorm=config.clip_grad_norm)
    if config.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(variables)
    return optimizer


def decayed_variables(backbone, head, head_wd_mult):
    """(variable, multiplier) pairs that get weight decay: conv/dense kernels of the backbone and
    the head's class centres (x head_wd_mult). BN gamma/beta, PReLU slopes and biases are excluded,
    as in insightface and the AM-Softmax reference."""
    pairs = [(v, 1.0) for v in backbone.trainable_variables if v.path.endswith("kernel")]
    if head.kernel.trainable:   # Partial FC decays its sampled centres in its own update
        pairs.append((head.kernel, float(head_wd_mult)))
    return pairs


def peak_lr(config, global_batch):
    """--lr, or the reference lr scaled to the global batch (training.config.reference_lr)."""
    return config.lr if config.lr is not None else reference_lr(global_batch)


@contextlib.contextmanager
def dtype_policy(mixed_precision):
    """Build layers under mixed_float16/mixed_bfloat16 without leaking the global policy:
    a layer keeps the policy it was built with."""
    previous = keras.mixed_precision.global_policy()
    if mixed_precision != "off":
        keras.mixed_precision.set_global_policy(f"mixed_{mixed_precision}")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
