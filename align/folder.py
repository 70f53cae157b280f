"""Align a whole `RAW/<identity>/<file>` tree into `ALIGNED/<identity>/<stem>.jpg`: parallel, resumable,
every input file accounted for in ALIGNED/align_report.jsonl (see align.report)."""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
import time

import numpy as np

from align import report as report_io
from align.detector import DEFAULT_MIN_FACE_SIZE, DEFAULT_SCALE_FACTOR, DEFAULT_THRESHOLDS
from align.geometry import reference_landmarks
from align.image_io import ImageError, encode_image, read_image_rgb, write_atomic

TMP_DIR_NAME = ".align_tmp"  # inside ALIGNED so the final rename stays on one filesystem; removed at the end
# Settings that change the pixels of an output: a rerun must use the same ones (else --overwrite).
OUTPUT_SETTINGS = ("image_size", "image_format", "jpeg_quality", "min_face_size", "thresholds", "scale_factor")


class AlignError(Exception):
    """Fatal problem with the inputs or settings (the command exits non-zero)."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def list_inputs(input_dir) -> list:
    """Every file under input_dir, as paths relative to it (sorted, '/'-separated)."""
    found = []
    for root, dirs, files in os.walk(input_dir):
        dirs.sort()
        rel_root = os.path.relpath(root, input_dir)
        for name in sorted(files):
            rel = name if rel_root == "." else os.path.join(rel_root, name)
            found.append(rel.replace(os.sep, "/"))
    return found


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
              "landmarks": None, "box": None, "score": None, "faces": None, "input_size": None}
    record.update(extra)
    return record


# ---- per-file work (runs in worker processes) ------------------------------------------------------
_WORKER = {}


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
    rel, out_rel = task
    try:
        return _align_one(rel, out_rel, _WORKER["config"], _WORKER["detector"])
    except Exception as error:  # never let one file stop the run; the report says what happened
        return _record(rel, "failed", "error", f"{type(error).__name__}: {error}")


def _align_one(rel, out_rel, config, detector) -> dict:
    from align.photo import align_image

    try:
        image = read_image_rgb(os.path.join(config["input_dir"], rel))
    except ImageError as error:
        return _record(rel, "failed", error.reason, str(error))
    result = align_image(image, detector, tuple(config["image_size"]), config["fallback"])
    extra = {"input_size": list(result.input_size), "faces": result.faces}
    if result.status == "failed":
        return _record(rel, "failed", result.reason, result.detail, **extra)
    if result.box is not None:
        extra.update(box=_rounded(result.box), score=round(result.score, 5))
    data = encode_image(result.crop, config["image_format"], config["jpeg_quality"])
    write_atomic(os.path.join(config["output_dir"], out_rel), data, config["tmp_dir"])
    return _record(rel, result.status, result.reason, result.detail, output=out_rel,
                   landmarks=_rounded(result.landmarks), **extra)


def _rounded(values) -> list:
    return np.round(np.asarray(values, dtype=np.float64), 3).tolist()


# ---- the run ---------------------------------------------------------------------------------------
def align_folder(input_dir, output_dir, image_size=(112, 96), image_format="jpg", jpeg_quality=95,
                 min_face_size=DEFAULT_MIN_FACE_SIZE, thresholds=DEFAULT_THRESHOLDS,
                 scale_factor=DEFAULT_SCALE_FACTOR, fallback="none", workers=None, min_images=0,
                 retry_failed=False, overwrite=False, contact_sheet_size=50, progress=True, log=print) -> dict:
    """Align every image under input_dir/<identity>/ into output_dir; returns the summary dict.

    Resumable: files whose record says aligned/fallback (and whose output exists) or failed are
    skipped; `retry_failed` redoes failures; `overwrite` starts from scratch. Per-file problems are
    recorded, never raised; AlignError is raised for fatal problems (bad paths or settings).
    """
    started = time.time()
    config = _validate(input_dir, output_dir, image_size, image_format, jpeg_quality, min_face_size, thresholds,
                       scale_factor, fallback, workers, min_images)
    output_dir = config["output_dir"]
    report_path = os.path.join(output_dir, report_io.REPORT_NAME)
    _check_previous_run(output_dir, config, overwrite, report_path)

    inputs = list_inputs(config["input_dir"])
    if not inputs:
        raise AlignError(f"no files under {config['input_dir']}; expected <identity>/<image> files")
    outputs, planned = plan_outputs(inputs, image_format, min_images)
    previous = report_io.load_report(report_path)
    todo = [(rel, out) for rel, out in outputs.items() if not _finished(previous.get(rel), output_dir, config,
                                                                        retry_failed)]
    skipped = len(outputs) - len(todo)
    log(f"align: {len(inputs)} files under {config['input_dir']}; {skipped} already done, {len(todo)} to do, "
        f"{len(planned)} without an output (see report); {config['workers']} worker(s)")

    tmp_dir = config["tmp_dir"]
    shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of a killed run are incomplete by definition
    os.makedirs(tmp_dir)
    counts, timing = collections.Counter(), {}
    with report_io.ReportLog(report_path) as report_log:
        for record in planned.values():
            if previous.get(record["input"]) != record:
                report_log.append(record)
        for record in _run_tasks(todo, config, progress, counts, timing):
            report_log.append(record)
    shutil.rmtree(tmp_dir, ignore_errors=True)

    final = report_io.load_report(report_path)
    missing = [rel for rel in inputs if rel not in final]
    if missing:  # cannot happen unless a worker died; say so rather than write an incomplete report
        raise AlignError(f"{len(missing)} input files have no report record (first: {missing[0]}); rerun to resume")
    records = [final[rel] for rel in inputs]
    report_io.compact_report(report_path, records)
    summary = _summary(records, config, started, len(todo), skipped, timing)
    if contact_sheet_size:
        from align.contact_sheet import write_contact_sheet

        summary["contact_sheet"] = write_contact_sheet(
            records, output_dir, os.path.join(output_dir, report_io.CONTACT_SHEET_NAME),
            reference_landmarks(image_size), contact_sheet_size)
    report_io.write_json_atomic(os.path.join(output_dir, report_io.SUMMARY_NAME), summary)
    return summary


def _validate(input_dir, output_dir, image_size, image_format, jpeg_quality, min_face_size, thresholds,
              scale_factor, fallback, workers, min_images) -> dict:
    input_dir, output_dir = os.path.abspath(input_dir), os.path.abspath(output_dir)
    if not os.path.isdir(input_dir):
        raise AlignError(f"--input-dir {input_dir} is not a directory")
    if output_dir == input_dir or output_dir.startswith(input_dir + os.sep):
        raise AlignError(f"--output-dir {output_dir} is inside --input-dir {input_dir}; its crops would be read as input")
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
            "fallback": fallback, "workers": workers, "min_images": int(min_images)}


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


def _finished(record, output_dir, config, retry_failed) -> bool:
    if record is None:
        return False
    if record["status"] in ("aligned", "fallback"):
        return record["output"] is not None and os.path.exists(os.path.join(output_dir, record["output"]))
    if record["status"] == "failed":
        if retry_failed or record["reason"] == "error":
            return False
        return not (record["reason"] == "no face" and config["fallback"] == "center")
    return False  # excluded / unknown: decide again under this run's settings


def _run_tasks(todo, config, progress, counts, timing):
    """Yield one record per task, from worker processes (or in-process with one worker).

    Sets timing["first"] / timing["last"]: time.time() of the first and last record (start-up cost:
    spawning workers, importing TensorFlow, tracing the detector graphs)."""
    from tqdm import tqdm

    if not todo:  # nothing to do: do not start TensorFlow
        return
    workers = min(config["workers"], len(todo))
    threads = max(1, available_cores() // workers)
    bar = tqdm(total=len(todo), unit="img", disable=not progress or not todo, smoothing=0.05)
    pool = None
    try:
        if workers == 1:
            _setup_in_process(config, threads)
            results = map(_process, todo)
        else:
            # spawn, not fork: TensorFlow's thread pools do not survive a fork
            pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (config, threads))
            results = pool.imap_unordered(_process, todo, chunksize=8)
        for record in results:
            timing.setdefault("first", time.time())
            timing["last"] = time.time()
            counts[record["status"]] += 1
            bar.update(1)
            bar.set_postfix({k: counts[k] for k in ("aligned", "fallback", "failed") if counts[k]}, refresh=False)
            yield record
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()


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
