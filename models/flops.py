"""Forward FLOPs of a functional Keras model, per image, from its layers' shapes.

Counted: Conv1D/2D/3D (grouped too), DepthwiseConv1D/2D, SeparableConv1D/2D and Dense, as
2 FLOPs per multiply-add (the convention of the FLOP figures quoted by the papers' authors is
multiply-adds; divide by 2 to compare). Not counted: bias adds, batch norm, activations, residual
adds, pooling, dropout - elementwise work, under 1 % of these backbones' FLOPs. A layer that has a
kernel but is of a type not listed raises, so a count is never silently short.
"""

import math

import keras

_CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
               keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE_TYPES = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRANSPOSED_TYPES = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                     keras.layers.Conv3DTranspose)


def _output_positions(layer):
    """Number of output positions (product of all but batch and channel dims) of a layer called once."""
    if len(getattr(layer, "_inbound_nodes", ())) > 1:  # Keras' .output would silently give call 1
        raise ValueError(f"count_forward_flops: layer {layer.name!r} is called more than once; "
                         "shared layers are not supported")
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError) as error:
        raise ValueError(f"count_forward_flops: layer {layer.name!r} must be called exactly once in a "
                         f"functional model ({error})") from error
    spatial = shape[1:-1]
    if any(dim is None for dim in spatial):
        raise ValueError(f"count_forward_flops: layer {layer.name!r} has an unknown output shape {shape}; "
                         "build the model with a fixed input size")
    return math.prod(spatial)


def layer_multiply_adds(layer):
    """Multiply-adds of one layer for one image (0 for layers without a kernel)."""
    if isinstance(layer, keras.Model):
        return sum(layer_multiply_adds(inner) for inner in layer.layers)
    if isinstance(layer, _TRANSPOSED_TYPES):
        raise NotImplementedError(f"count_forward_flops: transposed conv {layer.name!r} is not supported")
    if isinstance(layer, _SEPARABLE_TYPES):
        # depthwise part at output resolution, then a 1x1 conv over the output positions.
        positions = _output_positions(layer)
        return positions * (math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape))
    if isinstance(layer, _CONV_TYPES):
        # kernel [k..., C_in / groups, C_out] or depthwise [k..., C_in, multiplier]: each output
        # position does exactly one multiply-add per kernel entry.
        return _output_positions(layer) * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.Dense):
        return _output_positions(layer) * math.prod(layer.kernel.shape)
    if any(getattr(w, "path", "").endswith("kernel") for w in layer.weights):
        raise NotImplementedError(
            f"count_forward_flops: layer {layer.name!r} ({type(layer).__name__}) has a kernel but no "
            "FLOP rule; add one in models/flops.py")
    return 0


def count_forward_flops(model):
    """Forward FLOPs per image (int): 2 x multiply-adds of convs, depthwise convs and dense layers."""
    if not model.built or not hasattr(model, "layers"):
        raise ValueError("count_forward_flops needs a built functional or Sequential Keras model")
    return 2 * sum(layer_multiply_adds(layer) for layer in model.layers)
