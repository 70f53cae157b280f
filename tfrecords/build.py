"""Build sharded TFRecords from an aligned face folder, a ``path label`` list or a RecordIO pack, streaming.

    python -m tfrecords.build --input-dir ALIGNED --output-dir SHARDS [--val-identities 0.02]
    python -m tfrecords.build --rec faces_emore/train.rec --output-dir SHARDS [--center-crop 112x96]

Writes ``SHARDS/train-00000-of-000NN.tfrecord`` (and ``val-*`` for held-out identities),
``manifest.json`` (last), ``val_pairs.txt`` and, when some inputs were left out, ``unreadable.txt``
(one line per input file, with the reason: unreadable, not an image, misplaced, or not backed by
the folder's align_report.jsonl). The steps live beside this driver: the sources (``sources.py``:
folder or list; ``rec_source.py``: an insightface/im2rec ``.rec`` pack; one interface), the plan
(``plan.py``: filters, shard assignment, fingerprint), the shard writer
(``shard_writer.py``), and here the resume logic, the manifest and the command line.

- Bytes stored as they are (``--resize`` / ``--center-crop`` re-encode the images they change); labels
  0..C-1 in sorted identity order (after filters).
- A rerun with the same inputs and options (even after kill -9) keeps complete shards and redoes
  the rest; different inputs/options need --overwrite.
"""

import argparse
import collections
import dataclasses
import fcntl
import functools
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fileio import (
    TextEncodingError,
    atomic_output,
    format_generic_pairs,
    image_size_type,
    printable_name,
    untrainable_reason,
    write_json_atomic,
    write_text_atomic,
)
from fileio.align_report import CONFIG_NAME as ALIGN_CONFIG_NAME
from fileio.align_report import aligned_image_size

from .features import shard_file_name
from .image_check import image_size_of, load_checked
from .manifest import FORMAT_VERSION, MANIFEST_NAME
from .pairs import make_pairs
from .plan import (
    BuildError,
    count_identities,
    describe_auto_val,
    plan_fingerprint,
    read_plan,
    select_identities,
    shard_counts,
    write_plan,
)
from .rec_source import RecSource
from .recordio import IdxFormatError
from .shard_writer import KILL_HOOK_ENV, KillHook, load_done, write_shard
from .sources import FolderSource, ListSource, SourceError, read_people_file

__all__ = ["KILL_HOOK_ENV", "BuildError", "BuildOptions", "build", "main"]

WORK_DIR = ".build"


@dataclasses.dataclass
class BuildOptions:
    """What to pack and how; the command line's options (see ``--help``)."""

    image_size: tuple | None = None     # (H, W); None: a pack's property file or align_config.json, else the first image
    resize: bool = False
    center_crop: tuple | None = None    # (H, W): keep the middle W columns of wider images (112x112 -> 112x96)
    num_shards: int | None = None
    shard_size_mb: float = 100.0
    workers: int | None = None          # None: CPU count
    min_images: int = 1
    max_images_per_class: int | None = None
    max_classes: int | None = None
    people: str | None = None           # file of identity names to keep
    val_identities: float | str = "auto"  # fraction (< 1) or count of held-out identities; "auto": plan.auto_val_count
    val_pairs: int = 6000
    seed: int = 0
    overwrite: bool = False


def build(input_dir=None, output_dir=None, *, list_file=None, rec=None, progress=True, log=print, **options):
    """Build (or resume, or confirm) a shard directory; returns the manifest dict.

    The input is an aligned folder (``input_dir``), a list file (``list_file``, paths relative to
    ``input_dir``) or a RecordIO pack (``rec``: its .rec file, with .idx and property beside it).
    ``options`` are the fields of BuildOptions (the command line's options). Raises BuildError /
    SourceError with a message naming the offending file.
    """
    opts = BuildOptions(**options)
    if output_dir is None or (input_dir is None and list_file is None and rec is None):
        raise BuildError("give --output-dir and one of --input-dir, --list or --rec")
    if rec is not None and (input_dir is not None or list_file is not None):
        raise BuildError("--rec reads a RecordIO pack on its own; do not combine it with --input-dir or --list")
    if opts.center_crop and opts.image_size and tuple(opts.image_size) != tuple(opts.center_crop):
        raise BuildError(f"--center-crop {opts.center_crop[0]}x{opts.center_crop[1]} sets the stored size; "
                         f"--image-size {opts.image_size[0]}x{opts.image_size[1]} disagrees: drop one of them")
    out = Path(output_dir)
    if rec is not None:
        source = RecSource(rec, log=log)
    else:
        source = ListSource(list_file, input_dir) if list_file else FolderSource(input_dir, log)
    if out.resolve() == Path(source.root).resolve():
        raise BuildError(f"{out}: the output directory must differ from the input directory")
    out.mkdir(parents=True, exist_ok=True)
    work = out / WORK_DIR
    work.mkdir(exist_ok=True)
    with open(work / "lock", "w") as lock:  # released on return, error or kill -9
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BuildError(f"{out}: another build is writing to this directory; wait for it to finish") from None
        manifest = _build_locked(source, out, work, opts, progress, log)
    shutil.rmtree(work, ignore_errors=True)   # complete: nothing to resume (see _build_locked)
    return manifest


