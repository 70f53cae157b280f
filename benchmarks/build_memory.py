"""Builder peak memory and throughput at two dataset sizes (default 10k vs 100k images; not a test).

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.build_memory

Makes synthetic aligned folders under /tmp (112x96 JPEGs, 20 images per identity; the bytes
come from a pool of distinct smooth random images, so files have realistic JPEG sizes), runs
``python -m tfrecords.build`` on each in a fresh process and reports peak RSS (``/usr/bin/time``,
kB) and images/s. The goal: peak RSS flat in dataset size (within 10 %).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_synthetic_aligned(root, num_images, per_identity=20, image_size=(112, 96), pool=500, seed=0):
    """root/id_XXXXXX/img_XX.jpg; skipped if root already holds num_images files."""
    import cv2
    import numpy as np

    root = Path(root)
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(num_images):
        return
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    h, w = image_size
    blobs = []
    for _ in range(pool):
        small = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (3, 3), 0)
        blobs.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    for i in range(num_images):
        d = root / f"id_{i // per_identity:06d}"
        if i % per_identity == 0:
            d.mkdir(parents=True)
        (d / f"img_{i % per_identity:02d}.jpg").write_bytes(blobs[i % pool])
    marker.write_text(str(num_images))


def run_build(aligned, shards, workers):
    if Path(shards).exists():
        shutil.rmtree(shards)
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB %M", sys.executable, "-m", "tfrecords.build", "--input-dir", str(aligned),
           "--output-dir", str(shards), "--no-progress", "--val-identities", "0"] + (["--workers", str(workers)] if workers else [])
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    rss = int(re.search(r"MAXRSS_KB (\d+)", proc.stderr).group(1))
    rate = re.search(r"\((\d+) img/s\)", proc.stdout).group(1)
    shards_line = re.search(r"(\d+) train shards", proc.stdout).group(1)
    return rss, int(rate), wall, int(shards_line)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--workdir", default="/tmp/tfrecords_build_memory")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--keep", action="store_true", help="keep the generated folders and shards")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    rows = []
    for n in args.sizes:
        t0 = time.time()
        make_synthetic_aligned(work / f"aligned_{n}", n)
        print(f"synthetic folder of {n} images ready ({time.time() - t0:.0f}s)", flush=True)
        rss, rate, wall, num_shards = run_build(work / f"aligned_{n}", work / f"shards_{n}", args.workers)
        rows.append((n, rss, rate, wall, num_shards))
        print(f"  {n:>8} images: peak RSS {rss / 1024:7.1f} MiB, {rate:6d} img/s while writing, "
              f"{wall:6.1f}s wall incl. start-up, {num_shards} shards", flush=True)
        if not args.keep:
            shutil.rmtree(work / f"shards_{n}")
    if len(rows) >= 2:
        print(f"peak RSS {rows[-1][0]} vs {rows[0][0]} images: {rows[-1][1] / rows[0][1]:.3f}x "
              f"(goal: within 10 %)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
