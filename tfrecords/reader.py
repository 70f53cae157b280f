"""The training input pipeline (tf.data) over the builder's shards, and a reader for small splits.

make_train_dataset: shard list shuffled -> parallel interleave of TFRecord files -> shuffle buffer
(of serialized records, ~5 KB each, not pixels) -> batch -> vectorised parse -> JPEG decode +
random horizontal flip on uint8 -> optional warp and colour jitter of the float batch
(tfrecords/augment.py) -> prefetch. Batches are processed in
parallel (map with AUTOTUNE).

Records are batched *before* parsing: one ``parse_example`` per batch instead of one
``parse_single_example`` per image removes most per-element tf.data overhead, which is what
limits a path-list loader on 2 cores. benchmarks/input_pipeline.py measures it.
"""

import secrets
from pathlib import Path

import tensorflow as tf

from fileio import sha256_of_file

from . import features as F
from .augment import Augmentation, augment_batch  # noqa: F401  (Augmentation: re-exported as tfrecords.Augmentation)
from .manifest import MANIFEST_NAME, ManifestError, read_manifest, shard_paths


class ShardError(ManifestError):
    """A shard file is missing, truncated or corrupt (message names the shard)."""


def check_shards(data_dir, manifest, split="train", verify_checksums=False):
    """Raise ShardError naming the first shard that is missing, of the wrong size, or (on request) wrong sha256.

    The size check is always done (a stat per shard) and catches truncation; the sha256 check
    reads every byte (about 1 GB/s) and catches corruption too.
    """
    for shard in manifest["splits"][split]["shards"]:
        path = Path(data_dir) / shard["file"]
        fix = f"Rerun `python -m tfrecords.build` into {data_dir} with --overwrite to rebuild it."
        if not path.is_file():
            raise ShardError(f"{path}: shard listed in {MANIFEST_NAME} is missing. {fix}")
        size = path.stat().st_size
        if size != shard["bytes"]:
            raise ShardError(f"{path}: shard is {size} bytes, {MANIFEST_NAME} says {shard['bytes']} "
                             f"({'truncated' if size < shard['bytes'] else 'changed'}). {fix}")
        if verify_checksums and sha256_of_file(path) != shard["sha256"]:
            raise ShardError(f"{path}: sha256 differs from {MANIFEST_NAME} (corrupt shard). {fix}")


def _decoder(manifest, split):
    """Per-image decode fn, chosen per image: every JPEG by decode_jpeg with INTEGER_ACCURATE, a PNG by
    decode_png (the builder stores these two formats only).

    INTEGER_ACCURATE is the exact IDCT that cv2/PIL use (TF's default, INTEGER_FAST, is off by 1.5 grey
    levels on average, up to 19; decode_image cannot be given a dct_method), and on this CPU it also
    measured faster. Deciding per image, not per split, keeps one PNG among JPEG crops from moving
    every JPEG off OpenCV's pixels.
    """
    formats = manifest["splits"][split].get("formats", {})

    def jpeg(data):
        return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")

    if set(formats) <= {"jpeg"}:
        return jpeg   # the fast path: no per-image test

    def per_format(data):
        return tf.cond(tf.io.is_jpeg(data), lambda: jpeg(data), lambda: tf.io.decode_png(data, channels=3))

    return per_format


def resolve_image_size(data_dir, manifest, image_size=None):
    """The shards' (H, W); raises ManifestError naming manifest.json if ``image_size`` disagrees."""
    size = tuple(manifest["image_size"])
    if image_size is not None and tuple(int(v) for v in image_size) != size:
        raise ManifestError(f"{Path(data_dir) / MANIFEST_NAME}: shards hold {size[0]}x{size[1]} (HxW) images, "
                            f"but {image_size[0]}x{image_size[1]} was requested; build shards "
                            "at that size or change the requested image size")
    return size