def _build_locked(source, out, work, opts, progress, log):
    from tqdm import tqdm

    # 1) count identities (one folder / one line at a time) and apply the filters
    t0 = time.time()
    people = read_people_file(opts.people) if opts.people else None
    skipped_path = work / f"skipped-{os.getpid()}.tsv"  # streamed to disk: there may be one per image
    with open(skipped_path, "w", encoding="utf-8") as skipped_file:
        counts = count_identities(source, people,
                                  lambda path, why: skipped_file.write(f"{printable_name(path)}\t{why}\n"))
    if people is not None:
        missing = sorted(people - set(counts))
        if missing:
            log(f"warning: {len(missing)} names from {opts.people} have no images in the input "
                f"(e.g. {', '.join(missing[:3])})")
    train, val, capped = select_identities(counts, min_images=opts.min_images,
                                           max_images_per_class=opts.max_images_per_class,
                                           max_classes=opts.max_classes, val_identities=opts.val_identities,
                                           seed=opts.seed)
    if opts.val_identities == "auto":   # say what the default did; the manifest records the count it chose
        log(describe_auto_val(sum(1 for n in list(train) + list(val) if capped[n] >= 2), len(val)))
        opts = dataclasses.replace(opts, val_identities=float(len(val)))
    splits = {"train": train, **({"val": val} if val else {})}
    totals = {s: sum(capped[n] for n in names) for s, names in splits.items()}
    est_bytes = {s: sum(counts[n][1] * capped[n] / counts[n][0] for n in names) for s, names in splits.items()}
    shards = shard_counts(totals, est_bytes, opts.num_shards, opts.shard_size_mb)

    # 2) assign images to shards (plan files), fingerprint the plan
    plan_dir = work / f"plan-{os.getpid()}"
    contents = write_plan(source, splits, capped, shards, plan_dir, opts.seed)
    image_size = _choose_image_size(source, opts, plan_dir / "train-00000.tsv", log)
    if untrainable_reason(image_size):
        log(f"warning: these shards will not train: {untrainable_reason(image_size)}")
    options = {"format_version": FORMAT_VERSION, "source": source.description, "image_size": list(image_size),
               **({"center_crop": list(opts.center_crop)} if opts.center_crop else {}),
               "filters": {"min_images": opts.min_images, "max_images_per_class": opts.max_images_per_class,
                           "max_classes": opts.max_classes,
                           "people": str(Path(opts.people).resolve()) if opts.people else None},
               "val_identities": opts.val_identities, "val_pairs": opts.val_pairs, "seed": opts.seed,
               "shards": shards}
    fingerprint = plan_fingerprint(options, plan_dir, contents)
    log(f"planned {totals['train']} train images / {len(train)} classes in {shards['train']} shards"
        + (f", {totals['val']} val images / {len(val)} held-out identities in {shards['val']} shards" if val else "")
        + f" ({time.time() - t0:.1f}s)")
    if _already_built(out, fingerprint) and not opts.overwrite:
        shutil.rmtree(plan_dir)
        skipped_path.unlink()
        log(f"{out}: already built with these inputs and options; nothing to do")
        from .manifest import read_manifest
        return read_manifest(out)
    plan_dir, skipped_path = _take_over_work_dir(out, work, fingerprint, options, plan_dir, skipped_path,
                                                 opts.overwrite, log)

    # 3) write shards; complete ones from an earlier run are kept
    import tensorflow as tf  # noqa: F401  (imported here so its start-up time is not counted as writing)

    workers = opts.workers or os.cpu_count() or 1
    read = source.load_checked if isinstance(source, RecSource) else load_checked
    load = functools.partial(read, image_size=image_size, resize=opts.resize, center_crop=bool(opts.center_crop))
    kill_hook = KillHook()
    records, resumed, written_images, t1 = {}, 0, 0, time.time()
    with ThreadPoolExecutor(workers) as executor, \
            tqdm(total=sum(totals.values()), unit="img", disable=not progress, desc="tfrecords", smoothing=0.05) as bar:
        for split in splits:
            records[split] = []
            for j in range(shards[split]):
                name = shard_file_name(split, j, shards[split])
                done_path, final = work / "done" / f"{name}.json", out / name
                record = load_done(done_path, final, fingerprint)
                if record is None:
                    record, tmp = write_shard(plan_dir / f"{split}-{j:05d}.tsv", final, load, executor, bar,
                                              kill_hook, opts.seed, keep_paths=(split == "val"),
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
    manifest = assemble_manifest(out, opts, options, fingerprint, splits, records, skipped_path, image_size)
    write_json_atomic(out / MANIFEST_NAME, manifest)
    # The work folder (plans with absolute paths, done records) only served resuming: the manifest
    # now says everything, so build() removes it once the lock is released.
    rate = written_images / elapsed if elapsed > 0 else float("nan")
    log(f"wrote {out}: {manifest['num_images']} train images, {manifest['num_classes']} classes, "
        f"{len(records['train'])} train shards" + (f", {manifest['splits']['val']['num_images']} val images, "
                                                    f"{manifest['val_pairs_count']} val pairs" if val else "")
        + f"; {written_images} images read in {elapsed:.1f}s ({rate:.0f} img/s)")
    if manifest.get("empty_classes"):   # every image of these failed: a class the model can never learn
        empty = manifest["empty_classes"]
        log(f"WARNING: {len(empty)} class(es) have no image ({', '.join(empty[:10])}{', ...' if len(empty) > 10 else ''}): "
            f"every input listed for them is in {out / 'unreadable.txt'}; fix those inputs or remove the class")
    bad = manifest["unreadable"]["count"]
    if bad:
        log(f"WARNING: {bad} input(s) could not be used; they are listed with the reason in "
            f"{out / 'unreadable.txt'}")
    return manifest


def _already_built(out, fingerprint):
    """True when out/manifest.json records a finished build of exactly this plan."""
    if not (out / MANIFEST_NAME).is_file():
        return False
    with open(out / MANIFEST_NAME, encoding="utf-8") as f:
        return json.load(f).get("build_fingerprint") == fingerprint


def _take_over_work_dir(out, work, fingerprint, options, plan_dir, skipped_path, overwrite, log):
    """Make ``out`` hold only this build's outputs and ``work`` only its plan: refuse (or, with
    --overwrite, remove) shards of another build, drop temp files of a killed run and earlier plans.
    Returns the plan folder and skip list under their final names."""
    state_path = work / "state.json"
    previous = None
    if (out / MANIFEST_NAME).is_file():
        with open(out / MANIFEST_NAME, encoding="utf-8") as f:
            previous = json.load(f).get("build_fingerprint")
    elif state_path.is_file():
        with open(state_path, encoding="utf-8") as f:
            previous = json.load(f).get("fingerprint")
    leftovers = [p.name for p in out.iterdir() if _is_output_file(p.name)]
    if overwrite and leftovers:   # even the same plan: --overwrite is how a corrupt shard is rebuilt
        log(f"{out}: removing the previous build (--overwrite)")
        for name in leftovers:
            (out / name).unlink()
        if (work / "done").exists():
            shutil.rmtree(work / "done")
    elif previous != fingerprint and (previous is not None or leftovers):
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
        if ".tfrecord.tmp-" in path.name or path.name.endswith(".txt.tmp") or ".txt.tmp-" in path.name:
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
    (work / "done").mkdir(exist_ok=True)
    return plan_dir, skipped_path


def _is_output_file(name):
    """Names this builder writes in the output directory (and removes on --overwrite)."""
    return (name in (MANIFEST_NAME, "val_pairs.txt", "unreadable.txt")
            or (name.endswith(".tfrecord") and name.split("-")[0] in ("train", "val")))


def _choose_image_size(source, opts, plan_file, log):
    """(H, W) to store, from the first of: --center-crop / --image-size; a pack's property file; an
    aligned folder's align_config.json (what align/align_lfw.py made), checked against the first image;
    else the first image's size, a guess the log calls one. Logs which it was."""
    if opts.center_crop or opts.image_size:
        return tuple(int(v) for v in opts.center_crop or opts.image_size)
    if isinstance(source, RecSource):
        if source.declared_image_size:
            height, width = source.declared_image_size
            log(f"image size {height}x{width} (HxW), from {source.property_file}")
            return int(height), int(width)
        return tuple(source.first_image_size(log))
    if isinstance(source, FolderSource):
        config = Path(source.root) / ALIGN_CONFIG_NAME
        try:
            size = aligned_image_size(source.root)
        except ValueError as e:
            raise BuildError(str(e)) from None
        if size is not None:
            first, first_size = _first_image_size(plan_file)
            if first_size not in (None, size):
                what = (f"{config} says the crops are {size[0]}x{size[1]} (HxW), but {first} is "
                        f"{first_size[0]}x{first_size[1]}")
                if not opts.resize:
                    raise BuildError(f"{what}: align again into a new folder, pass --resize to store every crop at "
                                     f"{size[0]}x{size[1]}, or --image-size {first_size[0]}x{first_size[1]} to store "
                                     "that size")
                log(f"warning: {what}; --resize resizes such crops")
            log(f"image size {size[0]}x{size[1]} (HxW), from {config}")
            return size
        log(f"{source.root} has no {ALIGN_CONFIG_NAME} naming the crop size (align/align_lfw.py writes one), so "
            "the image size is guessed from the first image")
    first, size = _first_image_size(plan_file)
    if size is None:
        raise BuildError(f"cannot infer the image size: no readable image in the first shard plan ({plan_file}); "
                         "pass --image-size HxW")
    log(f"image size {size[0]}x{size[1]} (HxW), taken from {first}; set --image-size to enforce another")
    return size


def _first_image_size(plan_file):
    """(path, (H, W)) of the first readable image of a shard plan; (None, None) when none reads."""
    for _, _, _, absolute in read_plan(plan_file):
        try:
            return absolute, image_size_of(absolute)
        except (OSError, ValueError):
            continue
    return None, None


def assemble_manifest(out, opts, options, fingerprint, splits, records, skipped_path, image_size):
    """The manifest dict of a finished build; writes val_pairs.txt and unreadable.txt beside it."""
    unreadable = []  # per-shard failures (bounded by shard size); planning-time skips stream from skipped_path
    manifest = {"format_version": FORMAT_VERSION, "image_size": list(image_size),
                "num_classes": len(splits["train"]), "labels": list(splits["train"]),
                "num_images": 0, "splits": {}}
    for split, names in splits.items():
        class_counts = [0] * len(names)
        formats = collections.Counter()
        resized = center_cropped = 0
        for r in records[split]:
            for label, n in r["class_counts"].items():
                class_counts[int(label)] += n
            formats.update(r["formats"])
            resized += r["resized"]
            center_cropped += r.get("center_cropped", 0)
            unreadable.extend(r["unreadable"])
        entry = {"num_images": sum(r["num_images"] for r in records[split]), "num_classes": len(names),
                 "formats": dict(formats), "resized": resized, "center_cropped": center_cropped,
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
        pairs = make_pairs(by_identity, opts.val_pairs, opts.seed)
        if pairs:
            write_text_atomic(out / "val_pairs.txt", format_generic_pairs(pairs))
            manifest["val_pairs"] = "val_pairs.txt"
            same = sum(p[2] for p in pairs)
            manifest["val_pairs_count"] = {"same": same, "different": len(pairs) - same}
    count = 0
    with atomic_output(out / "unreadable.txt") as tmp:  # noqa: SIM117 (the output, then its inputs)
        with open(tmp, "w", encoding="utf-8") as f, open(skipped_path, encoding="utf-8") as skipped:
            f.write("# path<TAB>reason  (inputs left out of the shards)\n")
            for line in skipped:
                f.write(line)
                count += 1
            for path, why in unreadable:
                f.write(f"{path}\t{why}\n")
                count += 1
    if not count:   # nothing left out: no file
        (out / "unreadable.txt").unlink()
    manifest["unreadable"] = {"count": count, "file": "unreadable.txt" if count else None}
    if opts.center_crop:
        manifest["center_crop"] = list(opts.center_crop)
    manifest.update({"source": options["source"], "filters": options["filters"], "seed": opts.seed,
                     "val_identities": options["val_identities"], "build_fingerprint": fingerprint,
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return manifest


def _parse_val(text):
    """A fraction in [0, 1), a whole count written as one ("1.0" is refused: one identity, or all?), or auto."""
    if text.strip() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    whole = text.strip().isdigit()
    if not math.isfinite(value) or value < 0 or (value >= 1 and not whole):
        raise argparse.ArgumentTypeError(f"{text!r}: a fraction in [0, 1) (0.02 = 2% of the identities) or a "
                                         "whole count written without a decimal point (5 = five identities)")
    return value   # a float either way, as before: the build fingerprint records it


def _positive_finite(text):
    """A float > 0 that is finite (nan and inf compare false to every bound, so they are refused by name)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number > 0")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m tfrecords.build",
        description="Pack an aligned face folder (ALIGNED/<identity>/<image>.jpg|png), a 'path label' "
                    "list or an insightface/im2rec RecordIO pack (train.rec + train.idx + property) into sharded "
                    "TFRecords + manifest.json, streaming (memory flat in dataset size). "
                    "Only subdirectories of --input-dir are identities; top-level files (align_report.jsonl, "
                    "align_summary.json, contact_sheet.png, ...) are ignored as inputs, but with an "
                    "align_report.jsonl only the crops it backs (aligned, source unchanged) are packed. Every "
                    "input left out is listed with its reason in unreadable.txt. A rerun resumes an "
                    "interrupted build.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_argument_group("input")
    src.add_argument("--input-dir", help="aligned folder; with --list, the root for relative list paths")
    src.add_argument("--list", dest="list_file", help="text file of 'path label' lines instead of a folder")
    src.add_argument("--rec", metavar="DIR/train.rec",
                     help="a RecordIO pack instead of a folder (insightface's faces_emore, faces_webface_112x112, "
                          "glint360k, ...): the .idx and property files beside it are read too; identities are "
                          "named by their zero-padded labels; bad records are listed by key in unreadable.txt")
    src.add_argument("--output-dir", required=True, help="shard directory to create (or resume)")
    src.add_argument("--image-size", type=image_size_type(trainable=False), default=None,
                     help="expected HxW, e.g. 112x96 (default: a pack's property file, an aligned folder's "
                          "align_config.json, else the size of the first image)")
    src.add_argument("--resize", action="store_true",
                     help="resize (and re-encode) images of another size instead of stopping with an error")
    src.add_argument("--center-crop", type=image_size_type(trainable=False), default=None, metavar="HxW",
                     help="store the middle W columns of images H high and wider (re-encoded: JPEG quality 95, "
                          "PNG lossless); 112x96 turns insightface's 112x112 crops into exactly our 112x96 "
                          "alignment, whose template is the 112x112 one shifted 8 px (no resampling)")
    flt = p.add_argument_group("identity filters (applied in this order)")
    flt.add_argument("--people", help="only these identities (LFW people file such as peopleDevTrain.txt, "
                                      "or one name per line)")
    flt.add_argument("--min-images", type=int, default=1, help="drop identities with fewer images")
    flt.add_argument("--max-classes", type=int, default=None,
                     help="keep only the first K identities in sorted order (train + val)")
    flt.add_argument("--max-images-per-class", type=int, default=None,
                     help="keep at most K images per identity (first in name order); e.g. "
                          "--min-images 10 --max-images-per-class 20 for arcface-pytorch's balanced set")
    flt.add_argument("--val-identities", type=_parse_val, default="auto",
                     help="hold out whole identities for validation: a fraction (0.02), a count (50), 0 (none), or "
                          "auto: 5%% of the identities with >= 2 images (5 to 200) when there are >= 50 of them, "
                          "else none (said either way); writes val-* shards and val_pairs.txt")
    flt.add_argument("--val-pairs", type=int, default=6000, help="verification pairs to write (half same)")
    out = p.add_argument_group("output")
    out.add_argument("--num-shards", type=int, default=None, help="train shards (default: from --shard-size-mb)")
    out.add_argument("--shard-size-mb", type=_positive_finite, default=100.0, help="target shard size")
    out.add_argument("--workers", type=int, default=None, help="reader/decoder threads (default: CPU count)")
    out.add_argument("--seed", type=int, default=0, help="seed for held-out identities, shard mixing and pairs")
    out.add_argument("--overwrite", action="store_true",
                     help="replace a shard directory built from other inputs or options")
    out.add_argument("--strict", action="store_true",
                     help="exit with status 2 if any input was unreadable (a file, or a pack's record)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.rec is not None and (args.input_dir is not None or args.list_file is not None):
        p.error("--rec reads a RecordIO pack on its own; drop --input-dir/--list")
    if args.rec is None and args.input_dir is None and args.list_file is None:
        p.error("give --input-dir ALIGNED, --list FILE or --rec DIR/train.rec")
    for name in ("num_shards", "workers", "max_classes", "max_images_per_class"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()
    try:
        options = {f.name: getattr(args, f.name) for f in dataclasses.fields(BuildOptions) if hasattr(args, f.name)}
        manifest = build(args.input_dir, args.output_dir, list_file=args.list_file, rec=args.rec,
                         progress=not args.no_progress, **options)
    except (BuildError, SourceError, TextEncodingError, IdxFormatError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.strict and manifest["unreadable"]["count"]:
        print(f"error: {manifest['unreadable']['count']} input(s) could not be used (--strict); the list with "
              f"reasons: {Path(args.output_dir) / 'unreadable.txt'}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
