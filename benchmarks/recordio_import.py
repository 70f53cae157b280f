"""RecordIO import speed: ``tfrecords.build --rec`` against a plain read of the same file, in one run (not a test).

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.recordio_import --aligned-dir data/lfw_aligned --rss-records 13000 130000

Packs the first ``--records`` aligned LFW crops (sorted paths; one label per person) into an
insightface pack with its header record (train.rec/.idx/property, written under ``--work-dir`` by
the specification-following writer of tests/recordio_writer.py; the aligned folder is only read),
then measures on the same warm page cache, each the best of ``--repeats``:

- plain read: the .rec read sequentially in 1 MiB blocks (what the disk and the kernel give);
- plain read + sha256: the same, hashed (the builder hashes every shard it writes);
- framing: our reader's sequential scan, every record's parts joined and its IRHeader unpacked;
- decode check: cv2.imdecode of every image on ``--workers`` threads (what the builder checks each image with);
- planning: the builder's two streaming passes over the .idx and every record's IRHeader;
- the import: ``python -m tfrecords.build --rec`` in a fresh process, the writing phase as it reports it
  (read, check, serialize, write, fsync, sha256 of every shard), and its whole wall time;
- the same writing phase in this process with the decode check patched out: what everything else costs;
- with --rss-records: peak RSS of whole imports of packs of those sizes (memory should be flat).

Prints the CPU (lscpu), the load average before and after (other jobs on the machine share the
CPU unless it is idle), and records/s and MB/s of each.
"""

import argparse
import concurrent.futures
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown (no lscpu)"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = fields.get("Flags", "")
    extras = [f for f in ("avx2", "avx512f", "sha_ni", "avx512_bf16", "amx_bf16") if f in flags.split()]
    return f"{model} (CPU family {fields.get('CPU family', '?').strip()}; {', '.join(extras)})"


def make_pack(aligned_dir, work_dir, num_records, name="pack"):
    """train.rec of the first num_records sorted *.jpg under aligned_dir/<person>/ (cycled again when it
    holds fewer: the copies keep their person's label); returns (rec, count)."""
    from tests.recordio_writer import write_insightface_pack  # the writer lives with the tests: we only read packs

    pack_dir = Path(work_dir) / name
    marker = pack_dir / ".complete"
    if marker.is_file() and marker.read_text() == f"{aligned_dir}:{num_records}":
        return pack_dir / "train.rec", num_records
    shutil.rmtree(pack_dir, ignore_errors=True)
    files = sorted(Path(aligned_dir).glob("*/*.jpg"))[:num_records]
    if not files:
        raise SystemExit(f"{aligned_dir}: no aligned <person>/<file>.jpg files to pack")
    files = [files[i % len(files)] for i in range(num_records)]
    people = {name: i for i, name in enumerate(sorted({f.parent.name for f in files}))}
    rec, _ = write_insightface_pack(pack_dir, [(people[f.parent.name], f.read_bytes()) for f in files],
                                    num_classes=len(people), image_size=_size_of(files[0]))
    marker.write_text(f"{aligned_dir}:{num_records}")
    return rec, num_records


def _size_of(path):
    import cv2
    return tuple(cv2.imread(str(path)).shape[:2])


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def plain_read(path, digest=False):
    h = hashlib.sha256() if digest else None
    with open(path, "rb", buffering=0) as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            if h:
                h.update(block)


def framing(path):
    from tfrecords.recordio import iter_records, unpack
    for _, payload in iter_records(path):
        unpack(payload)


def decode_check(path, workers):
    import cv2
    import numpy as np

    from tfrecords.recordio import iter_records, unpack
    cv2.setNumThreads(1)
    images = [unpack(payload)[1] for _, payload in iter_records(path)]
    images = [im for im in images if im]          # the header and identity records hold no image
    decode = lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    pool = concurrent.futures.ThreadPoolExecutor(workers)   # one item per task, as the builder submits them
    return lambda: list(pool.map(decode, images)), len(images), pool


def run_import(rec, out, workers, measure_rss=False):
    """(images, writing-phase seconds, wall seconds, peak RSS in kB or None) of one import in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "tfrecords.build", "--rec", str(rec), "--output-dir", str(out), "--no-progress",
           "--workers", str(workers), "--val-identities", "0"]
    if measure_rss:
        cmd = ["/usr/bin/time", "-f", "MAXRSS_KB %M"] + cmd
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    images, rate = re.search(r"; (\d+) images read in [\d.]+s \((\d+) img/s\)", proc.stdout).groups()
    rss = int(re.search(r"MAXRSS_KB (\d+)", proc.stderr).group(1)) if measure_rss else None
    return int(images), int(images) / int(rate), wall, rss


def planning(rec):
    """The builder's two passes over the pack (count identities, assign records): .idx lines + IRHeaders."""
    from tfrecords.rec_source import RecSource

    source = RecSource(rec, log=lambda *_: None)
    counts = source.count_identities(lambda *_: None)
    for _ in source.assigned_files({name: count for name, (count, _) in counts.items()}):
        pass


