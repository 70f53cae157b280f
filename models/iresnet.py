"""LResNet50E-IR: insightface's improved-residual (IR) ResNet-50 with the "E" output head.

Reference: deepinsight/insightface recognition/symbol/fresnet.py + symbol_utils.py (MXNet,
residual_unit_v3, version_input=1, fc_type "E") and recognition/arcface_torch/backbones/iresnet.py.

- Stem: conv 3x3 / 1, 64, no bias -> BN -> PReLU (no pooling: 112 -> 112).
- IR unit: BN -> conv3x3/1 -> BN -> PReLU -> conv3x3/stride -> BN, plus the shortcut: identity, or
  conv1x1/stride (no bias) -> BN for the first unit of each stage (stride 2). No activation after
  the sum.
- Stages: 64/128/256/512 channels with [3, 4, 14, 3] units; 112x96 -> 7x6, 112x112 -> 7x7.
- "E" head: BN -> Dropout(0.4) -> FC (with bias) -> BN with fixed gamma (MXNet fix_gamma=True,
  here ``scale=False``; arcface_torch freezes the weight at 1 instead).
- BN epsilon 2e-5, momentum 0.9 (MXNet settings). Conv and FC kernels: N(0, 2/fan_out), the
  insightface MXNet initializer (arcface_torch uses N(0, 0.1) for convs; we keep MXNet's).
"""

import keras

from models import common

STAGE_FILTERS = (64, 128, 256, 512)
LRESNET50_UNITS = (3, 4, 14, 3)
BN_EPSILON = 2e-5
BN_MOMENTUM = 0.9


def _bn(name, scale=True):
    return common.batch_norm(name, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, scale=scale)


def _conv(filters, kernel_size, strides, name):
    return common.conv2d(filters, kernel_size, strides, use_bias=False,
                         kernel_initializer=common.msra_fan_out(), name=name)


def ir_unit(x, filters, strides, name):
    """IR residual unit: [B, H, W, C] -> [B, H/strides, W/strides, filters]."""
    y = _bn(f"{name}_bn1")(x)
    y = _conv(filters, 3, 1, f"{name}_conv1")(y)
    y = _bn(f"{name}_bn2")(y)
    y = common.prelu(f"{name}_prelu")(y)
    y = _conv(filters, 3, strides, f"{name}_conv2")(y)
    y = _bn(f"{name}_bn3")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides, f"{name}_shortcut_conv")(x)
        shortcut = _bn(f"{name}_shortcut_bn")(shortcut)
    else:
        shortcut = x
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def build_iresnet_e(units, image_size=(112, 96), embedding_size=512, dropout=0.4, name="iresnet"):
    """IR-ResNet with the "E" head: scaled images [B, H, W, 3] -> embedding [B, embedding_size]."""
    height, width = image_size
    inputs = keras.Input(shape=(height, width, 3), name="images")
    x = _conv(64, 3, 1, "stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = common.prelu("stem_prelu")(x)
    for stage, (filters, num_units) in enumerate(zip(STAGE_FILTERS, units), start=1):
        for unit in range(1, num_units + 1):
            x = ir_unit(x, filters, 2 if unit == 1 else 1, f"stage{stage}_unit{unit}")
    x = _bn("head_bn")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = common.flatten()(x)
    x = keras.layers.Dense(embedding_size, kernel_initializer=common.msra_fan_out(),
                           name="embedding_fc")(x)
    x = _bn("embedding_bn", scale=False)(x)
    return keras.Model(inputs, x, name=name)


def lresnet50e_ir(image_size=(112, 96), embedding_size=512, dropout=0.4):
    """LResNet50E-IR (ArcFace paper): IR units [3, 4, 14, 3], "E" head."""
    return build_iresnet_e(LRESNET50_UNITS, image_size, embedding_size, dropout, name="lresnet50e_ir")
