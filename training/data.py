"""Where training batches come from: TFRecord shards (``--data``) or the built-in synthetic set.

Both give ``dataset_fn(input_context, start_step) -> tf.data.Dataset`` of per-replica batches
(images float32 [b, H, W, 3] RGB in [0, 255], labels int32 [b]; the model scales them) for
``strategy.distribute_datasets_from_function``.
"""

import dataclasses
import math
from collections.abc import Callable

import tensorflow as tf


@dataclasses.dataclass
class TrainData:
    num_classes: int
    image_size: tuple            # (H, W)
    num_images: int | None       # None: endless synthetic stream
    dataset_fn: Callable         # (input_context, start_step) -> per-replica batched Dataset
    description: str
    synthetic: bool
    shards: object = None        # the opened shard folder, a tfrecords.manifest.Shards (None: synthetic)

    @property
    def manifest(self):
        """The shards' manifest dict (None: synthetic)."""
        return None if self.shards is None else self.shards.manifest

    @property
    def data_dir(self):
        """The shard folder (None: synthetic)."""
        return None if self.shards is None else str(self.shards.data_dir)

    def steps_per_epoch(self, global_batch):
        return None if self.num_images is None else max(self.num_images // global_batch, 1)

    def read_error(self, error):
        """A one-line error for what the input pipeline could not read, or None if ``error`` is not a
        data problem. A corrupt record (tf.errors.DataLossError, which names no file): the shard whose
        sha256 no longer matches the manifest, and the fix. An image of another size than the manifest
        says (a failed ensure_shape): the manifest and the fix."""
        if self.shards is None:
            return None
        from tfrecords.manifest import ShardError

        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "DataLoss" not in type(error).__name__:
            if "expected shape" not in str(error) and "EnsureShape" not in str(error):
                return None
            return ValueError(f"{self.data_dir}/manifest.json says the images are {self.image_size[0]}x"
                              f"{self.image_size[1]}, but a shard holds another size ({first_line}); rebuild the "
                              "shards with `python -m tfrecords.build ... --overwrite`")

        data_dir = self.data_dir
        try:
            self.shards.check_files(verify_checksums=True)
        except ShardError as named:
            return named
        return ValueError(f"{data_dir}: a shard could not be read ({first_line}), although every "
                          f"sha256 matches manifest.json; run `python -m tfrecords.verify {data_dir}`")


def synthetic_data(num_classes, image_size, per_replica_batch, num_images=1024, seed=0):
    """Random images and labels generated inside tf.data (like insightface's synthetic mode).

    Element i is a pure function of (seed, i mod num_images), so the stream is identical on
    every run and a resumed run continues exactly where the checkpoint left off.
    """
    h, w = image_size

    def make_example(i):
        j = i % num_images
        label = tf.cast(j % num_classes, tf.int32)
        # A fixed random pattern per class plus per-image noise: learnable, so a working
        # trainer visibly lowers the loss within the smoke test's few steps.
        pattern = tf.random.stateless_uniform((h, w, 3), seed=tf.stack([seed, -1 - tf.cast(label, tf.int64)]),
                                              maxval=255.0)
        noise = tf.random.stateless_uniform((h, w, 3), seed=tf.stack([seed, j]), maxval=255.0)
        return 0.6 * pattern + 0.4 * noise, label

    def dataset_fn(input_context=None, start_step=0):
        replicas = input_context.num_replicas_in_sync if input_context else 1
        pipeline = input_context.input_pipeline_id if input_context else 0
        pipelines = input_context.num_input_pipelines if input_context else 1
        # Global step s covers example indices [s·B, (s+1)·B); input pipeline p (one per
        # worker) takes its contiguous share, so the global batches are the same for any
        # number of replicas or workers.
        global_batch = per_replica_batch * replicas
        share = global_batch // pipelines
        ds = tf.data.Dataset.range(start_step, 2**40).flat_map(
            lambda step: tf.data.Dataset.range(step * global_batch + pipeline * share,
                                               step * global_batch + (pipeline + 1) * share))
        ds = ds.map(make_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(per_replica_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    return TrainData(num_classes=num_classes, image_size=(h, w), num_images=None,
                     dataset_fn=dataset_fn, synthetic=True,
                     description=f"SYNTHETIC random images (class pattern + noise; {num_images} distinct, {num_classes} classes, "
                                 f"{h}x{w}): a smoke test of speed and plumbing, not face training")


def tfrecord_data(shards, per_replica_batch, image_size=None, shuffle_buffer=20000, seed=0,
                  deterministic=False, augmentation=None):
    """The TFRecord shards written by ``python -m tfrecords.build``: ``shards`` is their
    ``tfrecords.manifest.Shards`` (``open_shards``: the manifest read and checked once for the run);
    ``augmentation``: a tfrecords.augment.Augmentation applied after the flip, or None (flip only)."""
    from tfrecords.reader import make_train_dataset

    # Checked here, before the model is built, with the reader's own check.
    size = shards.check_image_size(image_size)
    num_images = shards.num_images("train")
    data_dir = shards.data_dir

    def dataset_fn(input_context=None, start_step=0):
        # The shuffle order of a resumed run is reseeded from the step: the data position
        # within an epoch is not restored bit-exactly (the weights, optimizer and lr are).
        return make_train_dataset(
            shards, per_replica_batch, image_size=size, shuffle_buffer=shuffle_buffer,
            seed=None if seed is None else seed + start_step, deterministic=deterministic,
            input_context=input_context, augmentation=augmentation)

    return TrainData(num_classes=shards.num_classes, image_size=size, num_images=num_images,
                     dataset_fn=dataset_fn, synthetic=False, shards=shards,
                     description=f"{data_dir}: {num_images} images of {shards.num_classes} "
                                 f"identities, {size[0]}x{size[1]}; augmentation: "
                                 f"{augmentation.describe() if augmentation else 'flip only'}")


def singleton_roles(config, data):
    """What --singletons and --singleton-weight make of the classes with one training image.

    Returns ``(class_weights, negative_classes, description)`` for losses.loss.margin_softmax_loss:
    ``class_weights`` [C], the loss weight of each class's examples; ``negative_classes`` [C], 1.0 for
    a class whose examples train only as negatives, else 0 (float lists, each None when it changes
    nothing); and a line for the log (None when nothing changes). Raises ValueError when the settings
    cannot apply to ``data``.
    """
    if config.singletons == "classes" and config.singleton_weight == 1.0:
        return None, None, None
    if data.manifest is None:
        raise ValueError("--singletons negatives and --singleton-weight need --data (the synthetic set has "
                         "no single-image identities)")
    single = [count == 1 for count in data.manifest["class_counts"]]
    if not any(single):
        raise ValueError(f"{data.data_dir}/manifest.json has no identity with one training image, so "
                         "--singletons/--singleton-weight change nothing; build the shards with "
                         "`python -m tfrecords.build ... --min-images 1` to keep them")
    if config.singletons == "negatives" and all(single):
        raise ValueError(f"{data.data_dir}: every identity has one training image, so --singletons negatives "
                         "would leave no class to learn")
    weights = [config.singleton_weight if s else 1.0 for s in single] if config.singleton_weight != 1.0 else None
    negatives = [1.0 if s else 0.0 for s in single] if config.singletons == "negatives" else None
    role = "negatives only (entropic open-set loss)" if negatives else "classes"
    description = (f"{sum(single)} single-image identities train as {role}, loss weight "
                   f"{config.singleton_weight:g}; {len(single) - sum(single) if negatives else len(single)} classes")
    return weights, negatives, description


def total_steps(config, data, global_batch):
    """--max-steps, or --epochs converted to steps with the dataset's size."""
    if config.max_steps is not None:
        return int(config.max_steps)
    per_epoch = data.steps_per_epoch(global_batch)
    if per_epoch is None:
        raise ValueError("--epochs needs --data (the synthetic stream has no epochs); use --max-steps")
    return math.ceil(config.epochs * per_epoch)
