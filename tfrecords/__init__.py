"""Sharded TFRecords for face recognition: streaming builder and tf.data reader.

    python -m tfrecords.build --input-dir ALIGNED --output-dir SHARDS   # build (resumable)
    python -m tfrecords.verify SHARDS                                   # check every record

``read_manifest`` needs only the standard library; the reader functions import TensorFlow
on first use, so the builder's worker code and manifest tools stay light.
"""

from fileio.quiet_tensorflow import quiet_tensorflow_for_api

quiet_tensorflow_for_api()   # before any TensorFlow import below: its C++ start-up lines stay out of the terminal

from .features import ENCODED, FORMAT, IDENTITY, LABEL, PATH, shard_file_name
from .manifest import ManifestError, read_manifest

_READER_NAMES = ("make_train_dataset", "read_split_images", "resolve_image_size", "iterate_split", "check_shards", "ShardError",
                 "Augmentation")

__all__ = ["ENCODED", "FORMAT", "IDENTITY", "LABEL", "PATH", "ManifestError", "read_manifest",
           "shard_file_name", *_READER_NAMES]


def __getattr__(name):
    if name in _READER_NAMES:
        from . import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'tfrecords' has no attribute {name!r}")
