"""Sharded TFRecords for face recognition: streaming builder and tf.data reader.

    python -m tfrecords.build --input-dir ALIGNED --output-dir SHARDS   # build (resumable)
    python -m tfrecords.verify SHARDS                                   # check every record

Import from the module that defines a name: ``tfrecords.manifest`` (``open_shards``, the ``Shards``
handle, ``read_manifest``; standard library only), ``tfrecords.reader`` (the tf.data pipeline; imports
TensorFlow), ``tfrecords.features`` (the record layout), ``tfrecords.augment``, ``tfrecords.build``.
"""

from fileio.quiet_tensorflow import quiet_tensorflow_for_api

quiet_tensorflow_for_api()   # API users: TensorFlow's C++ start-up lines stay out of the terminal, as for the commands
