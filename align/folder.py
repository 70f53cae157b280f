"""Align a whole `RAW/<identity>/<file>` tree into `ALIGNED/<identity>/<stem>.jpg`: parallel, resumable,
every input file accounted for in ALIGNED/align_report.jsonl (see align.report)."""

from __future__ import annotations

import collections
import ctypes
import os
import shutil
import signal
import sys
import time

import numpy as np

from align import report as report_io
from align.detector import DEFAULT_MIN_FACE_SIZE, DEFAULT_SCALE_FACTOR, DEFAULT_THRESHOLDS
from align.geometry import reference_landmarks
from align.image_io import DEFAULT_MAX_MEGAPIXELS, ImageError, encode_image, read_image_rgb, write_atomic
from align.workers import WorkerStartError, run_pool
from fileio import DISK_FULL_ERRNOS

TMP_DIR_NAME = ".align_tmp"  # inside ALIGNED so the final rename stays on one filesystem; removed at the end
# Settings that change the pixels of an output: a rerun must use the same ones (else --overwrite).
OUTPUT_SETTINGS = ("image_size", "image_format", "jpeg_quality", "min_face_size", "thresholds", "scale_factor")


class AlignError(Exception):
    """Fatal problem with the inputs, settings or output disk (the command exits non-zero)."""


def disk_full_error(error: OSError, fallback_path) -> AlignError:
    """One line for a write that failed for lack of space: the file, and that a rerun resumes."""
    return AlignError(f"cannot write {error.filename or fallback_path}: {error.strerror or error}; free space "
                      "there (or lift the file-size limit), then rerun the same command: it resumes")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def list_inputs(input_dir) -> list:
    """Every file under input_dir, as paths relative to it (sorted, '/'-separated).

    Linked folders are followed, as the shard builder follows them (a linked identity folder is an
    identity); a link back to a folder it is inside (a loop) is not, so the walk always ends.
    """
    found = []
    for root, dirs, files in os.walk(input_dir, followlinks=True):
        real_root = os.path.realpath(root)
        dirs[:] = sorted(d for d in dirs if not _is_loop(os.path.join(root, d), real_root))
        rel_root = os.path.relpath(root, input_dir)
        for name in sorted(files):
            rel = name if rel_root == "." else os.path.join(rel_root, name)
            found.append(rel.replace(os.sep, "/"))
    return found


def _is_loop(path, real_parent) -> bool:
    real = os.path.realpath(path)
    return os.path.islink(path) and (real_parent == real or real_parent.startswith(real.rstrip(os.sep) + os.sep))


def plan_outputs(inputs: list, image_format: str, min_images: int):
    """input -> output path (or a record for inputs that get none: wrong place, name clash, --min-images)."""
    per_identity = collections.Counter(rel.split("/")[0] for rel in inputs if rel.count("/") == 1)
    outputs, records, claimed = {}, {}, {}
    for rel in inputs:
        parts = rel.split("/")
        if len(parts) != 2:
            where = "directly in the input dir" if len(parts) == 1 else "nested below an identity folder"
            records[rel] = _record(rel, "failed", "not in an identity folder",
                                   f"{rel} is {where}; expected <identity>/<file>")
            continue
        identity, name = parts
        if per_identity[identity] < min_images:
            records[rel] = _record(rel, "excluded", "fewer images than --min-images",
                                   f"identity {identity} has {per_identity[identity]} files < --min-images {min_images}")
            continue
        out = f"{identity}/{os.path.splitext(name)[0]}.{image_format}"
        if out in claimed:
            records[rel] = _record(rel, "failed", "output name clash",
                                   f"{rel} and {claimed[out]} would both be written to {out}; rename one")
            continue
        claimed[out] = rel
        outputs[rel] = out
    return outputs, records


def _record(rel, status, reason=None, detail=None, output=None, **extra):
    record = {"input": rel, "output": output, "status": status, "reason": reason, "detail": detail,
              "landmarks": None, "box": None, "score": None, "faces": None, "input_size": None,
              "source_size": None, "source_mtime_ns": None}
    record.update(extra)
    return record


# ---- per-file work (runs in worker processes) ------------------------------------------------------
_WORKER = {}


class _OutputDiskFull(Exception):
    """Writing a crop failed for lack of space: the run must stop, not record every file as failed."""


