"""Check a shard directory end to end: manifest, shard sizes and sha256, every record and image
(decoded, and every JPEG strictly: damaged data that libjpeg only warns about is an error here).

    python -m tfrecords.verify SHARDS [--no-decode]

Exit status 0 when everything matches, 1 with a message naming the shard (and record) otherwise.
Use it when training stops with TensorFlow's ``DataLossError: corrupted record at N``, which
does not say which file it was reading.
"""

import argparse
import sys


def verify(data_dir, decode=True, log=print):
    """Raise ManifestError/ShardError naming the first bad shard or record; returns {split: images checked}."""
    import tensorflow as tf

    from fileio import jpeg_damage

    from . import features as F
    from .manifest import ShardError, open_shards

    shards = open_shards(data_dir)
    manifest = shards.manifest
    height, width = shards.image_size
    spec = F.feature_spec()
    checked = {}
    for split, entry in manifest["splits"].items():
        shards.check_files(split, verify_checksums=True)
        num_labels = manifest["num_classes"] if split == "train" else len(entry.get("labels", []))
        total = 0
        for shard in entry["shards"]:
            path = str(shards.data_dir / shard["file"])
            n = 0
            try:
                for n, record in enumerate(tf.data.TFRecordDataset(path), 1):
                    ex = tf.io.parse_single_example(record, spec)
                    label = int(ex[F.LABEL])
                    if not 0 <= label < num_labels:
                        raise ShardError(f"{path}: record {n - 1} has label {label}, outside 0..{num_labels - 1}")
                    if decode:
                        name = ex[F.PATH].numpy().decode()
                        damage = jpeg_damage(ex[F.ENCODED].numpy()) if ex[F.FORMAT].numpy() == b"jpeg" else None
                        if damage:
                            raise ShardError(f"{path}: record {n - 1} ({name}) is a damaged JPEG ({damage}); "
                                             "rebuild with `python -m tfrecords.build ... --overwrite`, which "
                                             "lists it in unreadable.txt instead of packing it")
                        try:
                            image = tf.io.decode_image(ex[F.ENCODED], channels=3, expand_animations=False)
                        except tf.errors.OpError as e:
                            raise ShardError(f"{path}: record {n - 1} ({name}) does not decode "
                                             f"({e.message.strip()}); rebuild with --overwrite") from None
                        shape = tuple(image.shape)
                        if shape[:2] != (height, width):
                            raise ShardError(f"{path}: record {n - 1} ({name}) is "
                                             f"{shape[0]}x{shape[1]}, manifest says {height}x{width}")
            except tf.errors.OpError as e:
                raise ShardError(f"{path}: unreadable after record {n} ({e.message.strip()})") from None
            if n != shard["num_images"]:
                raise ShardError(f"{path}: {n} records, manifest says {shard['num_images']}")
            total += n
        checked[split] = total
        log(f"{split}: {len(entry['shards'])} shards, {total} records OK")
    return checked


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tfrecords.verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", help="shard directory (with manifest.json)")
    p.add_argument("--no-decode", action="store_true", help="check records and labels only, skip image decoding")
    args = p.parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()
    from .manifest import ManifestError

    try:
        verify(args.data_dir, decode=not args.no_decode)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
