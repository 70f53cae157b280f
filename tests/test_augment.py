"""tfrecords/augment.py: the warp's geometry, colour jitter ranges, reproducibility, and the reader
and train.py options that turn it on."""

import numpy as np
import pytest
import tensorflow as tf

from tests.test_tfrecords import make_aligned, quiet
from tfrecords.augment import Augmentation, augment_batch, jitter_colors, similarity_transforms, warp_images
from tfrecords.build import build
from tfrecords.manifest import open_shards
from tfrecords.reader import make_train_dataset


def _images(count, height, width, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, height, width, 3)).astype(np.float32)


def _warp(images, zoom=1.0, rows=0.0, cols=0.0, angle=0.0):
    count, height, width = images.shape[:3]
    full = lambda v: tf.fill([count], float(v))
    return warp_images(images, similarity_transforms(full(zoom), full(rows), full(cols), full(angle),
                                                     height, width)).numpy()


def test_warp_geometry_identity_shift_rotation_zoom():
    x = _images(2, 12, 10)
    assert np.array_equal(_warp(x), x)
    # shift_cols = 3: output column c shows input column c + 3 (the content moves left)
    np.testing.assert_array_equal(_warp(x, cols=3)[:, :, :-3], x[:, :, 3:])
    np.testing.assert_array_equal(_warp(x, rows=-2)[:, 2:], x[:, :-2])
    square = _images(2, 9, 9, seed=1)
    # +90 degrees about the centre is numpy's rot90 in the (row, column) plane with k=1
    np.testing.assert_allclose(_warp(square, angle=np.pi / 2), np.rot90(square, 1, axes=(1, 2)), atol=1e-3)
    # zoom 2 about the centre of a 9-wide image: output column c reads input column 4 + (c - 4) / 2
    zoomed = _warp(square, zoom=2.0)
    np.testing.assert_allclose(zoomed[:, 4, 2], square[:, 4, 3], atol=1e-3)
    np.testing.assert_allclose(zoomed[:, 4, 3], (square[:, 4, 3] + square[:, 4, 4]) / 2, atol=1e-3)


def test_colour_jitter_factors():
    x = _images(3, 6, 5)
    ones = tf.ones([3])
    np.testing.assert_allclose(jitter_colors(x, ones, ones, ones).numpy(), x, atol=1e-3)
    grey = jitter_colors(x, ones, ones, tf.zeros([3])).numpy()   # saturation 0: every channel equal
    np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-3)
    flat = jitter_colors(x, ones, tf.zeros([3]), tf.zeros([3])).numpy()   # contrast 0: one grey level
    assert np.ptp(flat, axis=(1, 2, 3)).max() < 1e-3
    bright = jitter_colors(x, tf.fill([3], 2.0), ones, ones).numpy()
    assert bright.max() == 255.0 and np.allclose(bright, np.minimum(2 * x, 255), atol=1e-3)


def test_augment_batch_is_seeded_bounded_and_off_by_default():
    x = tf.constant(_images(8, 16, 12))
    seed = tf.constant([3, 5], tf.int64)
    assert augment_batch(x, Augmentation(), seed) is x
    strong = Augmentation(scale=0.2, shift=0.1, rotate=15, color=0.4)
    a, b = augment_batch(x, strong, seed).numpy(), augment_batch(x, strong, seed).numpy()
    c = augment_batch(x, strong, tf.constant([3, 6], tf.int64)).numpy()
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 255
    assert not np.allclose(a, x.numpy(), atol=1.0)
    assert strong.describe() == "flip + scale 0.2, shift 0.1, rotate 15, color 0.4"
    assert Augmentation().describe() == "flip only"
    with pytest.raises(ValueError, match=r"--augment-rotate must be in \[0, 45\]"):
        Augmentation(rotate=90)


def test_reader_applies_augmentation_after_the_same_flips(tmp_path):
    make_aligned(tmp_path / "in", [1] * 8)   # one image per class: a label names its image
    build(tmp_path / "in", tmp_path / "out", num_shards=1, progress=False, log=quiet)

    def batch(augmentation):
        ds = make_train_dataset(open_shards(tmp_path / "out"), 8, seed=4, repeat=False, deterministic=True,
                                          augmentation=augmentation)
        (x, y), = list(ds)
        return x.numpy()[np.argsort(y.numpy())]

    plain = batch(None)
    assert np.array_equal(plain, batch(Augmentation()))
    shifted = batch(Augmentation(color=0.5))
    assert shifted.shape == plain.shape and not np.allclose(shifted, plain, atol=1.0)
    # colour jitter keeps each pixel's place: the same flips were drawn with and without it
    for p, s in zip(plain, shifted):
        assert abs(np.corrcoef(p.mean(-1).ravel(), s.mean(-1).ravel())[0, 1]) > 0.9


def test_config_takes_the_augment_flags_and_checks_them():
    from training.config import augmentation, resolve_config

    config = resolve_config({"data": None, "augment_scale": 0.1, "augment_rotate": 8.0})
    assert augmentation(config) == Augmentation(scale=0.1, rotate=8.0)
    with pytest.raises(ValueError, match="--augment-shift"):
        resolve_config({"augment_shift": -0.1})
