"""Input pipeline throughput, side by side in one run (images/s; not a test).

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.input_pipeline

Columns, all on the same 112x96 JPEGs in one process:
  (a) path-list loader (the AM-Softmax reference approach, written in tf.data as strongly as it
      goes: Python list of paths -> read_file -> decode_jpeg -> flip -> scale, AUTOTUNE map, batch)
  (b) tfrecords.reader.make_train_dataset over shards built from the same images
  (c) ResFace20 and MobileFaceNet training steps (train.py's own step, batch 64) for scale: how
      many images/s training consumes. Skipped with a note if models/ or losses/ cannot be imported.
Data: the aligned folder given by --aligned, else 112x96 JPEGs made from LFW (centre crop and
resize of /work/shared/data/lfw/images; the statistics of real face JPEGs) under /tmp.
"""

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
from fileio.quiet_tensorflow import quiet_tensorflow

quiet_tensorflow()   # before TensorFlow loads: its C++ start-up lines stay out of the output

LFW_IMAGES = REPO.parent / "shared" / "data" / "lfw" / "images"


def make_aligned_from_lfw(src, dst, image_size=(112, 96), limit=None, quality=95):
    """Write dst/<identity>/<name>.jpg: centre crops of LFW resized to image_size (H, W). Returns count."""
    import cv2

    src, dst = Path(src), Path(dst)
    h, w = image_size
    n = 0
    for person in sorted(p for p in src.iterdir() if p.is_dir()):
        for f in sorted(person.iterdir()):
            if limit and n >= limit:
                return n
            out = dst / person.name / (f.stem + ".jpg")
            if not out.exists():
                img = cv2.imread(str(f))
                ch, cw = img.shape[:2]
                # face-sized centre crop with the target aspect ratio (LFW faces sit in the middle ~120 px)
                crop_h = int(ch * 0.56)
                crop_w = int(crop_h * w / h)
                y0, x0 = (ch - crop_h) // 2, (cw - crop_w) // 2
                crop = cv2.resize(img[y0:y0 + crop_h, x0:x0 + crop_w], (w, h), interpolation=cv2.INTER_AREA)
                out.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out), crop, [cv2.IMWRITE_JPEG_QUALITY, quality])
            n += 1
    return n


def list_images(root):
    return sorted(str(p) for p in Path(root).glob("*/*.jpg"))


def path_list_dataset(paths, batch_size, parallel=True):
    """The reference approach in tf.data: one small file read + decode per element."""
    import tensorflow as tf

    labels = [hash(Path(p).parent.name) % 1000 for p in paths]

    def load(path, label):
        # same decoder setting as (b), so the comparison is about the data layout alone
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE")
        image = tf.cast(image, tf.float32)
        image = tf.image.random_flip_left_right(image)
        return (image - 127.5) / 128.0, label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths)).repeat()
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE if parallel else None)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def images_per_second(ds, batch_size, seconds, warmup_batches=20):
    it = iter(ds)
    for _ in range(warmup_batches):
        next(it)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch_size
    return n / (time.perf_counter() - t0)


