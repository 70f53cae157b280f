"""ResFace20 / ResFace36: the SphereFace residual networks used by AM-Softmax.

Reference: wy1iu/sphereface train/code/make_spherenet.py and the prototxt of happynear/AMSoftmax
(prototxt/face_train_test.prototxt). Four stages; each opens with a 3x3 stride-2 conv
(64/128/256/512 channels) followed by residual units of two 3x3 convs; PReLU after every conv;
flatten; FC to the embedding.

Choices, following the Caffe reference:
- Stage-opening convs and the FC: Caffe "xavier" init (U(+-sqrt(3/fan_in))), with a bias (zero init).
- Convs inside residual units: N(0, 0.01^2) init and NO bias. In Caffe the bias blob exists but has
  lr_mult 0 / decay_mult 0 and a zero filler, i.e. it is a constant zero; dropping it is the same
  function and keeps it from being trained here.
- PReLU per channel, slopes 0.25 (Caffe default); the residual sum is not followed by an activation.
- The Caffe FC bias has lr_mult 2; here it trains at the base learning rate.
- Flatten order is H, W, C (Caffe flattens C, H, W): a permutation of the FC rows, same model family.

``batch_norm=True`` is the "resface (bn)" variant of the AM-Softmax TensorFlow port
(Joker316701882/Additive-Margin-Softmax): every conv is conv (no bias) -> BN -> PReLU and the FC is
FC (no bias) -> BN, with that port's epsilon (1e-3) and learnable gamma, and momentum 0.9 (the
insightface value, also used by MobileFaceNet and LResNet50E-IR here) instead of the port's 0.995:
the same steady state, but moving statistics that catch up within tens of steps rather than hundreds.
(Measured: after 60 steps at 0.995 the held-out embeddings in inference mode had a different-person
cosine of 0.989 while the same batch in training mode had 0.1; see benchmarks/README.md.)

Training (``train.py``) builds resface20/resface36 with ``batch_norm=True`` unless told otherwise
(``models.TRAINING_OPTIONS``): the plain network collapses under the normalised-softmax heads at
every learning rate, warm-up and clipping tried here (benchmarks/README.md, "Why ResFace20
collapsed"). ``batch_norm=False`` stays the published network and this module's default.
"""

import keras

from models import common

STAGE_FILTERS = (64, 128, 256, 512)
BN_MOMENTUM = 0.9
RESFACE20_UNITS = (1, 2, 4, 1)
RESFACE36_UNITS = (2, 4, 8, 2)


def _conv_act(x, filters, strides, kernel_initializer, batch_norm, name):
    """3x3 conv -> [BN] -> PReLU. The stage-opening conv has a bias unless followed by BN."""
    opening = strides == 2
    x = common.conv2d(filters, 3, strides, use_bias=opening and not batch_norm,
                      kernel_initializer=kernel_initializer, name=f"{name}_conv")(x)
    if batch_norm:
        x = common.batch_norm(f"{name}_bn", epsilon=1e-3, momentum=BN_MOMENTUM)(x)
    return common.prelu(f"{name}_prelu")(x)


def build_resface(units, image_size=(112, 96), embedding_size=512, batch_norm=False, name="resface"):
    """Build a ResFace network: scaled images [B, H, W, 3] -> embedding [B, embedding_size].

    units: residual units per stage, e.g. (1, 2, 4, 1) for ResFace20. The final map is
    (H/16, W/16, 512), e.g. 7x6 for 112x96, flattened into the FC.
    """
    height, width = image_size
    inputs = keras.Input(shape=(height, width, 3), name="images")
    x = inputs
    for stage, (filters, num_units) in enumerate(zip(STAGE_FILTERS, units), start=1):
        x = _conv_act(x, filters, 2, common.caffe_xavier(), batch_norm, f"stage{stage}_down")
        for unit in range(1, num_units + 1):
            prefix = f"stage{stage}_unit{unit}"
            y = _conv_act(x, filters, 1, common.gaussian(0.01), batch_norm, f"{prefix}_a")
            y = _conv_act(y, filters, 1, common.gaussian(0.01), batch_norm, f"{prefix}_b")
            x = keras.layers.Add(name=f"{prefix}_add")([x, y])
    x = common.flatten()(x)
    x = keras.layers.Dense(embedding_size, use_bias=not batch_norm,
                           kernel_initializer=common.caffe_xavier(), name="embedding_fc")(x)
    if batch_norm:
        x = common.batch_norm("embedding_bn", epsilon=1e-3, momentum=BN_MOMENTUM)(x)
    return keras.Model(inputs, x, name=name)


def resface20(image_size=(112, 96), embedding_size=512, batch_norm=False):
    """ResFace20 (SphereFace-20): units (1, 2, 4, 1); 22.67 M params, 3.50 GFLOP at 112x96, 512-d."""
    return build_resface(RESFACE20_UNITS, image_size, embedding_size, batch_norm, name="resface20")


def resface36(image_size=(112, 96), embedding_size=512, batch_norm=False):
    """ResFace36 (SphereFace-36): units (2, 4, 8, 2)."""
    return build_resface(RESFACE36_UNITS, image_size, embedding_size, batch_norm, name="resface36")
