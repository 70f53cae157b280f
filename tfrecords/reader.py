"""The training input pipeline (tf.data) over the builder's shards, and a reader for small splits.

make_train_dataset: shard list shuffled -> parallel interleave of TFRecord files -> shuffle buffer
(of serialized records, ~5 KB each, not pixels) -> batch -> vectorised parse -> JPEG decode +
random horizontal flip on uint8 -> optional warp and colour jitter of the float batch
(tfrecords/augment.py) -> prefetch. Batches are processed in
parallel (map with AUTOTUNE).

Every function takes the ``Shards`` handle of ``tfrecords.manifest.open_shards`` (the manifest read
and checked once per run), not a folder.

Records are batched *before* parsing: one ``parse_example`` per batch instead of one
``parse_single_example`` per image removes most per-element tf.data overhead, which is what
limits a path-list loader on 2 cores. benchmarks/input_pipeline.py measures it.
"""

import secrets

import tensorflow as tf

from . import features as F
from .augment import augment_batch
from .manifest import MANIFEST_NAME, ManifestError, ShardError


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


def make_train_dataset(shards, batch_size, *, image_size=None, num_classes=None, shuffle_buffer=16384,
                       seed=None, deterministic=False, verify_checksums=False, repeat=True, input_context=None,
                       drop_remainder=True, flip=True, augmentation=None, split="train", cycle_length=None):
    """tf.data.Dataset of (images float32 [B,H,W,3] RGB pixel values in [0, 255], labels int32 [B]).

    The pixels are not scaled here: the trained model scales its own input (models/scaling.py,
    the first layer of training.state's model), so what trains is what is exported.

    shards: the shard directory's ``Shards`` (tfrecords.manifest.open_shards). batch_size: per replica
    when input_context is given (``strategy.distribute_datasets_from_function``), else global.
    image_size / num_classes: what the caller's model expects; checked against the manifest first.
    seed: seeds shard order, shuffle buffer and flips; with deterministic=True the element order
    is then reproducible (parallel stages keep order). verify_checksums: sha256 every shard first
    (open_shards checked their sizes). input_context: shards by file when there are at least as
    many shards as input pipelines, else by record. flip: random horizontal flip (p = 0.5).
    augmentation: an Augmentation (random scale/shift/rotation and colour jitter), or None.
    """
    height, width = shards.check_image_size(image_size)
    shards.check_num_classes(num_classes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if verify_checksums:
        shards.check_files(split, verify_checksums=True)
    files = shards.paths(split)
    if shards.num_images(split) == 0:
        raise ManifestError(f"{shards.manifest_path}: split {split!r} has no images")
    if seed is None:
        seed = secrets.randbelow(2**31)  # fresh order each run; pass seed= to reproduce one
    decode = _decoder(shards.manifest, split)

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


def iterate_split(shards, split="val", batch_size=256):
    """Yield (paths list[str], labels int ndarray, images uint8 [B,H,W,3]) over a split of ``shards``
    (a ``Shards``) in stored order."""
    files = shards.paths(split)   # ManifestError for a split the build does not have
    height, width = shards.image_size
    decode = _decoder(shards.manifest, split)
    spec = {F.ENCODED: tf.io.FixedLenFeature([], tf.string), F.PATH: tf.io.FixedLenFeature([], tf.string),
            F.LABEL: tf.io.FixedLenFeature([], tf.int64)}

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        images = tf.map_fn(decode, parsed[F.ENCODED], fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
        return parsed[F.PATH], parsed[F.LABEL], tf.ensure_shape(images, [None, height, width, 3])

    ds = tf.data.TFRecordDataset(files).batch(batch_size)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
    for paths, labels, images in ds.as_numpy_iterator():
        yield [p.decode("utf-8") for p in paths], labels, images


def read_split_images(shards, split="val"):
    """All images of a (small) split of ``shards`` (a ``Shards``): (paths list[str] of 'identity/filename',
    images uint8 [N,H,W,3]).

    Meant for the held-out val split (validation during training); the train split is read
    through make_train_dataset, never loaded whole.
    """
    import numpy as np

    height, width = shards.image_size
    paths, chunks = [], []
    for batch_paths, _, images in iterate_split(shards, split):
        paths.extend(batch_paths)
        chunks.append(images)
    expected = shards.num_images(split)
    if len(paths) != expected:
        raise ShardError(f"{shards.data_dir}: read {len(paths)} {split} images, {MANIFEST_NAME} says {expected}")
    images = np.concatenate(chunks) if chunks else np.zeros((0, height, width, 3), np.uint8)
    return paths, images
