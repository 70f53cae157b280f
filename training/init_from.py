"""Fine-tuning: the backbone starts from an exported model (train.py --init-from MODEL), the head is new.

    arch = init_architecture("starter")          # InitModel: path, sha256, backbone, image_size, embedding_size
    load_init_backbone(state.backbone, config)   # copies its backbone's weights (BN statistics included)

MODEL is a run directory (its export/best.keras, else embedding.keras), a .keras file or the word
``starter`` (engines.starter). The exported model is scaling -> backbone -> float32 output; its
nested backbone model carries the backbone's registry name, its input the image size, its output the
embedding size. Settings the user did not give are taken from it; settings that contradict it are
refused with one line (its weights could not be copied into another architecture).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

# the settings an init model fixes: config field -> flag
ARCHITECTURE_FLAGS = {"backbone": "--backbone", "embedding_size": "--embedding-size", "image_size": "--image-size"}


@dataclasses.dataclass
class InitModel:
    path: Path                # the .keras file
    sha256: str               # of that file
    backbone: str             # registry name (models.BACKBONES)
    image_size: tuple         # (H, W)
    embedding_size: int
    keras_model: object       # the loaded exported model


_loaded = {}   # path -> InitModel: train.py resolves the config and then trains, one load for both


def init_architecture(model) -> InitModel:
    """Resolve and load ``model`` (as --init-from takes it); FileNotFoundError / ValueError name the file."""
    import keras

    import models
    from engines.model_file import load_embedding_model, resolve_model_path
    from fileio import sha256_of_file

    path = resolve_model_path(str(model))
    key = str(path.resolve())
    if key in _loaded:
        return _loaded[key]
    keras_model, image_size = load_embedding_model(path)
    nested = [layer for layer in keras_model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1 or nested[0].name not in models.BACKBONES:
        raise ValueError(f"--init-from {path}: not an embedding model exported by train.py (expected one nested "
                         f"backbone named one of {', '.join(models.list_backbones())}, found "
                         f"{[layer.name for layer in nested]})")
    embedding_size = int(keras_model.output_shape[-1])
    _loaded[key] = InitModel(path, sha256_of_file(path), nested[0].name, tuple(image_size), embedding_size, keras_model)
    return _loaded[key]


def image_size_text(size) -> str:
    return f"{size[0]}x{size[1]}"


def adopt_init_architecture(config, given) -> list:
    """With config.init_from: take backbone, embedding size and image size from the init model where the
    user gave none (``given``: the config fields set by flags or --config); refuse those that differ.
    Records the resolved file and its sha256 in the config."""
    from fileio.images import parse_image_size

    init = init_architecture(config.init_from)
    theirs = {"backbone": init.backbone, "embedding_size": init.embedding_size,
              "image_size": image_size_text(init.image_size)}
    clashes = []
    for key, value in theirs.items():
        if key not in given:
            setattr(config, key, value)
            continue
        ours = getattr(config, key)
        if key == "image_size":
            ours = image_size_text(parse_image_size(ours))
        if ours != value:
            clashes.append(f"{ARCHITECTURE_FLAGS[key]} {ours} (the init model's is {value})")
    if clashes:
        raise ValueError(f"--init-from {init.path} cannot start this run: {'; '.join(clashes)}; drop those flags "
                         f"to use the init model's")
    config.init_from, config.init_from_sha256 = str(init.path), init.sha256


def load_init_backbone(backbone, config) -> str:
    """Copy the init model's backbone weights (trainable and BN statistics) into ``backbone``; returns the
    line to log. ValueError when the two architectures differ (backbone options, another file since)."""
    from fileio import sha256_of_file

    init = init_architecture(config.init_from)
    if config.init_from_sha256 and sha256_of_file(init.path) != config.init_from_sha256:
        raise ValueError(f"--init-from {init.path} changed since this run recorded it (sha256 "
                         f"{config.init_from_sha256[:12]}...); start a new run")
    source = next(layer for layer in init.keras_model.layers if layer.name == init.backbone)
    theirs, ours = source.get_weights(), backbone.get_weights()
    if [w.shape for w in theirs] != [tuple(w.shape) for w in ours]:
        raise ValueError(f"--init-from {init.path}: its {init.backbone} has other weights than this run's "
                         f"(backbone options {config.backbone_options}); use the options it was trained with")
    backbone.set_weights(theirs)
    return (f"fine-tuning: backbone {init.backbone} from {init.path} (sha256 {init.sha256[:12]}..., embedding "
            f"{init.embedding_size}, {image_size_text(init.image_size)}); a new head for this data's classes")
