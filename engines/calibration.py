"""The aligned faces int8 quantisation is calibrated on (the activation ranges of the int8 exports).

Either the training shards (``--calibration-shards SHARDS``: the TFRecords of tfrecords/, read in
order, the same number from each shard) or a folder of aligned crops (``--calibration-dir ALIGNED``,
e.g. align/align_lfw.py's output; spread evenly over its sorted files). Every image must be the model's
input size: calibrating on other crops would quantise for a different input distribution.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

DEFAULT_CALIBRATION_COUNT = 300


def _check(image, name, image_size):
    if image.ndim != 3 or image.shape[2] != 3 or tuple(image.shape[:2]) != tuple(image_size):
        raise ValueError(f"calibration image {name} is {'x'.join(map(str, image.shape))}, the model takes "
                         f"{image_size[0]}x{image_size[1]}x3: calibrate on crops aligned for this model")
    return image


def faces_from_dir(aligned_dir, count, image_size) -> np.ndarray:
    """uint8 [N, H, W, 3], N = min(count, files): aligned crops ALIGNED/<identity>/* (else ALIGNED/*), evenly spaced."""
    from align.image_io import ImageError, read_image_rgb
    from fileio import is_image_file

    root = Path(aligned_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--calibration-dir {root}: no such folder (give a folder of aligned crops, e.g. "
                                "python align/align_lfw.py's output)")
    # ALIGNED/<identity>/<crop> as align writes it (a contact sheet or report beside the folders is not a
    # face); a flat folder of crops as well.
    files = sorted(p for p in root.glob("*/*") if p.is_file() and is_image_file(p.name)) or \
        sorted(p for p in root.glob("*") if p.is_file() and is_image_file(p.name))
    if not files:
        raise ValueError(f"--calibration-dir {root}: no image files in it")
    picked = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)]
    images = []
    for path in picked:
        try:
            images.append(_check(read_image_rgb(path), path, image_size))
        except ImageError as error:
            raise ValueError(f"calibration image {path}: {error}") from None
    return np.stack(images)


def faces_from_shards(shards_dir, count, image_size) -> np.ndarray:
    """uint8 [N, H, W, 3], N = min(count, images): the first images of each train shard, as many from each."""
    import tensorflow as tf

    from tfrecords.features import ENCODED
    from tfrecords.manifest import open_shards

    paths = open_shards(shards_dir).paths("train")   # ManifestError (a ValueError) names the folder and the fix
    per_shard = math.ceil(count / len(paths))
    images = []
    for path in paths:
        for record in tf.data.TFRecordDataset(path).take(per_shard):
            example = tf.io.parse_single_example(record, {ENCODED: tf.io.FixedLenFeature([], tf.string)})
            image = tf.io.decode_image(example[ENCODED], channels=3, expand_animations=False).numpy()
            images.append(_check(image, f"in {path}", image_size))
    return np.stack(images[:count])


def calibration_faces(image_size, shards=None, aligned_dir=None, count=DEFAULT_CALIBRATION_COUNT) -> np.ndarray:
    """The calibration set: uint8 [N, H, W, 3] from ``shards`` or ``aligned_dir`` (exactly one)."""
    if (shards is None) == (aligned_dir is None):
        raise ValueError("the int8 formats are calibrated on aligned faces: give --calibration-shards SHARDS (the "
                         "training TFRecords) or --calibration-dir ALIGNED (a folder of aligned crops), one of them")
    if count < 1:
        raise ValueError(f"--calibration-count must be >= 1, got {count}")
    if shards is not None:
        return faces_from_shards(shards, count, image_size)
    return faces_from_dir(aligned_dir, count, image_size)
