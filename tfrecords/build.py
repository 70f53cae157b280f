"""Build sharded TFRecords from an aligned face folder (or a ``path label`` list), streaming.

    python -m tfrecords.build --input-dir ALIGNED --output-dir SHARDS [--val-identities 0.02]

Writes ``SHARDS/train-00000-of-000NN.tfrecord`` (and ``val-*`` for held-out identities),
``manifest.json`` (last), ``val_pairs.txt`` and, when some inputs could not be read,
``unreadable.txt``. Design points:

- Streaming: identities are counted one folder at a time, then each identity's files are
  assigned to shards and spilled to per-shard plan files under ``SHARDS/.build/``; memory holds
  C names and counts plus one shard's path list, never the whole dataset.
- Mixing: identities are visited in a seeded random order and each shard's records are
  shuffled, so every shard mixes many identities (the reader shuffles further).
- Bytes stored as they are; labels 0..C-1 in sorted identity order (after filters).
- A shard is written under a temporary name, hashed, recorded in ``.build/done/``, then renamed:
  it is visible only when complete. A rerun with the same inputs and options (even after
  kill -9) keeps complete shards and redoes the rest; different inputs/options need --overwrite.
"""

import argparse
import bisect
import collections
import fcntl
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fileio import (format_generic_pairs, parse_image_size, sha256_of_file, untrainable_reason, write_json_atomic,
                    write_text_atomic)

from .features import shard_file_name
from .image_check import WrongImageSize, image_size_of, load_checked
from .manifest import FORMAT_VERSION, MANIFEST_NAME
from .pairs import make_pairs
from .sources import FolderSource, ListSource, SourceError, read_people_file, sort_identities

WORK_DIR = ".build"
KILL_HOOK_ENV = "TFRECORDS_BUILD_KILL_AFTER_IMAGES"  # test hook: SIGKILL self after N images written


class BuildError(RuntimeError):
    """The build cannot go on (message names the file and the fix)."""


# ----------------------------------------------------------------------------- planning

def _count_identities(source, people, skipped):
    """{name: (count, bytes)} for every identity (restricted to `people` when given)."""
    if isinstance(source, ListSource):
        counts = source.counts_and_sizes(skipped)
        return {k: tuple(v) for k, v in counts.items() if people is None or k in people}
    counts = {}
    for name in source.identity_names():
        if people is not None and name not in people:
            continue
        counts[name] = source.count(name, skipped)
    return counts


def select_identities(counts, *, min_images=1, max_images_per_class=None, max_classes=None,
                      val_identities=0.0, seed=0):
    """Apply the identity filters; returns (train names, val names, {name: capped count}).

    Order: keep identities with >= min_images images; keep the first max_classes of them
    (sorted order; train + val together); cap each at max_images_per_class (first files);
    then hold out val identities, drawn (seeded) among those with >= 2 images so that
    same-person pairs exist. val_identities < 1 is a fraction of the kept identities, >= 1 a count.
    Both lists come back sorted.
    """
    kept = [n for n in sort_identities(counts) if counts[n][0] >= max(1, min_images)]
    if max_classes:
        kept = kept[:max_classes]
    cap = max_images_per_class or None
    capped = {n: min(counts[n][0], cap) if cap else counts[n][0] for n in kept}
    if val_identities < 0:
        raise BuildError(f"--val-identities must be >= 0, got {val_identities}")
    num_val = round(val_identities * len(kept)) if val_identities < 1 else int(val_identities)
    if val_identities > 0 and num_val == 0:
        num_val = 1
    candidates = [n for n in kept if capped[n] >= 2]
    if num_val > len(candidates):
        raise BuildError(f"--val-identities asks for {num_val} held-out identities but only "
                         f"{len(candidates)} identities have >= 2 images; lower it")
    rng = np.random.default_rng([seed, 1])
    val = set(rng.choice(candidates, num_val, replace=False).tolist()) if num_val else set()
    train = [n for n in kept if n not in val]
    if not train:
        raise BuildError("no training identity left after the filters "
                         f"(min_images={min_images}, max_classes={max_classes}, val={num_val})")
    return train, sort_identities(val), capped