def make_train_dataset(data_dir, batch_size, *, image_size=None, num_classes=None, shuffle_buffer=16384,
                       seed=None, deterministic=False, verify_checksums=False, repeat=True, input_context=None,
                       drop_remainder=True, flip=True, augmentation=None, split="train", cycle_length=None):
    """tf.data.Dataset of (images float32 [B,H,W,3] RGB pixel values in [0, 255], labels int32 [B]).

    The pixels are not scaled here: the trained model scales its own input (models/scaling.py,
    the first layer of training.state's model), so what trains is what is exported.

    data_dir: shard directory (manifest.json). batch_size: per replica when input_context is
    given (``strategy.distribute_datasets_from_function``), else global. image_size / num_classes:
    what the caller's model expects; checked against the manifest before anything is read.
    seed: seeds shard order, shuffle buffer and flips; with deterministic=True the element order
    is then reproducible (parallel stages keep order). verify_checksums: sha256 every shard first
    (shard sizes are always checked). input_context: shards by file when there are at least as
    many shards as input pipelines, else by record. flip: random horizontal flip (p = 0.5).
    augmentation: an Augmentation (random scale/shift/rotation and colour jitter), or None.
    """
    manifest = read_manifest(data_dir)
    height, width = resolve_image_size(data_dir, manifest, image_size)
    if num_classes is not None and int(num_classes) != manifest["num_classes"]:
        raise ManifestError(f"{Path(data_dir) / MANIFEST_NAME}: {manifest['num_classes']} classes, but the model "
                            f"expects {num_classes}; use the matching shard directory or head size")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_shards(data_dir, manifest, split, verify_checksums)
    files = shard_paths(data_dir, manifest, split)
    if manifest["splits"][split]["num_images"] == 0:
        raise ManifestError(f"{Path(data_dir) / MANIFEST_NAME}: split {split!r} has no images")
    if seed is None:
        seed = secrets.randbelow(2**31)  # fresh order each run; pass seed= to reproduce one
    decode = _decoder(manifest, split)

    ds = tf.data.Dataset.from_tensor_slices(files)
    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    shard_by_data = pipelines > 1 and len(files) < pipelines
    num_files = len(files)
    if pipelines > 1 and not shard_by_data:  # each pipeline reads its own files
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
        num_files = len(files[input_context.input_pipeline_id::pipelines])
    ds = ds.shuffle(num_files, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(num_files, cycle_length or 16), block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shard_by_data:  # fewer files than pipelines: each pipeline takes every n-th record
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    if shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.enumerate()  # batch index: seeds the stateless flips, so they are reproducible

    spec = {F.ENCODED: tf.io.FixedLenFeature([], tf.string), F.LABEL: tf.io.FixedLenFeature([], tf.int64)}

    def parse_decode(index, serialized):
        parsed = tf.io.parse_example(serialized, spec)
        count = tf.shape(serialized)[0]
        if flip:
            flips = tf.random.stateless_uniform([count], seed=tf.stack([tf.constant(seed, tf.int64), index])) < 0.5
        else:
            flips = tf.zeros([count], tf.bool)

        def decode_one(args):
            # Flip the uint8 image right after decoding: 1 byte per value, while flipping the float
            # batch afterwards (tf.where over two float copies) cost more than the decode itself.
            data, flip_it = args
            image = decode(data)
            return tf.cond(flip_it, lambda: tf.reverse(image, axis=[1]), lambda: image)

        images = tf.map_fn(decode_one, (parsed[F.ENCODED], flips),
                           fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        images = tf.cast(tf.ensure_shape(images, [None, height, width, 3]), tf.float32)
        if augmentation is not None and augmentation.active:
            # Its own stream (seed + 1), so adding augmentation does not change which images flip.
            images = augment_batch(images, augmentation, tf.stack([tf.constant(seed + 1, tf.int64), index]))
        return images, tf.cast(parsed[F.LABEL], tf.int32)

    ds = ds.map(parse_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    if input_context is not None:
        # Sharding is done above per input pipeline; TF must not shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def iterate_split(data_dir, split="val", batch_size=256):
    """Yield (paths list[str], labels int ndarray, images uint8 [B,H,W,3]) over a split in stored order."""
    manifest = read_manifest(data_dir)
    check_shards(data_dir, manifest, split)
    height, width = manifest["image_size"]
    decode = _decoder(manifest, split)
    spec = {F.ENCODED: tf.io.FixedLenFeature([], tf.string), F.PATH: tf.io.FixedLenFeature([], tf.string),
            F.LABEL: tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        images = tf.map_fn(decode, parsed[F.ENCODED], fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        return parsed[F.PATH], parsed[F.LABEL], tf.ensure_shape(images, [None, height, width, 3])

    ds = tf.data.TFRecordDataset(shard_paths(data_dir, manifest, split)).batch(batch_size)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    for paths, labels, images in ds.as_numpy_iterator():
        yield [p.decode("utf-8") for p in paths], labels, images


def read_split_images(data_dir, split="val"):
    """All images of a (small) split: (paths list[str] of 'identity/filename', images uint8 [N,H,W,3]).

    Meant for the held-out val split (validation during training); the train split is read
    through make_train_dataset, never loaded whole.
    """
    import numpy as np

    manifest = read_manifest(data_dir)
    height, width = manifest["image_size"]
    paths, chunks = [], []
    for batch_paths, _, images in iterate_split(data_dir, split):
        paths.extend(batch_paths)
        chunks.append(images)
    expected = manifest["splits"][split]["num_images"]
    if len(paths) != expected:
        raise ShardError(f"{Path(data_dir)}: read {len(paths)} {split} images, {MANIFEST_NAME} says {expected}")
    images = np.concatenate(chunks) if chunks else np.zeros((0, height, width, 3), np.uint8)
    return paths, images
