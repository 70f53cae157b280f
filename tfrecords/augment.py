"""Training-time augmentation beyond the horizontal flip: random scale, shift and rotation (one
bilinear warp per image) and colour jitter, applied to a whole decoded batch inside tf.data.

Why a batch op: on 2 cores the input pipeline shares the CPU with the training step, and one
``ImageProjectiveTransformV3`` over [B, H, W, 3] costs a few milliseconds per batch of 64, where
per-image ops (tf.image.*, Keras preprocessing layers) would add per-element overhead. Every draw
is stateless, seeded by (seed, batch index) like the flips, so an augmented stream is reproducible.

The warp maps each output pixel back to the input through a similarity transform about the image
centre: zoom ``z`` in [1 - scale, 1 + scale] (z > 1 shows a smaller window: a random crop, scaled
up), rotation in [-rotate, rotate] degrees, translation in [-shift, shift] of the image height and
width. Pixels the warp brings in from outside the crop are reflected (``REFLECT``), so no black
borders teach the model where the crop ends.
"""

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Strengths of the random augmentations; 0 turns one off. Units: fractions and degrees."""

    scale: float = 0.0    # zoom drawn from [1 - scale, 1 + scale]
    shift: float = 0.0    # translation as a fraction of H (rows) and W (columns), in [-shift, shift]
    rotate: float = 0.0   # degrees, in [-rotate, rotate]
    color: float = 0.0    # brightness, contrast and saturation factors each in [1 - color, 1 + color]

    def __post_init__(self):
        for name, limit in (("scale", 0.5), ("shift", 0.5), ("rotate", 45.0), ("color", 1.0)):
            value = getattr(self, name)
            if not 0.0 <= value <= limit:
                raise ValueError(f"--augment-{name} must be in [0, {limit:g}], got {value}")

    @property
    def warps(self):
        return bool(self.scale or self.shift or self.rotate)

    @property
    def active(self):
        return self.warps or bool(self.color)

    def describe(self):
        parts = [f"{name} {getattr(self, name):g}" for name in ("scale", "shift", "rotate", "color")
                 if getattr(self, name)]
        return "flip + " + ", ".join(parts) if parts else "flip only"


def similarity_transforms(zoom, shift_rows, shift_cols, angle, height, width):
    """[B, 8] float32 transforms for ImageProjectiveTransformV3 (output pixel -> input pixel).

    zoom [B] (> 1: zoom in), shift_rows / shift_cols [B] in pixels (the content moves by minus
    this), angle [B] in radians; the rotation and zoom are about the centre ((W-1)/2, (H-1)/2).
    """
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # input = M (output - c) + c + t, with M = R(angle) / zoom
    a0, a1 = cos, -sin
    b0, b1 = sin, cos
    a2 = cx + shift_cols - a0 * cx - a1 * cy
    b2 = cy + shift_rows - b0 * cx - b1 * cy
    zeros = tf.zeros_like(zoom)
    return tf.cast(tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1), tf.float32)


def warp_images(images, transforms):
    """images float32 [B, H, W, 3]; transforms [B, 8] from similarity_transforms -> same shape."""
    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=tf.constant(0.0),
        interpolation="BILINEAR", fill_mode="REFLECT")


def jitter_colors(images, brightness, contrast, saturation):
    """images float32 [B, H, W, 3] RGB in [0, 255]; factors [B] (1 = unchanged) -> clipped to [0, 255]."""
    grey = tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    images = grey + (images - grey) * saturation[:, None, None, None]
    mean = tf.reduce_mean(grey, axis=[1, 2, 3], keepdims=True)
    images = mean + (images - mean) * contrast[:, None, None, None]
    return tf.clip_by_value(images * brightness[:, None, None, None], 0.0, 255.0)


def augment_batch(images, augmentation, seed):
    """Randomly warp and recolour a batch: images float32 [B, H, W, 3] in [0, 255]; seed: int64 [2]."""
    if not augmentation.active:
        return images
    count = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    draws = tf.random.stateless_uniform([count, 7], seed=seed, minval=-1.0, maxval=1.0)
    a = augmentation
    if a.warps:
        transforms = similarity_transforms(
            zoom=1.0 + a.scale * draws[:, 0], shift_rows=a.shift * height * draws[:, 1],
            shift_cols=a.shift * width * draws[:, 2], angle=math.radians(a.rotate) * draws[:, 3],
            height=height, width=width)
        images = warp_images(images, transforms)
    if a.color:
        images = jitter_colors(images, 1.0 + a.color * draws[:, 4], 1.0 + a.color * draws[:, 5],
                               1.0 + a.color * draws[:, 6])
    return images
