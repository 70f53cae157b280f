"""PyTorch twins of our Keras backbones and AM-Softmax head, for benchmarks/train_speed.py only.

Not part of the project (PyTorch is not a dependency): these exist so the training-step benchmark
can time an equivalent PyTorch step. Same layers, widths, strides, bias/BN/PReLU placement and
parameter counts as models/resface.py (ResFace20, batch_norm=False), models/mobilefacenet.py and
models/iresnet.py (LResNet50E-IR);
train_speed.py prints both frameworks' parameter counts side by side as the proof.

Layout differences that change neither parameters nor FLOPs: PyTorch is NCHW (Keras NHWC);
stride-2 "same" convs pad 1 on both sides here (Keras pads bottom/right only); the flatten before
the embedding FC is C,H,W here (H,W,C in Keras), a permutation of the FC rows.
"""

import torch
from torch import nn
from torch.nn import functional as F

RESFACE20_UNITS = (1, 2, 4, 1)
RESFACE_FILTERS = (64, 128, 256, 512)
# MobileFaceNet stages: (output channels, expansion of the stride-2 bottleneck, residual units,
# expansion inside the residual units), as models/mobilefacenet.py STAGES / RESIDUAL_EXPANSION.
MOBILEFACENET_STAGES = ((64, 128, 4, 128), (128, 256, 6, 256), (128, 512, 2, 256))


def _prelu(channels):
    return nn.PReLU(channels, init=0.25)


class ResFaceConv(nn.Sequential):
    """3x3 conv -> PReLU; the stride-2 stage-opening conv has a bias, the unit convs do not."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=stride == 2),
                         _prelu(out_channels))


class ResFaceUnit(nn.Module):
    """x + PReLU(conv(PReLU(conv(x)))): no activation after the sum, as in SphereFace."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(ResFaceConv(channels, channels, 1), ResFaceConv(channels, channels, 1))

    def forward(self, x):
        return x + self.body(x)


class ResFace(nn.Module):
    """images [B, 3, H, W] -> embedding [B, embedding_size]; final map (H/16, W/16, 512)."""

    def __init__(self, units=RESFACE20_UNITS, image_size=(112, 96), embedding_size=512):
        super().__init__()
        layers, channels = [], 3
        for filters, num_units in zip(RESFACE_FILTERS, units):
            layers.append(ResFaceConv(channels, filters, 2))
            layers.extend(ResFaceUnit(filters) for _ in range(num_units))
            channels = filters
        self.body = nn.Sequential(*layers)
        height, width = image_size[0] // 16, image_size[1] // 16
        self.fc = nn.Linear(channels * height * width, embedding_size)

    def forward(self, x):
        return self.fc(torch.flatten(self.body(x), 1))


