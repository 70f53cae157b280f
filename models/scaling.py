"""The one home of input scaling: uint8-range RGB pixels -> network input.

Every stage that feeds a backbone (the tf.data reader, the exported embedding model,
evaluation) goes through this module, so training and inference can never disagree.
"""

import keras

INPUT_OFFSET = 127.5
INPUT_SCALE = 1.0 / 128.0


def scale_images(x):
    """Return ``(x - 127.5) / 128`` for pixel values in [0, 255].

    Plain arithmetic, so it works on numpy arrays, tf tensors and jax arrays alike.
    Output range is [-0.996, 0.996].
    """
    return (x - INPUT_OFFSET) * INPUT_SCALE


def input_scaling_layer(name="input_scaling"):
    """A built-in Keras layer computing ``scale_images`` (loads with safe_mode, no custom objects)."""
    return keras.layers.Rescaling(scale=INPUT_SCALE, offset=-INPUT_OFFSET * INPUT_SCALE, name=name)
