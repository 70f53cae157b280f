"""Layer factories shared by the backbones (channels-last).

Every backbone takes scaled images [B, H, W, 3] (see models/scaling.py) and uses built-in layers,
except batch norm and PReLU, which are the stock classes with a cheaper step (models/layers.py:
same variables and maths). Exports swap those back (``models.layers.with_stock_layers``), so a
saved model reloads with ``keras.saving.load_model(path, safe_mode=True)`` and no custom objects,
on the TensorFlow, JAX and PyTorch backends alike.
"""

import keras

from models.layers import FastPReLU, FusedBatchNormalization

DATA_FORMAT = "channels_last"  # explicit, so a user's keras.json image_data_format cannot flip it


def caffe_xavier():
    """Caffe's "xavier" filler: U(-a, a), a = sqrt(3 / fan_in) (Caffe default variance_norm FAN_IN)."""
    return keras.initializers.VarianceScaling(scale=1.0, mode="fan_in", distribution="uniform")


def gaussian(stddev):
    """Caffe "gaussian" filler N(0, stddev^2)."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=stddev)


def msra_fan_out():
    """insightface's mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2).

    N(0, 2 / fan_out) with fan_out = k_h * k_w * out_channels; same as PyTorch
    kaiming_normal_(mode="fan_out") used by arcface_torch.
    """
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def msra_fan_out_depthwise():
    """``msra_fan_out`` for a depthwise kernel, with MXNet/PyTorch's fan_out = k_h * k_w * channels.

    Keras computes a depthwise kernel's [k_h, k_w, C, 1] fan_out as k_h * k_w and its fan_in as
    k_h * k_w * C, so Keras' "fan_in" mode is the reference's fan_out.
    """
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_in", distribution="untruncated_normal")


def conv2d(filters, kernel_size, strides=1, *, use_bias, kernel_initializer, name, padding="same"):
    """Conv2D, "same" padding by default.

    With stride 2 on an even size, "same" gives H/2 like the references' pad=1, but pads
    bottom/right (TF convention) where Caffe/MXNet pad both sides: the sampling grid is shifted by
    one pixel, which changes nothing in parameter count, FLOPs or training from scratch.
    """
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
        kernel_initializer=kernel_initializer, data_format=DATA_FORMAT, name=name)


def depthwise_conv2d(kernel_size, strides=1, *, name, padding="same"):
    """Depthwise (groups = channels) conv without bias, insightface init."""
    return keras.layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding=padding, use_bias=False,
        depthwise_initializer=msra_fan_out_depthwise(), data_format=DATA_FORMAT, name=name)


def prelu(name):
    """Per-channel PReLU (shared over H, W as in Caffe/insightface), slopes initialised to 0.25.

    0.25 is the Caffe, MXNet and PyTorch default; Keras' own default (0) would start as ReLU.
    """
    return FastPReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name)


def batch_norm(name, *, epsilon, momentum, scale=True):
    """BatchNormalization over the last axis. ``scale=False`` is MXNet's fix_gamma=True (gamma = 1).

    ``momentum`` has the MXNet/TF meaning: moving = momentum * moving + (1 - momentum) * batch.
    """
    return FusedBatchNormalization(axis=-1, momentum=momentum, epsilon=epsilon, scale=scale, name=name)


def flatten(name="flatten"):
    return keras.layers.Flatten(data_format=DATA_FORMAT, name=name)
