"""MobileFaceNet (Chen et al. 2018), as in insightface's recognition/symbol/fmobilefacenet.py.

About 1.2 M parameters with a 512-d embedding (1.0 M with the paper's 128-d) and 0.44 GFLOP
(0.22 G multiply-adds) at 112x112: the backbone that trains in useful time on a CPU.

Layout (every conv has no bias; "Conv" = conv -> BN -> PReLU, "Linear" = conv -> BN):
    conv 3x3/2 64 -> depthwise 3x3 64
    -> bottleneck(64, expand 128, /2) -> 4 x residual bottleneck(64, expand 128)
    -> bottleneck(128, expand 256, /2) -> 6 x residual bottleneck(128, expand 256)
    -> bottleneck(128, expand 512, /2) -> 2 x residual bottleneck(128, expand 256)
    -> Conv 1x1 512 -> GDC: Linear depthwise (H/16 x W/16, valid) -> FC to the embedding -> BN
A bottleneck is Conv 1x1 (expand) -> Conv depthwise 3x3 (stride) -> Linear 1x1 (project).
The global depthwise conv's kernel is the final map: 7x7 for 112x112, 7x6 for 112x96.

Settings from the MXNet reference: BN epsilon 1e-3 (MXNet default) and momentum 0.9 in the body;
embedding BN with fixed gamma (``scale=False``) and epsilon 2e-5. The MXNet GDC's FC bias is dropped:
the BN right after it subtracts any bias, so it is redundant. Kernels: N(0, 2/fan_out), the insightface
initializer (fan_out = k*k*channels for depthwise kernels, as in MXNet/PyTorch).
"""

import keras

from models import common

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.9
# (output channels, expansion channels, residual units after the stride-2 bottleneck)
STAGES = ((64, 128, 4), (128, 256, 6), (128, 512, 2))
RESIDUAL_EXPANSION = (128, 256, 256)  # expansion inside the residual units of each stage


def _bn(name):
    return common.batch_norm(name, epsilon=BN_EPSILON, momentum=BN_MOMENTUM)


def conv_block(x, filters, kernel_size, strides, name, depthwise=False, activation=True,
               padding="same"):
    """(Depthwise) conv without bias -> BN -> [PReLU]."""
    if depthwise:
        x = common.depthwise_conv2d(kernel_size, strides, padding=padding, name=f"{name}_dwconv")(x)
    else:
        x = common.conv2d(filters, kernel_size, strides, use_bias=False, padding=padding,
                          kernel_initializer=common.msra_fan_out(), name=f"{name}_conv")(x)
    x = _bn(f"{name}_bn")(x)
    if activation:
        x = common.prelu(f"{name}_prelu")(x)
    return x


def bottleneck(x, filters, expansion, strides, name):
    """Inverted-residual body: [B, H, W, C] -> [B, H/strides, W/strides, filters] (no shortcut)."""
    x = conv_block(x, expansion, 1, 1, f"{name}_expand")
    x = conv_block(x, expansion, 3, strides, f"{name}_depthwise", depthwise=True)
    return conv_block(x, filters, 1, 1, f"{name}_project", activation=False)


def build_mobilefacenet(image_size=(112, 112), embedding_size=512, name="mobilefacenet"):
    """Scaled images [B, H, W, 3] -> embedding [B, embedding_size]."""
    height, width = image_size
    inputs = keras.Input(shape=(height, width, 3), name="images")
    x = conv_block(inputs, 64, 3, 2, "stem")
    x = conv_block(x, 64, 3, 1, "stem_depthwise", depthwise=True)
    for stage, ((filters, expansion, num_units), res_expansion) in enumerate(
            zip(STAGES, RESIDUAL_EXPANSION), start=1):
        x = bottleneck(x, filters, expansion, 2, f"stage{stage}_down")
        for unit in range(1, num_units + 1):
            prefix = f"stage{stage}_unit{unit}"
            y = bottleneck(x, filters, res_expansion, 1, prefix)
            x = keras.layers.Add(name=f"{prefix}_add")([x, y])
    x = conv_block(x, 512, 1, 1, "head_conv")
    # Global depthwise conv: one kernel tap per position of the final (H/16, W/16) map.
    x = conv_block(x, 512, tuple(x.shape[1:3]), 1, "gdc", depthwise=True, activation=False,
                   padding="valid")
    x = common.flatten()(x)
    x = keras.layers.Dense(embedding_size, use_bias=False, kernel_initializer=common.msra_fan_out(),
                           name="embedding_fc")(x)
    x = common.batch_norm("embedding_bn", epsilon=2e-5, momentum=BN_MOMENTUM, scale=False)(x)
    return keras.Model(inputs, x, name=name)


def mobilefacenet(image_size=(112, 96), embedding_size=512):
    """MobileFaceNet with the GDC head sized to the input's final feature map."""
    return build_mobilefacenet(image_size, embedding_size)
