"""Names and layout of one TFRecord example (one face image).

Every example holds the image file's bytes exactly as they were on disk (never decoded
pixels), so a shard is about the size of the aligned folder and decoding happens in the
tf.data pipeline, in parallel.
"""

ENCODED = "image/encoded"    # bytes: the file's bytes as they are (JPEG or PNG)
FORMAT = "image/format"      # bytes: b"jpeg" or b"png"
LABEL = "image/label"        # int64: class index, contiguous 0..C-1 in sorted identity order
IDENTITY = "image/identity"  # bytes: identity (folder) name, UTF-8
PATH = "image/path"          # bytes: "identity/filename" relative to the aligned input dir

FORMATS = ("jpeg", "png")

SPLITS = ("train", "val")


def shard_file_name(split, index, num_shards):
    """``train-00003-of-00016.tfrecord`` (the layout fixed in docs/DESIGN.md)."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def detect_format(data):
    """Return "jpeg" / "png" from the file's magic bytes, or None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def feature_spec():
    """``tf.io.parse_example`` spec for all five features (imports TensorFlow lazily)."""
    import tensorflow as tf

    return {
        ENCODED: tf.io.FixedLenFeature([], tf.string),
        FORMAT: tf.io.FixedLenFeature([], tf.string),
        LABEL: tf.io.FixedLenFeature([], tf.int64),
        IDENTITY: tf.io.FixedLenFeature([], tf.string),
        PATH: tf.io.FixedLenFeature([], tf.string),
    }


def make_example(encoded, image_format, label, identity, path):
    """Serialized ``tf.train.Example`` bytes for one image."""
    import tensorflow as tf

    def _bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    feature = {
        ENCODED: _bytes(encoded),
        FORMAT: _bytes(image_format.encode("ascii")),
        LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        IDENTITY: _bytes(identity.encode("utf-8")),
        PATH: _bytes(path.encode("utf-8")),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