def _init_worker(config: dict, intra_op_threads: int) -> None:
    """Worker-process setup: die with the parent, leave Ctrl-C to it, pin TF threads, build the detector."""
    if sys.platform.startswith("linux"):
        try:  # a kill -9 of the parent takes the workers with it (PR_SET_PDEATHSIG = 1)
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _setup_in_process(config, intra_op_threads)


def _setup_in_process(config: dict, intra_op_threads: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from align.detector import FaceDetector, configure_threads

    configure_threads(intra_op_threads, 1)
    key = (config["min_face_size"], tuple(config["thresholds"]), config["scale_factor"])
    if _WORKER.get("detector_key") != key:  # reuse the traced graphs across runs in one process
        _WORKER["detector"] = FaceDetector(*key)
        _WORKER["detector_key"] = key
    _WORKER["config"] = config


def _process(task) -> dict:
    """One file's record, or {"fatal": message} when the output disk is full (the run stops)."""
    rel, out_rel = task
    try:
        return _align_one(rel, out_rel, _WORKER["config"], _WORKER["detector"])
    except _OutputDiskFull as error:
        return {"fatal": str(error)}
    except Exception as error:  # never let one file stop the run; the report says what happened
        return _record(rel, "failed", "error", f"{type(error).__name__}: {error}")


def _worker_died(task, how) -> dict:
    rel, _ = task
    return _record(rel, "failed", "worker died",
                   f"the worker process aligning this file died ({how}); the kernel's out-of-memory killer does "
                   "this: lower --workers or --max-megapixels, then rerun with --retry-failed")


def _align_one(rel, out_rel, config, detector) -> dict:
    from align.photo import align_image

    path = os.path.join(config["input_dir"], rel)
    # Before reading: a later replacement must look changed (its bytes would not be these).
    stamp = report_io.source_stamp(path, content_hash=True) or {}
    try:
        image, exif_orientation = read_image_rgb(path, config["max_megapixels"], with_exif_orientation=True)
    except ImageError as error:
        return _record(rel, "failed", error.reason, str(error), input_size=error.input_size, **stamp)
    result = align_image(image, detector, tuple(config["image_size"]), config["fallback"], exif_orientation)
    extra = {"input_size": list(result.input_size), "faces": result.faces, "orientation": result.rotation,
             "exif_orientation": exif_orientation, **stamp}
    if result.status == "failed":
        return _record(rel, "failed", result.reason, result.detail, **extra)
    if result.box is not None:
        extra.update(box=_rounded(result.box), score=round(result.score, 5))
    data = encode_image(result.crop, config["image_format"], config["jpeg_quality"])
    out_path = os.path.join(config["output_dir"], out_rel)
    try:
        write_atomic(out_path, data, config["tmp_dir"])
    except OSError as error:
        if error.errno in DISK_FULL_ERRNOS:
            raise _OutputDiskFull(str(disk_full_error(error, out_path))) from None
        raise
    return _record(rel, result.status, result.reason, result.detail, output=out_rel,
                   landmarks=_rounded(result.landmarks), **extra)


def _rounded(values) -> list:
    return np.round(np.asarray(values, dtype=np.float64), 3).tolist()


# ---- the run ---------------------------------------------------------------------------------------
def align_folder(input_dir, output_dir, image_size=(112, 96), image_format="jpg", jpeg_quality=95,
                 min_face_size=DEFAULT_MIN_FACE_SIZE, thresholds=DEFAULT_THRESHOLDS,
                 scale_factor=DEFAULT_SCALE_FACTOR, fallback="none", workers=None, min_images=0,
                 retry_failed=False, overwrite=False, contact_sheet_size=50, progress=True, log=print,
                 max_megapixels=DEFAULT_MAX_MEGAPIXELS) -> dict:
    """Align every image under input_dir/<identity>/ into output_dir; returns the summary dict.

    Resumable: files whose record says aligned/fallback (and whose output exists) or failed are
    skipped, unless the source's size or modification time changed since (then it is re-aligned);
    `retry_failed` redoes failures; `overwrite` starts from scratch. Crops that no record backs any
    more (source removed, or replaced by one that fails) are removed. Per-file problems are recorded,
    never raised; AlignError is raised for fatal problems (bad paths or settings, a full disk, a
    worker that cannot start).
    """
    started = time.time()
    config = _validate(input_dir, output_dir, image_size, image_format, jpeg_quality, min_face_size, thresholds,
                       scale_factor, fallback, workers, min_images, max_megapixels)
    output_dir = config["output_dir"]
    report_path = os.path.join(output_dir, report_io.REPORT_NAME)
    try:
        return _align_folder(config, report_path, overwrite, retry_failed, contact_sheet_size, progress, log,
                             started)
    except OSError as error:
        if error.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(error, output_dir) from None
        raise


def _align_folder(config, report_path, overwrite, retry_failed, contact_sheet_size, progress, log, started):
    output_dir = config["output_dir"]
    _check_previous_run(output_dir, config, overwrite, report_path)

    inputs = list_inputs(config["input_dir"])
    if not inputs:
        raise AlignError(f"no files under {config['input_dir']}; expected <identity>/<image> files")
    outputs, planned = plan_outputs(inputs, config["image_format"], config["min_images"])
    previous = report_io.load_report(report_path)
    stamps = {rel: report_io.source_stamp(os.path.join(config["input_dir"], rel)) for rel in outputs}
    todo = [(rel, out) for rel, out in outputs.items()
            if not _finished(previous.get(rel), output_dir, config, retry_failed, stamps[rel])]
    skipped = len(outputs) - len(todo)
    changed = sum(1 for rel, _ in todo if previous.get(rel, {}).get("status") in report_io.STATUSES)
    log(f"align: {len(inputs)} files under {config['input_dir']}; {skipped} already done, {len(todo)} to do"
        + (f" ({changed} of them changed since, or retried)" if changed else "")
        + f", {len(planned)} without an output (see report); {config['workers']} worker(s)")

    tmp_dir = config["tmp_dir"]
    shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of a killed run are incomplete by definition
    os.makedirs(tmp_dir)
    counts, timing = collections.Counter(), {}
    with report_io.ReportLog(report_path) as report_log:
        for record in planned.values():
            if previous.get(record["input"]) != record:
                report_log.append(record)
        for record in _run_tasks(todo, config, progress, counts, timing):
            if "fatal" in record:
                raise AlignError(record["fatal"])
            report_log.append(record)
    shutil.rmtree(tmp_dir, ignore_errors=True)

    final = report_io.load_report(report_path)
    missing = [rel for rel in inputs if rel not in final]
    if missing:  # every task yields a record (a dead worker's too); say so rather than write an incomplete report
        raise AlignError(f"{len(missing)} input files have no report record (first: {missing[0]}); rerun to resume")
    records = [final[rel] for rel in inputs]
    redone = {rel for rel, _ in todo}
    for record in records:
        # A kept record whose source is unchanged but whose stamp is not today's (the source was copied or
        # touched: _finished already matched its hash) gets today's size and time, so the next run compares
        # those only; one made before stamps or hashes existed is hashed once here.
        now = stamps.get(record["input"])
        if record["input"] in redone or not now:
            continue
        if not record.get("source_sha256"):
            record.update(report_io.source_stamp(os.path.join(config["input_dir"], record["input"]),
                                                 content_hash=True) or {})
        elif report_io.stamp_of(record) != now:
            record.update(now)
    report_io.compact_report(report_path, records)
    removed = _remove_stale_crops(output_dir, {r["input"]: r for r in records}, previous, outputs)
    if removed:
        log(f"align: removed {removed} crop(s) that no record backs any more (source removed, or replaced "
            "by one that did not align, or now excluded)")
    summary = _summary(records, config, started, len(todo), skipped, timing)
    summary["removed_crops"] = removed
    if contact_sheet_size:
        from align.contact_sheet import write_contact_sheet

        summary["contact_sheet"] = write_contact_sheet(
            records, output_dir, os.path.join(output_dir, report_io.CONTACT_SHEET_NAME),
            reference_landmarks(tuple(config["image_size"])), contact_sheet_size)
    report_io.write_json_atomic(os.path.join(output_dir, report_io.SUMMARY_NAME), summary)
    return summary


def _remove_stale_crops(output_dir, final, previous, outputs) -> int:
    """Delete crops that no final record writes: the outputs of earlier records whose source is gone or
    whose new record has no output, and planned outputs of inputs that failed. Returns how many."""
    kept = {r["output"] for r in final.values() if r["output"]}
    candidates = {r.get("output") for rel, r in previous.items() if rel not in final or not final[rel]["output"]}
    candidates |= {out for rel, out in outputs.items() if not final[rel]["output"]}
    removed = 0
    for out in sorted(c for c in candidates if c and c not in kept):
        try:
            os.remove(os.path.join(output_dir, out))
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _validate(input_dir, output_dir, image_size, image_format, jpeg_quality, min_face_size, thresholds,
              scale_factor, fallback, workers, min_images, max_megapixels) -> dict:
    input_dir, output_dir = os.path.abspath(input_dir), os.path.abspath(output_dir)
    if not os.path.isdir(input_dir):
        raise AlignError(f"--input-dir {input_dir} is not a directory")
    # Compared after resolving links: an input given through a link (or an output inside a linked
    # folder) is the same folder, and crops written inside it would be read back as input next run.
    real_in, real_out = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if real_out == real_in or real_out.startswith(real_in.rstrip(os.sep) + os.sep):
        raise AlignError(f"--output-dir {output_dir} is inside --input-dir {input_dir} (links resolved: {real_out} "
                         f"inside {real_in}); its crops would be read as input: choose an output folder outside it")
    image_size = tuple(int(v) for v in image_size)
    reference_landmarks(image_size)  # raises ValueError for unsupported sizes
    if image_format not in ("jpg", "png"):
        raise AlignError(f"--format must be jpg or png, got {image_format!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise AlignError(f"--jpeg-quality must be in 1..100, got {jpeg_quality}")
    if fallback not in ("none", "center"):
        raise AlignError(f"--fallback must be none or center, got {fallback!r}")
    workers = available_cores() if workers in (None, 0) else int(workers)
    if workers < 1:
        raise AlignError(f"--workers must be >= 1, got {workers}")
    if int(min_images) < 0:
        raise AlignError(f"--min-images must be >= 0, got {min_images}")
    if not float(max_megapixels) > 0:
        raise AlignError(f"--max-megapixels must be > 0, got {max_megapixels}")
    thresholds = [float(t) for t in thresholds]
    try:  # the detector's own checks, before any long work
        from align.detector import FaceDetector

        FaceDetector.validate_settings(min_face_size, thresholds, scale_factor)
    except ValueError as error:
        raise AlignError(str(error)) from error
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise AlignError(f"cannot create --output-dir {output_dir}: {error}") from error
    if not os.access(output_dir, os.W_OK):
        raise AlignError(f"--output-dir {output_dir} is not writable")
    return {"input_dir": input_dir, "output_dir": output_dir, "tmp_dir": os.path.join(output_dir, TMP_DIR_NAME),
            "image_size": list(image_size), "image_format": image_format, "jpeg_quality": int(jpeg_quality),
            "min_face_size": int(min_face_size), "thresholds": thresholds, "scale_factor": float(scale_factor),
            "fallback": fallback, "workers": workers, "min_images": int(min_images),
            "max_megapixels": float(max_megapixels)}


def _check_previous_run(output_dir, config, overwrite, report_path) -> None:
    config_path = os.path.join(output_dir, report_io.CONFIG_NAME)
    if overwrite:
        for name in (report_io.REPORT_NAME, report_io.SUMMARY_NAME, report_io.CONFIG_NAME):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    elif os.path.exists(config_path):
        import json

        with open(config_path, encoding="utf-8") as handle:
            before = json.load(handle)
        changed = [f"{key}: {before.get(key)} -> {config[key]}" for key in OUTPUT_SETTINGS
                   if before.get(key) != config[key]]
        if changed:
            raise AlignError(f"{output_dir} was aligned with other settings ({'; '.join(changed)}); "
                             f"use another --output-dir, or --overwrite to redo everything")
        if before.get("input_dir") != config["input_dir"]:
            raise AlignError(f"{output_dir} holds crops of {before.get('input_dir')}, not {config['input_dir']}; "
                             f"use another --output-dir, or --overwrite")
    elif os.path.exists(report_path):
        raise AlignError(f"{report_path} exists without {config_path}; pass --overwrite to start again")
    report_io.write_json_atomic(config_path, {k: v for k, v in config.items() if k not in ("tmp_dir", "workers")})


def _finished(record, output_dir, config, retry_failed, stamp) -> bool:
    """True when ``record`` (the last one for this input, or None) needs no redo; ``stamp``: the
    source's stamp now. A source replaced since its record was made is redone."""
    if record is None or not report_io.source_unchanged(record, stamp, output_dir,
                                                         os.path.join(config["input_dir"], record["input"])):
        return False
    if record["status"] in ("aligned", "fallback"):
        return record["output"] is not None and os.path.exists(os.path.join(output_dir, record["output"]))
    if record["status"] == "failed":
        if retry_failed or record["reason"] == "error":
            return False
        if record["reason"] == "too many pixels":  # redone once --max-megapixels admits it
            height, width = record["input_size"] or (0, 0)
            return height * width > config["max_megapixels"] * 1e6
        return not (record["reason"] == "no face" and config["fallback"] == "center")
    return False  # excluded / unknown: decide again under this run's settings


def _run_tasks(todo, config, progress, counts, timing):
    """Yield one record per task, from worker processes (or in-process with one worker).

    A worker that dies (kill -9, the out-of-memory killer) yields a `worker died` record for the
    file it held and is replaced (align/workers.py); a worker that cannot start is an AlignError.
    Sets timing["first"] / timing["last"]: time.time() of the first and last record (start-up cost:
    spawning workers, importing TensorFlow, tracing the detector graphs)."""
    from tqdm import tqdm

    if not todo:  # nothing to do: do not start TensorFlow
        return
    workers = min(config["workers"], len(todo))
    threads = max(1, available_cores() // workers)
    bar = tqdm(total=len(todo), unit="img", disable=not progress or not todo, smoothing=0.05)
    results = None
    try:
        if workers == 1:
            _setup_in_process(config, threads)
            results = map(_process, todo)
        else:
            results = run_pool(todo, workers, _init_worker, (config, threads), _process, _worker_died)
        for record in results:
            timing.setdefault("first", time.time())
            timing["last"] = time.time()
            if "fatal" not in record:
                counts[record["status"]] += 1
            bar.update(1)
            bar.set_postfix({k: counts[k] for k in ("aligned", "fallback", "failed") if counts[k]}, refresh=False)
            yield record
    except WorkerStartError as error:
        raise AlignError(f"a worker process could not start ({error}); rerun with --workers 1 to see the "
                         "problem in this process") from None
    finally:
        bar.close()
        if hasattr(results, "close"):
            results.close()  # stopped early (an error, Ctrl-C): the pool kills its workers


def _summary(records, config, started, processed, skipped, timing) -> dict:
    counts = collections.Counter(r["status"] for r in records)
    reasons = collections.Counter(r["reason"] for r in records if r["status"] != "aligned")
    searched = sum(1 for r in records if r["status"] in ("aligned", "fallback")
                   or (r["status"] == "failed" and r["reason"] == "no face"))
    wall = time.time() - started
    return {
        "input_dir": config["input_dir"], "output_dir": config["output_dir"], "files": len(records),
        "aligned": counts["aligned"], "fallback": counts["fallback"], "failed": counts["failed"],
        "excluded": counts["excluded"], "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "detection_rate": counts["aligned"] / searched if searched else None,
        "processed_this_run": processed, "skipped_already_done": skipped, "wall_time_s": round(wall, 2),
        "images_per_s": round(processed / wall, 2) if wall > 0 else None, "workers": config["workers"],
        # after the first result, i.e. without worker start-up (what a long run converges to)
        "startup_s": round(timing["first"] - started, 2) if "first" in timing else None,
        "steady_images_per_s": round((processed - 1) / (timing["last"] - timing["first"]), 2)
        if processed > 1 and timing["last"] > timing["first"] else None,
        "settings": {k: config[k] for k in OUTPUT_SETTINGS + ("fallback", "min_images")},
    }


def format_summary(summary: dict) -> str:
    """The printed end-of-run summary (one screenful)."""
    rate = summary["detection_rate"]
    lines = [
        f"files: {summary['files']}  aligned: {summary['aligned']}  fallback: {summary['fallback']}  "
        f"failed: {summary['failed']}" + (f"  excluded: {summary['excluded']}" if summary["excluded"] else ""),
        f"detection rate: {rate:.2%} of decodable images large enough to search" if rate is not None
        else "detection rate: n/a (no image could be searched)",
        f"wall time: {summary['wall_time_s']:.1f} s for {summary['processed_this_run']} images processed "
        f"({summary['images_per_s']} img/s, {summary['workers']} workers"
        + (f"; {summary['steady_images_per_s']} img/s after {summary['startup_s']} s start-up"
           if summary["steady_images_per_s"] else "")
        + f"); {summary['skipped_already_done']} already done",
    ]
    for reason, count in summary["reasons"].items():
        lines.append(f"  {count:6d}  {reason}")
    lines.append(f"report: {os.path.join(summary['output_dir'], report_io.REPORT_NAME)}")
    if summary.get("contact_sheet"):
        lines.append(f"contact sheet: {summary['contact_sheet']}")
    return "\n".join(lines)
