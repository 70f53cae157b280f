"""Batch norm and PReLU with the stock layers' variables and maths, but a cheaper step.

Keras 3's ``BatchNormalization`` on the TensorFlow backend computes ``tf.nn.moments`` and then
``tf.nn.batch_normalization``: about ten element-wise kernels forward and more backward, where
tf.keras 2 ran one fused kernel (``FusedBatchNormV3``, oneDNN on CPU, cuDNN on GPU). ``PReLU`` is
relu(x) - alpha * relu(-x): five kernels where one select does. Together they were ~60 % of
MobileFaceNet's CPU training step (benchmarks/README.md, "Fused batch norm and PReLU").

- ``FusedBatchNormalization`` is a ``keras.layers.BatchNormalization`` (same variables, names,
  config, moving-average rule). On the TensorFlow backend, for channel-last inputs, it runs the
  fused kernel; on JAX and PyTorch, and for masks, renorm or synchronised BN, the stock code.
- ``FastPReLU`` is a ``keras.layers.PReLU`` computing ``where(x >= 0, x, alpha * x)``: the same
  function and gradients as the stock expression, except the input gradient at exactly x = 0 (stock
  0, as relu'(0) = 0 in both its terms; here 1; both are subgradients). In training on TensorFlow,
  forward and backward are each one XLA-compiled kernel (``tf.custom_gradient``): TensorFlow's
  autodiff of the select is nine passes over the activation (compare, multiply, select forward;
  two selects, two multiplies, a sum and an add backward), which took 47 % of the ops' time in
  MobileFaceNet's step. One PReLU forward + backward on [64, 28, 24, 128] took 18.1 ms this way
  against 31.7 ms for the select's autodiff and 30.0 ms for the stock layer (Intel Xeon, 2 cores;
  benchmarks/xla_layers.py). Elsewhere (inference, JAX, PyTorch) the select in ``keras.ops``.

Exports hold only built-in layers (``.keras`` files load with ``safe_mode=True`` anywhere Keras
is installed): ``with_stock_layers`` swaps these for the stock classes, weights unchanged.
"""

import functools

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="faceid")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` running TensorFlow's fused kernel where it applies."""

    def _fused_applies(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) in (2, 4)
                and self.axis % len(inputs.shape) == len(inputs.shape) - 1)

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # As the stock layer: statistics in float32 also under mixed precision.
        x = tf.cast(inputs, tf.float32)
        rank2 = len(inputs.shape) == 2
        if rank2:   # [B, D] -> [B, 1, 1, D]: the fused kernel is NHWC only
            x = x[:, None, None, :]
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, data_format="NHWC", is_training=True)
            # The kernel returns the Bessel-corrected batch variance (n / (n - 1)) for the moving
            # average; the stock layer averages the biased one, which is also what y was normalised with.
            count = tf.cast(tf.size(x) // channels, tf.float32)
            variance = variance * tf.maximum(count - 1.0, 0.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + tf.stop_gradient(mean) * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum
                                        + tf.stop_gradient(variance) * (1.0 - momentum))
        else:
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, data_format="NHWC", is_training=False)
        if rank2:
            y = y[:, 0, 0, :]
        return ops.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="faceid")
class FastPReLU(keras.layers.PReLU):
    """``keras.layers.PReLU`` as one select: x where x >= 0, alpha * x elsewhere; XLA kernels in training on TF."""

    def call(self, inputs, training=None):
        alpha = ops.cast(self.alpha, inputs.dtype)
        if training and keras.backend.backend() == "tensorflow":
            return _xla_prelu()(inputs, alpha)
        return ops.where(inputs >= 0, inputs, alpha * inputs)


@functools.cache
def _xla_prelu():
    """PReLU with a custom gradient, forward and backward each one XLA kernel (TensorFlow only).

    ``f(x [B, ...], alpha [...] broadcast over x[0]) -> where(x >= 0, x, alpha * x)``; the backward
    gives ``dx = where(x >= 0, g, alpha * g)`` and ``dalpha`` = the sum of ``g * x`` over x < 0 and the
    axes alpha is broadcast along, accumulated in float32 and rounded once to the compute dtype (as
    TensorFlow's own bfloat16 sum does). XLA compiles each activation shape once, on the step's
    first call.
    """
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def forward(x, alpha):
        return tf.where(x >= 0, x, alpha * x)

    @tf.function(jit_compile=True)
    def backward(x, alpha, upstream):
        negative = x < 0
        dx = tf.where(negative, alpha * upstream, upstream)
        # Axes alpha is broadcast along: the batch axis, and every axis where alpha has size 1.
        offset = len(x.shape) - len(alpha.shape)
        axes = list(range(offset)) + [offset + i for i, n in enumerate(alpha.shape) if n == 1]
        dalpha = tf.reduce_sum(tf.where(negative, tf.cast(upstream, tf.float32) * tf.cast(x, tf.float32), 0.0),
                               axis=axes)
        return dx, tf.cast(tf.reshape(dalpha, alpha.shape), alpha.dtype)

    @tf.custom_gradient
    def prelu(x, alpha):
        return forward(x, alpha), lambda upstream: backward(x, alpha, upstream)

    return prelu


STOCK_CLASS = {FusedBatchNormalization: keras.layers.BatchNormalization, FastPReLU: keras.layers.PReLU}


def with_stock_layers(model):
    """A copy of ``model`` (possibly nesting models) whose fast layers are the stock Keras classes,
    with the same weights: what exports hold. Returns ``model`` itself when it has none."""
    return with_layer_classes(model, STOCK_CLASS)


def with_layer_classes(model, classes):
    """A copy of ``model`` (possibly nesting models) in which each layer whose class is a key of
    ``classes`` ({class: replacement class}) is rebuilt from its config as the replacement, with the
    same weights. Returns ``model`` itself when it has no such layer."""
    if not any(type(layer) in classes for layer in _all_layers(model)):
        return model

    def rebuild(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=rebuild)
        return classes.get(type(layer), type(layer)).from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=rebuild)
    copy.set_weights(model.get_weights())
    return copy


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
