"""The training state built from a config: the model (input scaling + backbone), head, lr schedule, SGD.

``train.py``, the benchmarks and the diagnostics build their models through ``build_training_state``,
so what they time or probe is what ``train.py`` trains.
"""

import contextlib
import dataclasses

import keras
from keras import ops

import models
from losses.heads import build_head
from losses.partial_fc import build_partial_fc_head
from training.config import reference_lr
from training.export import build_embedding_model
from training.partial_fc import fill_initial_centres
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


def build_training_state(config, num_classes, image_size, total_steps, global_batch=None, head_holds_centres=True):
    """Build (under the current tf.distribute scope, if any) everything the loop updates.

    ``image_size`` is (H, W); ``total_steps`` sizes the schedule; ``global_batch`` (default: the
    config's batch size) sets the peak lr when ``config.lr`` is None (``peak_lr``);
    ``head_holds_centres=False`` builds a Partial FC head without centres (they are sharded by
    training.partial_fc_sharded, outside the strategy's scope). Mixed precision
    applies to the backbone only: heads pin their own dtype to float32.
    """
    with dtype_policy(config.mixed_precision):
        backbone = models.build_backbone(config.backbone, image_size=image_size,
                                         embedding_size=config.embedding_size, **backbone_options(config))
        head = (build_partial_fc_head(config.loss, num_classes, config.partial_fc, head_holds_centres,
                                      draw_centres=False, **config.head_options)
                if config.partial_fc is not None else build_head(config.loss, num_classes, **config.head_options))
        head.build((None, config.embedding_size))
        if config.partial_fc is not None and head_holds_centres:
            fill_initial_centres(head.kernel.value, head)   # in place, block by block
        schedule = build_lr_schedule(config.lr_schedule, peak_lr(config, global_batch or config.batch_size),
                                     total_steps, config.warmup_steps)
        lr_mult = 1.0 if config.backbone_lr_mult is None else config.backbone_lr_mult
        optimizer = build_optimizer(config, schedule, backbone.trainable_variables + head.trainable_variables,
                                    decayed_variables(backbone, head, config.head_wd_mult, config.weight_decay_rule),
                                    [(v, lr_mult) for v in backbone.trainable_variables] if lr_mult != 1.0 else ())
        model = build_embedding_model(backbone, image_size)
    return TrainingState(model, backbone, head, optimizer, schedule)


def build_optimizer(config, schedule, variables, decayed=(), lr_mults=()):
    """SGD with momentum over ``variables`` (built, so its slots exist before a checkpoint restore),
    decaying the ``decayed`` (variable, multiplier) pairs by ``config.weight_decay`` and clipping to
    ``config.clip_grad_norm`` in Caffe's order (ReferenceSGD); wrapped in loss scaling for float16.
    ``lr_mults``: (variable, multiplier) pairs whose lr is the schedule's x multiplier (fine-tuning's
    --backbone-lr-mult); every other variable gets the schedule's."""
    optimizer = ReferenceSGD(learning_rate=schedule, momentum=config.momentum,
                             l2_decay=config.weight_decay, clip_grad_norm=config.clip_grad_norm)
    sgd = optimizer
    if config.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(sgd)   # unscales before ReferenceSGD sees them
    optimizer.build(variables)
    sgd.set_decay(decayed)
    sgd.set_lr_mults(lr_mults)
    return optimizer


