"""Face-recognition backbones (pure Keras 3) and the registry that builds them by name.

    model = models.build_backbone("resface20", image_size=(112, 96), embedding_size=512)
    embeddings = model(models.scaling.scale_images(images))   # [B, 112, 96, 3] -> [B, 512]

Backbones take scaled RGB images [B, H, W, 3] (``models.scaling``) and return the raw
(not normalised) embedding [B, embedding_size]. Image size: 112x96 and 112x112 are the
supported crops; any other (H, W) is accepted only when both are multiples of 16, because every
backbone halves the map four times with stride-2 convs (112x96 -> 7x6, 112x112 -> 7x7).
"""

import inspect

from fileio import validate_image_size  # the one image-size rule (fileio/images.py), which callers import from there
from models.flops import count_forward_flops
from models.iresnet import lresnet50e_ir
from models.mobilefacenet import mobilefacenet
from models.resface import resface20, resface36

__all__ = ["BACKBONES", "TRAINING_OPTIONS", "build_backbone", "count_forward_flops", "list_backbones"]

# name -> builder(image_size, embedding_size, **options) -> keras.Model
BACKBONES = {
    "resface20": resface20,        # option: batch_norm=False
    "resface36": resface36,        # option: batch_norm=False
    "lresnet50e_ir": lresnet50e_ir,  # option: dropout=0.4
    "mobilefacenet": mobilefacenet,
}
# Options train.py uses when the user gives none (config.backbone_options): the BN variant of ResFace,
# because the published network's embeddings collapse to one direction within the first ten SGD steps
# under normalised-softmax heads, at every lr (0.1, 0.025, 0.01), with warm-up and with gradient
# clipping (benchmarks/README.md, "Why ResFace20 collapsed"). ``--backbone-option batch_norm=false``
# trains the published network.
TRAINING_OPTIONS = {
    "resface20": {"batch_norm": True},
    "resface36": {"batch_norm": True},
}


def list_backbones():
    """Names accepted by build_backbone, sorted."""
    return sorted(BACKBONES)


def build_backbone(name, image_size=(112, 96), embedding_size=512, **options):
    """Build backbone ``name``: scaled images [B, H, W, 3] -> embedding [B, embedding_size] (keras.Model).

    options: resface20/resface36 ``batch_norm`` (bool, default False); lresnet50e_ir ``dropout``
    (float, default 0.4). Raises ValueError for an unknown name, size or option.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(list_backbones())}")
    image_size = validate_image_size(image_size)
    if not isinstance(embedding_size, int) or isinstance(embedding_size, bool) or embedding_size <= 0:
        raise ValueError(f"embedding_size must be a positive int, got {embedding_size!r}")
    builder = BACKBONES[name]
    accepted = set(inspect.signature(builder).parameters) - {"image_size", "embedding_size"}
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"backbone {name!r} does not take option(s) {sorted(unknown)}; "
                         f"it takes: {sorted(accepted) or 'none'}")
    return builder(image_size=image_size, embedding_size=embedding_size, **options)