def training_rate(name, image_size, num_classes, batch_size=64, steps=5, warmup=2):
    """Images/s of train.py's own training step (benchmarks/real_step.py) for backbone `name`."""
    from benchmarks.real_step import make_real_step

    step = make_real_step(name, batch_size, tuple(image_size), num_classes)
    for _ in range(warmup):
        step.run()
    t0 = time.perf_counter()
    for _ in range(steps):
        step.run()
    return steps * batch_size / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aligned", default="/tmp/bench_aligned_112x96", help="aligned folder (made from LFW if absent)")
    p.add_argument("--shards", default="/tmp/bench_shards_112x96", help="shard dir (built if absent)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=5.0, help="timing window per loader and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--train-steps", type=int, default=5, help="timed steps per backbone (0: skip column c)")
    p.add_argument("--dct", action="store_true", help="also compare decode_jpeg dct_method INTEGER_FAST")
    args = p.parse_args(argv)

    if not Path(args.aligned).is_dir():
        t0 = time.time()
        n = make_aligned_from_lfw(LFW_IMAGES, args.aligned)
        print(f"made {n} 112x96 JPEGs from LFW in {args.aligned} ({time.time() - t0:.0f}s)")
    if not (Path(args.shards) / "manifest.json").is_file():
        from tfrecords.build import build

        build(args.aligned, args.shards, num_shards=16, val_identities=0, progress=False)  # all train, as measured

    import tensorflow as tf

    from tfrecords.manifest import open_shards
    from tfrecords.reader import make_train_dataset

    paths = list_images(args.aligned)
    shards = open_shards(args.shards)
    manifest = shards.manifest
    size = tuple(manifest["image_size"])
    print(f"data: {len(paths)} JPEGs {size[0]}x{size[1]}, {manifest['num_images']} in "
          f"{len(manifest['splits']['train']['shards'])} shards; cores: {os.cpu_count()}; "
          f"batch {args.batch_size}; {args.rounds} rounds x {args.seconds:.0f}s per loader; TF {tf.__version__}")
    loaders = {
        "(a) path list, serial map": lambda: path_list_dataset(paths, args.batch_size, False),
        "(a) path list, AUTOTUNE map": lambda: path_list_dataset(paths, args.batch_size),
        "(b) tfrecords.reader.make_train_dataset": lambda: make_train_dataset(shards, args.batch_size, seed=0),
        "(b) same, deterministic=True": lambda: make_train_dataset(shards, args.batch_size, seed=0, deterministic=True),
    }
    # Interleaved rounds, median per loader: other work on a shared machine hits all loaders alike.
    rates = {name: [] for name in loaders}
    for _ in range(args.rounds):
        for name, make in loaders.items():
            rates[name].append(images_per_second(make(), args.batch_size, args.seconds))
    median = {name: sorted(r)[len(r) // 2] for name, r in rates.items()}
    for name, r in rates.items():
        print(f"  {name:36s} median {median[name]:7.0f} img/s   rounds: {' '.join(f'{v:.0f}' for v in r)}")
    ours = median["(b) tfrecords.reader.make_train_dataset"]
    print(f"  tfrecords / path-list(AUTOTUNE) = {ours / median['(a) path list, AUTOTUNE map']:.2f}x")

    if args.dct:
        compare_dct(paths[:2000])

    if args.train_steps:
        for backbone in ("resface20", "mobilefacenet"):
            try:
                rate = training_rate(backbone, size, manifest["num_classes"], steps=args.train_steps)
            except Exception as e:  # models/losses are other packages; report instead of faking a number
                print(f"  (c) {backbone} training step: not measured ({type(e).__name__}: {e})")
                continue
            print(f"  (c) {backbone} train step, batch 64, fp32: {rate:7.1f} img/s   "
                  f"reader / train = {ours / rate:.0f}x")


def compare_dct(paths):
    """Speed and pixel difference of decode_jpeg's dct_method choices ("" is TF's default)."""
    import numpy as np
    import tensorflow as tf

    blobs = [open(p, "rb").read() for p in paths]
    ds_data = tf.data.Dataset.from_tensor_slices(blobs).repeat(5)
    methods = ("", "INTEGER_FAST", "INTEGER_ACCURATE")
    for method in methods + methods:  # twice: the first pass also warms up
        ds = ds_data.map(lambda b, m=method: tf.io.decode_jpeg(b, channels=3, dct_method=m),
                         num_parallel_calls=tf.data.AUTOTUNE).batch(256)
        t0 = time.perf_counter()
        n = sum(int(x.shape[0]) for x in ds)
        print(f"  decode_jpeg only, dct_method={method or 'default':17s} {n / (time.perf_counter() - t0):7.0f} img/s")
    ref = [tf.io.decode_jpeg(b, channels=3, dct_method="INTEGER_ACCURATE").numpy().astype(int) for b in blobs[:500]]
    for method in ("", "INTEGER_FAST"):
        d = np.stack([np.abs(r - tf.io.decode_jpeg(b, channels=3, dct_method=method).numpy().astype(int))
                      for r, b in zip(ref, blobs[:500])])
        print(f"  {method or 'default'} vs INTEGER_ACCURATE: mean |diff| {d.mean():.3f}, max {d.max()}, "
              f"{(d > 2).mean() * 100:.2f}% of values differ by > 2 (0..255)")


if __name__ == "__main__":
    main()