class ReferenceSGD(keras.optimizers.SGD):
    """Keras SGD with momentum, plus L2 weight decay and global-norm clipping applied in the order of
    Caffe's SGDSolver::ApplyUpdate (ClipGradients, Normalize, Regularize, ComputeUpdateValue):

        g  = clip(Σ_replicas ∇loss, clip_grad_norm)       # the loss gradient alone is clipped
        g += l2_decay · mult · w                          # then the decay is added (coupled L2)
        v  = momentum · v + lr · g;   w -= v              # Keras keeps m = −v

    ``l2_decay`` is coupled L2 (the gradient of ½·wd·Σ mult·w², through momentum, as Caffe, mxnet and
    torch.optim.SGD apply it), not Keras' own ``weight_decay`` (decoupled: w -= lr·wd·w).
    """

    def __init__(self, learning_rate, momentum, l2_decay=0.0, clip_grad_norm=None, name="reference_sgd"):
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name)
        self.l2_decay = float(l2_decay)
        self.clip_grad_norm = clip_grad_norm
        self._decay_mults = {}   # optimizer variable index -> multiplier
        self._lr_mults = {}      # optimizer variable index -> lr multiplier (fine-tuning's backbone)

    def set_decay(self, pairs):
        """Decay these (variable, multiplier) pairs (after ``build``); every other variable gets none."""
        self._decay_mults = {self._get_variable_index(v): float(mult) for v, mult in pairs}

    def set_lr_mults(self, pairs):
        """Scale the lr of these (variable, multiplier) pairs (after ``build``); the others keep the schedule's."""
        self._lr_mults = {self._get_variable_index(v): float(mult) for v, mult in pairs}

    def _clip_gradients(self, grads):
        # Keras clips here, before the TF replicas' all-reduce: that would clip each replica's share.
        # With one replica it is the summed gradient, so clip here; else after the all-reduce (below).
        if self.clip_grad_norm is None or _replicas_in_sync() > 1:
            return grads
        return clip_by_global_norm(grads, self.clip_grad_norm)

    def _all_reduce_sum_gradients(self, grads_and_vars):   # TensorFlow backend only
        pairs = super()._all_reduce_sum_gradients(grads_and_vars)
        if self.clip_grad_norm is None or _replicas_in_sync() <= 1:
            return pairs
        clipped = clip_by_global_norm([g for g, _ in pairs], self.clip_grad_norm)
        return [(g, v) for g, (_, v) in zip(clipped, pairs)]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        mult = self._decay_mults.get(index, 0.0)
        if mult and self.l2_decay:
            gradient = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(self.l2_decay * mult, variable))
        if index in self._lr_mults:   # the step v = momentum·v + lr·mult·g: a slower backbone, same momentum
            learning_rate = ops.multiply(learning_rate, self._lr_mults[index])
        super().update_step(gradient, variable, learning_rate)


def clip_by_global_norm(grads, clip_norm):
    """Scale ``grads`` (None entries kept) by clip_norm / max(‖grads‖₂, clip_norm), as Caffe's
    ClipGradients: the global L2 norm over every gradient is at most clip_norm."""
    present = [ops.cast(g, "float32") for g in grads if g is not None]
    norm = ops.sqrt(sum(ops.sum(ops.square(g)) for g in present))
    scale = clip_norm / ops.maximum(norm, clip_norm)
    return [None if g is None else g * ops.cast(scale, g.dtype) for g in grads]


def _replicas_in_sync():
    """Replicas of the enclosing tf.distribute strategy (1 outside one, or on another backend)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf
    return tf.distribute.get_strategy().num_replicas_in_sync


# --weight-decay-rule: which trainable variables get weight decay, as each reference decays them (the
# names train.py offers: training.config.WEIGHT_DECAY_RULE_NAMES).
# Keras names the last path component: "kernel" (conv, depthwise conv, dense, class centres), "bias",
# "gamma" / "beta" (batch norm scale / offset) and "alpha" (PReLU slopes).
WEIGHT_DECAY_RULES = {
    # conv/dense kernels and class centres only (the default, kept after an LFW View 1 run against
    # insightface's rule: docs/protocols.md)
    "kernels": lambda name: name == "kernel",
    # insightface's mxnet training: Optimizer.set_wd_mult gives wd_mult 0 to every parameter whose name
    # ends neither in _weight (conv, FC, class centres) nor _gamma (BN scale; mxnet names the PReLU
    # slope gamma too): kernels, BN gamma and PReLU slopes are decayed, biases and BN beta are not
    "insightface": lambda name: name in ("kernel", "gamma", "alpha"),
    # the SphereFace / AM-Softmax Caffe prototxts: decay_mult defaults to 1, and the conv / FC bias blobs
    # are given decay_mult 0, so everything but biases (PReLU slopes included). Their nets have no BN;
    # here BN gamma and beta count as a Caffe Scale layer's blobs, whose decay_mult default is 1.
    "caffe": lambda name: name != "bias",
    # arcface_torch: torch.optim.SGD(weight_decay=...) over every parameter of backbone and head
    "all": lambda name: True,
}


def decayed_variables(backbone, head, head_wd_mult, rule="kernels"):
    """(variable, multiplier) pairs that get weight decay under ``rule`` (WEIGHT_DECAY_RULES): the
    backbone's chosen variables x 1 and the head's (its class centres under every rule) x head_wd_mult."""
    if rule not in WEIGHT_DECAY_RULES:
        raise ValueError(f"--weight-decay-rule must be one of {', '.join(WEIGHT_DECAY_RULES)}, not {rule!r}")
    decays = WEIGHT_DECAY_RULES[rule]
    pairs = [(v, 1.0) for v in backbone.trainable_variables if decays(v.path.split("/")[-1])]
    pairs += [(v, float(head_wd_mult)) for v in head.trainable_variables if decays(v.path.split("/")[-1])]
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