class _PlanWriter:
    """Per-shard plan files ``.build/plan/<split>-<i>.tsv`` (label, identity, rel, abs), spilled in batches."""

    def __init__(self, plan_dir, flush_every=50_000):
        self.plan_dir = Path(plan_dir)
        self.buffers = collections.defaultdict(list)
        self.buffered = 0
        self.flush_every = flush_every

    def add(self, key, label, identity, rel, absolute):
        for field in (identity, rel, absolute):
            if "\t" in field or "\n" in field:
                raise BuildError(f"{absolute}: tab or newline in a path or identity name is not supported; rename it")
        self.buffers[key].append(f"{label}\t{identity}\t{rel}\t{absolute}\n")
        self.buffered += 1
        if self.buffered >= self.flush_every:
            self.flush()

    def flush(self):
        for key, lines in self.buffers.items():
            with open(self.plan_dir / f"{key}.tsv", "a", encoding="utf-8") as f:
                f.writelines(lines)
        self.buffers.clear()
        self.buffered = 0


def _shard_bounds(total, num_shards):
    """First global position of each shard (even split of `total` positions)."""
    return [(j * total) // num_shards for j in range(num_shards)]


def write_plan(source, splits, capped, num_shards, plan_dir, seed):
    """Assign every selected image to (split, shard) and spill the assignment to plan files.

    splits: {split: sorted names}. Identities are laid out in a seeded random order and cut
    into num_shards[split] equal runs of positions. Returns nothing; files are the result.
    """
    if plan_dir.exists():
        shutil.rmtree(plan_dir)
    plan_dir.mkdir(parents=True)
    where = {}  # name -> (split, label, first position)
    bounds = {}
    for split, names in splits.items():
        rng = np.random.default_rng([seed, 2, len(split)])
        position = 0
        for i in rng.permutation(len(names)):
            where[names[i]] = (split, int(i), position)
            position += capped[names[i]]
        bounds[split] = _shard_bounds(position, num_shards[split])
    writer = _PlanWriter(plan_dir)
    for split in splits:  # touch every plan file, so empty shards still exist
        for j in range(num_shards[split]):
            (plan_dir / f"{split}-{j:05d}.tsv").touch()

    def add(name, k, rel, absolute):
        split, label, first = where[name]
        shard = bisect.bisect_right(bounds[split], first + k) - 1
        writer.add(f"{split}-{shard:05d}", label, name, rel, absolute)

    if isinstance(source, ListSource):
        seen = collections.Counter()
        for absolute, rel, name in source.stream():
            if name in where and seen[name] < capped[name]:
                add(name, seen[name], rel, absolute)
                seen[name] += 1
    else:
        for split, names in splits.items():
            for name in names:
                files = source.files(name)
                if len(files) < capped[name]:
                    raise BuildError(f"{source.root / name}: {len(files)} images now, {capped[name]} when "
                                     "counted a moment ago; is another program writing to it? Rerun when it is done.")
                for k, (absolute, rel) in enumerate(files[:capped[name]]):
                    add(name, k, rel, absolute)
    writer.flush()


def _read_plan(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


def _fingerprint(options, plan_dir):
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for path in sorted(plan_dir.iterdir()):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- writing

class _KillHook:
    """Test hook (env TFRECORDS_BUILD_KILL_AFTER_IMAGES=N): SIGKILL this process after N images."""

    def __init__(self):
        value = os.environ.get(KILL_HOOK_ENV)
        self.remaining = int(value) if value else None

    def tick(self):
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


def _write_shard(plan_file, out_path, image_size, resize, executor, progress, kill_hook, seed,
                 keep_paths, window):
    """Write one shard (temp name -> rename); returns its done record (dict)."""
    import tensorflow as tf

    from .features import make_example

    entries = _read_plan(plan_file)
    rng = np.random.default_rng([seed, 3, int.from_bytes(hashlib.sha256(out_path.name.encode()).digest()[:4], "little")])
    entries = [entries[i] for i in rng.permutation(len(entries))]  # mix identities inside the shard
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    record = {"file": out_path.name, "num_images": 0, "formats": {}, "resized": 0,
              "unreadable": [], "class_counts": {}, "paths": [] if keep_paths else None}
    pending = collections.deque()
    it = iter(entries)

    def submit():
        entry = next(it, None)
        if entry is not None:
            pending.append((entry, executor.submit(load_checked, entry[3], image_size, resize)))

    for _ in range(window):
        submit()
    try:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            while pending:
                (label, identity, rel, absolute), future = pending.popleft()
                submit()
                try:
                    data, fmt, was_resized = future.result()
                except WrongImageSize as e:
                    raise BuildError(str(e)) from None
                except Exception as e:  # unreadable input: listed in unreadable.txt, never dropped silently
                    record["unreadable"].append([rel, f"{type(e).__name__}: {e}"])
                    progress.update(1)
                    continue
                writer.write(make_example(data, fmt, int(label), identity, rel))
                record["num_images"] += 1
                record["formats"][fmt] = record["formats"].get(fmt, 0) + 1
                record["resized"] += int(was_resized)
                record["class_counts"][label] = record["class_counts"].get(label, 0) + 1
                if keep_paths:
                    record["paths"].append([identity, rel])
                progress.update(1)
                kill_hook.tick()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        for _, future in pending:
            future.cancel()
        tmp.unlink(missing_ok=True)
        raise
    record["bytes"] = tmp.stat().st_size
    record["sha256"] = sha256_of_file(tmp)
    return record, tmp


# ----------------------------------------------------------------------------- driver

def _parse_size(text):
    try:
        return parse_image_size(text.replace(",", "x"), trainable=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _parse_val(text):
    value = float(text)
    if value < 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError("--val-identities is a fraction in [0, 1) or a whole count")
    return value


def build(input_dir=None, output_dir=None, *, list_file=None, image_size=None, resize=False,
          num_shards=None, shard_size_mb=100.0, workers=None, min_images=1, max_images_per_class=None,
          max_classes=None, people=None, val_identities=0.0, val_pairs=6000, seed=0, overwrite=False,
          progress=True, log=print):
    """Build (or resume, or confirm) a shard directory; returns the manifest dict.

    Arguments mirror the command line (see ``--help``). Raises BuildError / SourceError with
    a message naming the offending file.
    """
    if output_dir is None or (input_dir is None and list_file is None):
        raise BuildError("give --output-dir and either --input-dir or --list")
    out = Path(output_dir)
    source = ListSource(list_file, input_dir) if list_file else FolderSource(input_dir)
    if out.resolve() == Path(getattr(source, "root", out / "-")).resolve():
        raise BuildError(f"{out}: the output directory must differ from the input directory")
    people_set = read_people_file(people) if people else None
    workers = workers or os.cpu_count() or 1
    out.mkdir(parents=True, exist_ok=True)
    work = out / WORK_DIR

    # 1) count identities (one folder / one line at a time) and apply filters
    t0 = time.time()
    work.mkdir(exist_ok=True)
    with open(work / "lock", "w") as lock:  # released on return, error or kill -9
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BuildError(f"{out}: another build is writing to this directory; wait for it to finish") from None
        return _build_locked(source, out, work, t0, people, people_set, image_size, resize, num_shards,
                             shard_size_mb, workers, min_images, max_images_per_class, max_classes,
                             val_identities, val_pairs, seed, overwrite, progress, log)


def _build_locked(source, out, work, t0, people, people_set, image_size, resize, num_shards, shard_size_mb,
                  workers, min_images, max_images_per_class, max_classes, val_identities, val_pairs, seed,
                  overwrite, progress, log):
    from tqdm import tqdm

    skipped_path = work / f"skipped-{os.getpid()}.tsv"  # streamed to disk: there may be one per image
    with open(skipped_path, "w", encoding="utf-8") as skipped_file:
        counts = _count_identities(source, people_set, lambda path, why: skipped_file.write(f"{path}\t{why}\n"))
    if people_set is not None:
        missing = sorted(people_set - set(counts))
        if missing:
            log(f"warning: {len(missing)} names from {people} have no images in the input "
                f"(e.g. {', '.join(missing[:3])})")
    train, val, capped = select_identities(counts, min_images=min_images, max_images_per_class=max_images_per_class,
                                           max_classes=max_classes, val_identities=val_identities, seed=seed)
    splits = {"train": train}
    if val:
        splits["val"] = val
    totals = {s: sum(capped[n] for n in names) for s, names in splits.items()}
    est_bytes = {s: sum(counts[n][1] * capped[n] / counts[n][0] for n in names) for s, names in splits.items()}
    if num_shards:
        per_shard = max(1.0, est_bytes["train"] / num_shards)
        shards = {"train": min(num_shards, max(1, totals["train"]))}
    else:
        per_shard = shard_size_mb * 1e6
        shards = {"train": min(max(1, math.ceil(est_bytes["train"] / per_shard)), max(1, totals["train"]))}
    if val:
        shards["val"] = min(max(1, math.ceil(est_bytes["val"] / per_shard)), totals["val"])

    # 2) assign images to shards (plan files), fingerprint the plan
    plan_dir = work / f"plan-{os.getpid()}"
    write_plan(source, splits, capped, shards, plan_dir, seed)
    if image_size is None:
        image_size = _infer_image_size(plan_dir / "train-00000.tsv", log)
    image_size = tuple(int(v) for v in image_size)
    if untrainable_reason(image_size):
        log(f"warning: these shards will not train: {untrainable_reason(image_size)}")
    options = {"format_version": FORMAT_VERSION, "source": source.description, "image_size": list(image_size),
               "filters": {"min_images": min_images, "max_images_per_class": max_images_per_class,
                           "max_classes": max_classes, "people": str(Path(people).resolve()) if people else None},
               "val_identities": val_identities, "val_pairs": val_pairs, "seed": seed, "shards": shards}
    fingerprint = _fingerprint(options, plan_dir)
    log(f"planned {totals['train']} train images / {len(train)} classes in {shards['train']} shards"
        + (f", {totals['val']} val images / {len(val)} held-out identities in {shards['val']} shards" if val else "")
        + f" ({time.time() - t0:.1f}s)")

    state_path = work / "state.json"
    previous = None
    if (out / MANIFEST_NAME).is_file():
        with open(out / MANIFEST_NAME, encoding="utf-8") as f:
            previous = json.load(f).get("build_fingerprint")
        if previous == fingerprint:
            shutil.rmtree(plan_dir)
            skipped_path.unlink()
            log(f"{out}: already built with these inputs and options; nothing to do")
            from .manifest import read_manifest
            return read_manifest(out)
    elif state_path.is_file():
        with open(state_path, encoding="utf-8") as f:
            previous = json.load(f).get("fingerprint")
    leftovers = [p.name for p in out.iterdir() if _is_output_file(p.name)]
    if previous != fingerprint and (previous is not None or leftovers):
        if not overwrite:
            shutil.rmtree(plan_dir)
            skipped_path.unlink()
            raise BuildError(f"{out} holds shards from a build with other inputs or options"
                             f"{'' if previous else ' (or of unknown origin: ' + leftovers[0] + ')'}; pass "
                             "--overwrite to replace them, or choose another --output-dir")
        log(f"{out}: removing the previous build (--overwrite)")
        for name in leftovers:
            (out / name).unlink()
        if (work / "done").exists():
            shutil.rmtree(work / "done")
    for path in out.iterdir():  # temp files of a killed run are never valid
        if ".tfrecord.tmp-" in path.name or path.name.endswith(".txt.tmp"):
            path.unlink()
    for path in work.iterdir():  # plans and skip lists of earlier runs
        if path.name == "lock":
            continue
        if path.is_dir() and path.name.startswith("plan") and path != plan_dir:
            shutil.rmtree(path)
        elif path.name.startswith("skipped") and path != skipped_path:
            path.unlink()
    plan_dir = plan_dir.rename(work / "plan")
    skipped_path = skipped_path.rename(work / "skipped.tsv")
    write_json_atomic(state_path, {"fingerprint": fingerprint, "options": options})
    done_dir = work / "done"
    done_dir.mkdir(exist_ok=True)

    # 3) write shards; complete ones from an earlier run are kept
    import tensorflow as tf  # noqa: F401  (imported here so its start-up time is not counted as writing)

    kill_hook = _KillHook()
    total = sum(totals.values())
    records = {}
    resumed = 0
    t1 = time.time()
    written_images = 0
    with ThreadPoolExecutor(workers) as executor, \
            tqdm(total=total, unit="img", disable=not progress, desc="tfrecords", smoothing=0.05) as bar:
        for split in splits:
            records[split] = []
            for j in range(shards[split]):
                name = shard_file_name(split, j, shards[split])
                done_path = done_dir / f"{name}.json"
                final = out / name
                record = _load_done(done_path, final, fingerprint)
                if record is None:
                    record, tmp = _write_shard(plan_dir / f"{split}-{j:05d}.tsv", final, image_size, resize,
                                               executor, bar, kill_hook, seed, keep_paths=(split == "val"),
                                               window=8 * workers + 64)
                    record["fingerprint"] = fingerprint
                    write_json_atomic(done_path, record)
                    os.replace(tmp, final)  # visible only now, complete
                    written_images += record["num_images"] + len(record["unreadable"])
                else:
                    resumed += 1
                    bar.update(record["num_images"] + len(record["unreadable"]))
                records[split].append(record)
    elapsed = time.time() - t1
    if resumed:
        log(f"resumed: kept {resumed} complete shard(s) from an earlier run")

    # 4) manifest, pair list, unreadable list (manifest last: it marks the build complete)
    manifest = _assemble(out, options, fingerprint, splits, records, skipped_path, seed, val_pairs, image_size)
    write_json_atomic(out / MANIFEST_NAME, manifest)
    rate = written_images / elapsed if elapsed > 0 else float("nan")
    log(f"wrote {out}: {manifest['num_images']} train images, {manifest['num_classes']} classes, "
        f"{len(records['train'])} train shards" + (f", {manifest['splits']['val']['num_images']} val images, "
                                                    f"{manifest['val_pairs_count']} val pairs" if val else "")
        + f"; {written_images} images read in {elapsed:.1f}s ({rate:.0f} img/s)")
    bad = manifest["unreadable"]["count"]
    if bad:
        log(f"WARNING: {bad} input file(s) could not be used; they are listed with the reason in "
            f"{out / 'unreadable.txt'}")
    return manifest


def _is_output_file(name):
    """Names this builder writes in the output directory (and removes on --overwrite)."""
    return (name in (MANIFEST_NAME, "val_pairs.txt", "unreadable.txt")
            or (name.endswith(".tfrecord") and name.split("-")[0] in ("train", "val")))


def _infer_image_size(plan_file, log):
    for label, identity, rel, absolute in _read_plan(plan_file):
        try:
            size = image_size_of(absolute)
        except (OSError, ValueError):
            continue
        log(f"image size {size[0]}x{size[1]} (HxW), taken from {absolute}; set --image-size to enforce another")
        return size
    raise BuildError(f"cannot infer the image size: no readable image in the first shard plan ({plan_file}); "
                     "pass --image-size HxW")


def _load_done(done_path, final, fingerprint):
    """The done record of a complete shard from an earlier run, or None (then it is rewritten)."""
    if not done_path.is_file() or not final.is_file():
        return None
    try:
        with open(done_path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("fingerprint") != fingerprint or final.stat().st_size != record.get("bytes"):
        return None
    return record


def _assemble(out, options, fingerprint, splits, records, skipped_path, seed, val_pairs, image_size):
    unreadable = []  # per-shard failures (bounded by shard size); planning-time skips stream from skipped_path
    manifest = {"format_version": FORMAT_VERSION, "image_size": list(image_size),
                "num_classes": len(splits["train"]), "labels": list(splits["train"]),
                "num_images": 0, "splits": {}}
    for split, names in splits.items():
        class_counts = [0] * len(names)
        formats = collections.Counter()
        resized = 0
        for r in records[split]:
            for label, n in r["class_counts"].items():
                class_counts[int(label)] += n
            formats.update(r["formats"])
            resized += r["resized"]
            unreadable.extend(r["unreadable"])
        entry = {"num_images": sum(r["num_images"] for r in records[split]), "num_classes": len(names),
                 "formats": dict(formats), "resized": resized,
                 "shards": [{"file": r["file"], "num_images": r["num_images"], "bytes": r["bytes"],
                             "sha256": r["sha256"]} for r in records[split]]}
        if split == "train":
            manifest["class_counts"] = class_counts
            manifest["num_images"] = entry["num_images"]
        else:
            entry["labels"] = list(names)
            entry["class_counts"] = class_counts
        manifest["splits"][split] = entry
    empty = [n for n, c in zip(manifest["labels"], manifest["class_counts"]) if c == 0]
    if empty:
        manifest["empty_classes"] = empty
    manifest["val_pairs"] = None
    manifest["val_pairs_count"] = None
    if "val" in splits:
        by_identity = collections.defaultdict(list)
        for r in records["val"]:
            for identity, rel in r["paths"]:
                by_identity[identity].append(rel)
        pairs = make_pairs(by_identity, val_pairs, seed)
        if pairs:
            write_text_atomic(out / "val_pairs.txt", format_generic_pairs(pairs))
            manifest["val_pairs"] = "val_pairs.txt"
            same = sum(p[2] for p in pairs)
            manifest["val_pairs_count"] = {"same": same, "different": len(pairs) - same}
    count = 0
    tmp = out / ".unreadable.txt.tmp"
    with open(tmp, "w", encoding="utf-8") as f, open(skipped_path, encoding="utf-8") as skipped:
        f.write("# path<TAB>reason  (inputs left out of the shards)\n")
        for line in skipped:
            f.write(line)
            count += 1
        for path, why in unreadable:
            f.write(f"{path}\t{why}\n")
            count += 1
    if count:
        os.replace(tmp, out / "unreadable.txt")
    else:
        tmp.unlink()
        if (out / "unreadable.txt").exists():
            (out / "unreadable.txt").unlink()
    manifest["unreadable"] = {"count": count, "file": "unreadable.txt" if count else None}
    manifest.update({"source": options["source"], "filters": options["filters"], "seed": seed,
                     "val_identities": options["val_identities"], "build_fingerprint": fingerprint,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return manifest


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tfrecords.build",
        description="Pack an aligned face folder (ALIGNED/<identity>/<image>.jpg|png) or a 'path label' "
                    "list into sharded TFRecords + manifest.json, streaming (memory flat in dataset size). "
                    "Only subdirectories of --input-dir are identities; top-level files (align_report.jsonl, "
                    "align_summary.json, contact_sheet.png, ...) are ignored. A rerun resumes an interrupted build.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_argument_group("input")
    src.add_argument("--input-dir", help="aligned folder; with --list, the root for relative list paths")
    src.add_argument("--list", dest="list_file", help="text file of 'path label' lines instead of a folder")
    src.add_argument("--output-dir", required=True, help="shard directory to create (or resume)")
    src.add_argument("--image-size", type=_parse_size, default=None,
                     help="expected HxW, e.g. 112x96 (default: the size of the first image)")
    src.add_argument("--resize", action="store_true",
                     help="resize (and re-encode) images of another size instead of stopping with an error")
    flt = p.add_argument_group("identity filters (applied in this order)")
    flt.add_argument("--people", help="only these identities (LFW people file such as peopleDevTrain.txt, "
                                      "or one name per line)")
    flt.add_argument("--min-images", type=int, default=1, help="drop identities with fewer images")
    flt.add_argument("--max-classes", type=int, default=None,
                     help="keep only the first K identities in sorted order (train + val)")
    flt.add_argument("--max-images-per-class", type=int, default=None,
                     help="keep at most K images per identity (first in name order); e.g. "
                          "--min-images 10 --max-images-per-class 20 for arcface-pytorch's balanced set")
    flt.add_argument("--val-identities", type=_parse_val, default=0.0,
                     help="hold out whole identities for validation: a fraction (0.02) or a count (50); "
                          "writes val-* shards and val_pairs.txt")
    flt.add_argument("--val-pairs", type=int, default=6000, help="verification pairs to write (half same)")
    out = p.add_argument_group("output")
    out.add_argument("--num-shards", type=int, default=None, help="train shards (default: from --shard-size-mb)")
    out.add_argument("--shard-size-mb", type=float, default=100.0, help="target shard size")
    out.add_argument("--workers", type=int, default=None, help="reader/decoder threads (default: CPU count)")
    out.add_argument("--seed", type=int, default=0, help="seed for held-out identities, shard mixing and pairs")
    out.add_argument("--overwrite", action="store_true",
                     help="replace a shard directory built from other inputs or options")
    out.add_argument("--strict", action="store_true", help="exit with status 2 if any input was unreadable")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if (args.input_dir is None) == (args.list_file is None) and args.list_file is None:
        p.error("give --input-dir ALIGNED or --list FILE")
    for name in ("num_shards", "workers", "max_classes", "max_images_per_class"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        manifest = build(args.input_dir, args.output_dir, list_file=args.list_file, image_size=args.image_size,
                         resize=args.resize, num_shards=args.num_shards, shard_size_mb=args.shard_size_mb,
                         workers=args.workers, min_images=args.min_images,
                         max_images_per_class=args.max_images_per_class, max_classes=args.max_classes,
                         people=args.people, val_identities=args.val_identities, val_pairs=args.val_pairs,
                         seed=args.seed, overwrite=args.overwrite, progress=not args.no_progress)
    except (BuildError, SourceError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.strict and manifest["unreadable"]["count"]:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
