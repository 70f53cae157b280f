"""The aligned folder's report, as both stages read it: align resumes from it, the builder packs by it.

``ALIGNED/align_report.jsonl`` holds one JSON record per input file (the fields are listed in
align/report.py, which writes it). ``ALIGNED/align_config.json`` names the input folder. Each record
carries its source's stamp when it was read (``source_size``, ``source_mtime_ns``, ``source_sha256``),
so a source that was replaced or removed since is noticed by both stages, while one that was only
copied, restored or touched (a new modification time, the same bytes) is not re-aligned.
"""

import json
import os
from pathlib import Path

from fileio.hashing import sha256_of_file

REPORT_NAME = "align_report.jsonl"
SUMMARY_NAME = "align_summary.json"
CONFIG_NAME = "align_config.json"
CONTACT_SHEET_NAME = "contact_sheet.png"
PACKED_STATUSES = ("aligned", "fallback")   # the records whose crop is a training image


def load_report(path) -> dict:
    """input path -> last record; ignores a truncated (unparsable) last line left by a kill."""
    records = {}
    if not os.path.exists(path):
        return records
    with open(path, "r", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number >= len(lines) - 1:  # the last line: a write cut short by a kill
                continue
            raise ValueError(f"{path}:{number}: not a JSON record ({error}); the report is damaged, "
                             f"rerun with --overwrite to start again") from error
        if not isinstance(record, dict) or not isinstance(record.get("input"), str):
            raise ValueError(f"{path}:{number}: not an alignment record (no 'input' path); the report is "
                             "damaged, rerun align with --overwrite to start again")
        records[record["input"]] = record
    return records


def source_stamp(path, content_hash=False):
    """{"source_size", "source_mtime_ns"} of a source file now (+ "source_sha256" with
    ``content_hash``), or None when it cannot be read."""
    try:
        stat = os.stat(path)
        digest = sha256_of_file(path) if content_hash else None
    except OSError:
        return None
    stamp = {"source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
    return {**stamp, "source_sha256": digest} if content_hash else stamp


def stamp_of(record):
    """The stamp a record was made with (None for records written before stamps existed)."""
    if record.get("source_size") is None:
        return None
    return {"source_size": record["source_size"], "source_mtime_ns": record.get("source_mtime_ns")}


def source_unchanged(record, now, aligned_dir, source_path=None) -> bool:
    """True when ``record`` still describes its source (``now``: the source's stamp today, or None;
    ``source_path``: the source, read only when its size is the same but its time is not).

    A source with a new modification time but the size and sha256 the record holds is unchanged: a
    copy (``cp`` without ``-p``), a restore or a ``touch`` must not re-align a whole dataset.
    Records written before stamps existed carry none: their source counts as unchanged when it is
    older than the crop the record wrote (or, for a record without a crop, when it still exists), so
    an aligned folder made by an older version is neither re-aligned nor refused wholesale.
    """
    stamp = stamp_of(record)
    if stamp is not None or now is None:
        if stamp == now:
            return True
        if (stamp is None or now is None or stamp["source_size"] != now["source_size"]
                or not record.get("source_sha256") or source_path is None):
            return False
        try:
            return sha256_of_file(source_path) == record["source_sha256"]
        except OSError:
            return False
    if record.get("output"):
        try:
            return os.stat(os.path.join(aligned_dir, record["output"])).st_mtime_ns >= now["source_mtime_ns"]
        except OSError:
            return False
    return True


def crop_verdicts(aligned_dir, log=print):
    """{crop path relative to aligned_dir: None (a training image) or why not}, or None without a report.

    A crop is a training image only when the report has an aligned/fallback record that writes it
    and that record's source is still there, unchanged. Every other crop gets its reason: it is a
    leftover no record writes (an earlier run's output, or a file added by hand), or its source was
    removed or replaced since it was aligned. When the input folder itself is gone (the aligned
    folder was moved to another machine) the sources cannot be checked: that is logged, and the
    records alone decide.
    """
    aligned_dir = Path(aligned_dir)
    if not (aligned_dir / REPORT_NAME).is_file():
        return None
    input_dir = None
    if (aligned_dir / CONFIG_NAME).is_file():
        with open(aligned_dir / CONFIG_NAME, encoding="utf-8") as handle:
            input_dir = json.load(handle).get("input_dir")
    if input_dir is None or not os.path.isdir(input_dir):
        log(f"warning: {aligned_dir / REPORT_NAME}: the aligned photos' folder {input_dir} is not here; "
            "crops are packed by their records without checking their sources")
        input_dir = None
    verdicts = {}
    for record in load_report(aligned_dir / REPORT_NAME).values():
        output = record.get("output")
        if not output or record.get("status") not in PACKED_STATUSES:
            continue
        verdicts[output] = None
        if input_dir is None:
            continue
        source = os.path.join(input_dir, record["input"])
        now = source_stamp(source)
        if now is None:
            verdicts[output] = (f"its source {source} was removed after alignment; rerun align "
                                "(it removes such crops), skipped")
        elif not source_unchanged(record, now, aligned_dir, source):
            verdicts[output] = (f"its source {source} changed after alignment; rerun align "
                                "(it re-aligns changed sources), skipped")
    return verdicts


NOT_IN_REPORT = (f"no aligned record in {REPORT_NAME} writes this file (a leftover of an earlier alignment, "
                 "or added by hand); rerun align, skipped")


def aligned_image_size(aligned_dir):
    """(H, W) the aligned folder's crops were made at, from its align_config.json; None without one
    (or one without the key).
    ValueError naming the file when it is there but names no [H, W] of positive integers."""
    path = Path(aligned_dir) / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            size = json.load(handle).get("image_size")
        if size is None:   # written before align recorded it
            return None
        height, width = (int(v) for v in size)
        if height <= 0 or width <= 0 or [height, width] != list(size):
            raise ValueError
    except (OSError, ValueError, TypeError, AttributeError):
        raise ValueError(f"{path}: cannot read the crops' image_size [H, W] from it; align the folder again "
                         "(align/align_lfw.py writes it), or pass --image-size HxW") from None
    return height, width