class ConvBlock(nn.Sequential):
    """(Depthwise) conv without bias -> BN (Keras eps 1e-3, momentum 0.9) -> [PReLU]."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, depthwise=False,
                 activation=True, padding=None):
        if padding is None:  # "same" for odd kernels
            padding = kernel_size // 2 if isinstance(kernel_size, int) else 0
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False,
                            groups=in_channels if depthwise else 1),
                  nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.1)]  # torch momentum = 1 - Keras'
        if activation:
            layers.append(_prelu(out_channels))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """1x1 expand -> 3x3 depthwise (stride) -> 1x1 linear project, plus x when residual."""

    def __init__(self, in_channels, out_channels, expansion, stride, residual):
        super().__init__()
        self.residual = residual
        self.body = nn.Sequential(ConvBlock(in_channels, expansion, 1),
                                  ConvBlock(expansion, expansion, 3, stride, depthwise=True),
                                  ConvBlock(expansion, out_channels, 1, activation=False))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class ShiftOnlyBatchNorm1d(nn.Module):
    """BN with a learned shift but no scale: Keras BatchNormalization(scale=False) / MXNet fix_gamma."""

    def __init__(self, features, eps):
        super().__init__()
        self.norm = nn.BatchNorm1d(features, eps=eps, momentum=0.1, affine=False)
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x):
        return self.norm(x) + self.bias


class MobileFaceNet(nn.Module):
    """images [B, 3, H, W] -> embedding [B, embedding_size]."""

    def __init__(self, image_size=(112, 96), embedding_size=512):
        super().__init__()
        layers = [ConvBlock(3, 64, 3, 2), ConvBlock(64, 64, 3, 1, depthwise=True)]
        channels = 64
        for filters, expansion, num_units, res_expansion in MOBILEFACENET_STAGES:
            layers.append(Bottleneck(channels, filters, expansion, 2, residual=False))
            layers.extend(Bottleneck(filters, filters, res_expansion, 1, residual=True)
                          for _ in range(num_units))
            channels = filters
        layers.append(ConvBlock(channels, 512, 1))
        final = (image_size[0] // 16, image_size[1] // 16)
        layers.append(ConvBlock(512, 512, final, 1, depthwise=True, activation=False, padding=0))
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(512, embedding_size, bias=False)
        self.bn = ShiftOnlyBatchNorm1d(embedding_size, eps=2e-5)

    def forward(self, x):
        return self.bn(self.fc(torch.flatten(self.body(x), 1)))


LRESNET50_UNITS = (3, 4, 14, 3)
IR_BN_EPS = 2e-5


def _ir_bn(channels):
    return nn.BatchNorm2d(channels, eps=IR_BN_EPS, momentum=0.1)


class IRUnit(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3/stride -> BN, plus identity or conv1x1/stride -> BN."""

    def __init__(self, in_channels, filters, stride):
        super().__init__()
        self.body = nn.Sequential(_ir_bn(in_channels), nn.Conv2d(in_channels, filters, 3, 1, 1, bias=False),
                                  _ir_bn(filters), _prelu(filters),
                                  nn.Conv2d(filters, filters, 3, stride, 1, bias=False), _ir_bn(filters))
        self.shortcut = (nn.Sequential(nn.Conv2d(in_channels, filters, 1, stride, bias=False), _ir_bn(filters))
                         if stride != 1 or in_channels != filters else nn.Identity())

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class LResNetE(nn.Module):
    """images [B, 3, H, W] -> embedding; stem conv-BN-PReLU, IR stages, "E" head (BN, dropout, FC, BN)."""

    def __init__(self, units=LRESNET50_UNITS, image_size=(112, 96), embedding_size=512, dropout=0.4):
        super().__init__()
        layers, channels = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), _ir_bn(64), _prelu(64)], 64
        for filters, num_units in zip(RESFACE_FILTERS, units):
            for unit in range(num_units):
                layers.append(IRUnit(channels, filters, 2 if unit == 0 else 1))
                channels = filters
        layers += [_ir_bn(channels), nn.Dropout(dropout)]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(channels * (image_size[0] // 16) * (image_size[1] // 16), embedding_size)
        self.bn = ShiftOnlyBatchNorm1d(embedding_size, eps=IR_BN_EPS)

    def forward(self, x):
        return self.bn(self.fc(torch.flatten(self.body(x), 1)))


class AMSoftmaxHead(nn.Module):
    """cos θ against L2-normalised class centres; logits s·(cos θ − m·onehot) (losses.heads.build_head)."""

    def __init__(self, embedding_size, num_classes, s=30.0, m=0.35):
        super().__init__()
        self.s, self.m = s, m
        self.kernel = nn.Parameter(torch.randn(embedding_size, num_classes) * 0.01)

    def cosine(self, embeddings):
        return F.normalize(embeddings, dim=1, eps=1e-12) @ F.normalize(self.kernel, dim=0, eps=1e-12)

    def forward(self, embeddings, labels):
        cos = self.cosine(embeddings)
        one_hot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        return self.s * (cos - self.m * one_hot), cos


def build(name, image_size=(112, 96), embedding_size=512):
    """The twin of models.build_backbone(name, image_size, embedding_size)."""
    if name == "resface20":
        return ResFace(RESFACE20_UNITS, image_size, embedding_size)
    if name == "mobilefacenet":
        return MobileFaceNet(image_size, embedding_size)
    if name == "lresnet50e_ir":
        return LResNetE(LRESNET50_UNITS, image_size, embedding_size)
    raise ValueError(f"no PyTorch twin for backbone {name!r}; twins: resface20, mobilefacenet, lresnet50e_ir")


def decayed_parameters(*modules):
    """Split parameters like training.state.decayed_variables: conv/linear weights and the head's
    class centres get weight decay (every parameter with ndim > 1); biases, BN and PReLU do not."""
    decay, no_decay = [], []
    for module in modules:
        for param in module.parameters():
            (decay if param.ndim > 1 else no_decay).append(param)
    return decay, no_decay


def count(params):
    return sum(p.numel() for p in params)


def count_buffers(module):
    """BN running mean/var entries (Keras' non-trainable weights); num_batches_tracked excluded."""
    return sum(b.numel() for name, b in module.named_buffers() if not name.endswith("num_batches_tracked"))
