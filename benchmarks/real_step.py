"""train.py's own training step on a fixed batch: the one home for every speed benchmark's step.

A benchmark that writes its own step times something train.py never runs. This builds the state
with training.state.build_training_state and the step with training.trainer.make_train_step (the
default strategy), and feeds one fixed random batch through tf.data so the input pipeline is not
what is timed.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class RealStep:
    """A ready-to-time training step. ``run()`` does one step and returns its mean loss (a float:
    reading it waits for the step to finish)."""

    state: object        # training.state.TrainingState
    step_fn: object      # make_train_step's tf.function
    iterator: object     # the distributed iterator over the repeated batch
    batch_size: int

    def run(self):
        return float(self.step_fn(self.iterator)["loss"])


def make_real_step(backbone, batch_size, image_size, num_classes, *, lr=0.01, xla=False,
                   mixed_precision="off", backbone_options=None, stock_layers=False, autodiff_prelu=False,
                   seed=0, embedding_size=512, partial_fc=None):
    """Build train.py's state and step for `backbone` on one random batch of uint8-range images.

    image_size: (height, width); lr: constant learning rate (SGD momentum 0.9 and weight decay as
    train.py); mixed_precision: "off", "float16" or "bfloat16" as --mixed-precision;
    backbone_options: None = what train.py trains by default (models.TRAINING_OPTIONS, e.g. ResFace
    with batch norm); {} = the published network. stock_layers: Keras' own BatchNormalization and
    PReLU instead of models/layers.py's fused ones (the same model, the stock step), to measure them.
    autodiff_prelu: FastPReLU's select differentiated by TensorFlow's autodiff in training, as it
    ran before its XLA training kernels, to measure them. partial_fc: --partial-fc's sample rate
    (None: the full head).
    """
    import keras
    import tensorflow as tf

    import models
    from training.config import TrainConfig
    from training.state import build_training_state
    from training.trainer import make_train_step

    keras.utils.set_random_seed(seed)
    config = TrainConfig(backbone=backbone, batch_size=batch_size, num_classes=num_classes, lr=lr,
                         lr_schedule="constant", xla=xla, mixed_precision=mixed_precision,
                         embedding_size=embedding_size, partial_fc=partial_fc,
                         backbone_options=dict(models.TRAINING_OPTIONS.get(backbone, {})
                                               if backbone_options is None else backbone_options))
    strategy = tf.distribute.get_strategy()
    state = build_training_state(config, num_classes, tuple(image_size), 30000)
    if stock_layers or autodiff_prelu:
        from models.layers import with_stock_layers
        backbone = with_stock_layers(state.backbone) if stock_layers else _with_autodiff_prelu(state.backbone)
        state = _with_backbone(state, config, image_size, backbone)
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch_size, *image_size, 3)).astype("float32")   # the model scales
    labels = rng.integers(0, num_classes, batch_size).astype("int32")
    data = strategy.distribute_datasets_from_function(
        lambda ctx: tf.data.Dataset.from_tensors((images, labels)).repeat())
    step_fn = make_train_step(strategy, state.model, state.head, state.optimizer, config, batch_size)
    return RealStep(state=state, step_fn=step_fn, iterator=iter(data), batch_size=batch_size)


def _with_backbone(state, config, image_size, backbone):
    """The state around another backbone of the same variables (its own optimizer)."""
    from training.export import build_embedding_model
    from training.state import build_optimizer, decayed_variables

    optimizer = build_optimizer(config, state.schedule, backbone.trainable_variables + state.head.trainable_variables,
                                decayed_variables(backbone, state.head, config.head_wd_mult, config.weight_decay_rule))
    return dataclasses.replace(state, backbone=backbone, model=build_embedding_model(backbone, tuple(image_size)),
                               optimizer=optimizer)


def _with_autodiff_prelu(backbone):
    """A copy of ``backbone`` whose FastPReLU layers train through the select's autodiff (same weights)."""
    from models.layers import FastPReLU, with_layer_classes

    class AutodiffPReLU(FastPReLU):
        def call(self, inputs, training=None):
            return super().call(inputs, training=False)   # the select, whatever the mode

    return with_layer_classes(backbone, {FastPReLU: AutodiffPReLU})