def import_without_check(rec, out, workers):
    """Seconds of the writing phase in this process with the image check replaced by a pass-through: what the
    rest of the import (reads, plan, serialization, TFRecord writes, fsync, sha256) costs on its own."""
    from tfrecords import rec_source
    from tfrecords.build import build

    shutil.rmtree(out, ignore_errors=True)
    checked = rec_source.check_image_bytes
    rec_source.check_image_bytes = lambda data, *args, **kwargs: (data, "jpeg", None)
    messages = []
    try:
        build(rec=rec, output_dir=out, workers=workers, val_identities=0, progress=False, log=messages.append)
    finally:
        rec_source.check_image_bytes = checked
    images, rate = re.search(r"; (\d+) images read in [\d.]+s \((\d+) img/s\)", messages[-1]).groups()
    return int(images) / int(rate)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.recordio_import", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--aligned-dir", default=str(REPO / "data" / "lfw_aligned"),
                   help="aligned crops <person>/<file>.jpg to pack (read only)")
    p.add_argument("--records", type=int, default=13000, help="images in the pack")
    p.add_argument("--work-dir", default="/tmp/recordio_import", help="where the pack and the shards go")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="builder threads (default: all cores)")
    p.add_argument("--repeats", type=int, default=3, help="each in-process measure is the best of this many")
    p.add_argument("--rss-records", type=int, nargs="*", default=[],
                   help="also import packs of these sizes once each (the aligned crops cycled) under /usr/bin/time "
                        "and print peak RSS: memory should not grow with the pack, e.g. 13000 130000")
    args = p.parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()   # the in-process build below imports TensorFlow

    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average before: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    rec, n = make_pack(args.aligned_dir, args.work_dir, args.records)
    size = rec.stat().st_size
    print(f"pack: {rec} ({n} images, {size / 1e6:.1f} MB, {size / n / 1e3:.1f} kB per record); warm page cache")
    plain_read(rec)   # warm the page cache for every measure alike
    decode, num_images, pool = decode_check(rec, args.workers)
    assert num_images == n
    rows = [("plain read (1 MiB blocks)", best_of(args.repeats, lambda: plain_read(rec))),
            ("plain read + sha256", best_of(args.repeats, lambda: plain_read(rec, digest=True))),
            ("framing: parts joined + IRHeader", best_of(args.repeats, lambda: framing(rec))),
            (f"decode check: cv2.imdecode, {args.workers} threads", best_of(args.repeats, decode)),
            ("import: planning (2 passes of .idx + IRHeaders)", best_of(args.repeats, lambda: planning(rec)))]
    pool.shutdown()
    imports = [run_import(rec, Path(args.work_dir) / "shards", args.workers) for _ in range(args.repeats)]
    images, write_seconds, wall, _ = min(imports, key=lambda r: r[1])
    assert images == n, (images, n)
    rows.append((f"import: writing phase, {args.workers} workers (as it reports)", write_seconds))
    rows.append(("import: whole command (start-up, plan, write)", min(r[2] for r in imports)))
    rows.append(("  the writing phase without the decode check", min(
        import_without_check(rec, Path(args.work_dir) / "shards_unchecked", args.workers)
        for _ in range(args.repeats))))
    print(f"\n{'':52s} {'records/s':>10s} {'MB/s':>8s} {'x plain read':>12s}")
    for name, seconds in rows:
        print(f"{name:52s} {n / seconds:10.0f} {size / seconds / 1e6:8.0f} {rows[0][1] / seconds:12.3f}")
    for size_n in args.rss_records:
        big, _ = make_pack(args.aligned_dir, args.work_dir, size_n, name=f"pack_{size_n}")
        images, seconds, wall, rss = run_import(big, Path(args.work_dir) / f"shards_{size_n}", args.workers, True)
        print(f"pack of {images} records ({big.stat().st_size / 1e6:.0f} MB): peak RSS {rss / 1024:.0f} MiB, "
              f"writing phase {images / seconds:.0f} records/s, whole command {wall:.1f} s", flush=True)
        shutil.rmtree(Path(args.work_dir) / f"shards_{size_n}", ignore_errors=True)
    print(f"\nload average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
