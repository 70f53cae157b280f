"""The alignment report: one JSON object per input file, in `ALIGNED/align_report.jsonl`.

While a run is going, records are appended and flushed one by one (fsync every few seconds), so a
kill -9 loses at most the line being written: `load_report` drops a truncated last line and the
file is repaired before appending. Where a file has several records (a resumed run redid it),
the last one counts. At the end of a run the log is compacted to exactly one record per input
file, sorted by path, and replaced atomically.

Record fields: input (path relative to the input dir), output (relative to the output dir, or
null), status (aligned | fallback | failed | excluded), reason (why not aligned, else null),
detail, landmarks ([5][2] x, y in input pixels used for the warp, or null), box ([x1, y1, x2, y2]
of the chosen face), score (its ONet probability), faces (number detected), input_size ([H, W]),
exif_orientation (the file's EXIF orientation tag 1–8 as applied by the decoder, or null), orientation
(degrees 0 / 90 / 180 / 270 the image as decoded was turned counterclockwise for the face to be
upright: non-zero means the tag lied, and the detail says it was overridden; null without a face),
source_size, source_mtime_ns and source_sha256 (the input file's size, modification time and
content hash when it was read: a rerun re-aligns a source whose size or bytes changed, and the shard
builder skips its crop until then; a new time alone, as a copy or touch makes, is checked by hash).
Reading the report (``load_report``, the stamps) lives in fileio/align_report.py: the builder reads it too.
"""

from __future__ import annotations

import json
import os
import time

import fileio
from fileio.align_report import (  # noqa: F401
    CONFIG_NAME,
    CONTACT_SHEET_NAME,
    REPORT_NAME,
    SUMMARY_NAME,
    load_report,
    source_stamp,
    source_unchanged,
    stamp_of,
)

STATUSES = ("aligned", "fallback", "failed", "excluded")


class ReportLog:
    """Append-only writer: `append(record)` flushes each line and fsyncs at most every `fsync_every_s`."""

    def __init__(self, path, fsync_every_s: float = 2.0):
        self.path = path
        _repair_tail(path)
        self._handle = open(path, "a", encoding="utf-8")
        self._fsync_every_s = fsync_every_s
        self._last_fsync = time.monotonic()

    def append(self, record: dict) -> None:
        try:
            self._handle.write(json.dumps(record, sort_keys=True) + "\n")
            self._handle.flush()
            if time.monotonic() - self._last_fsync > self._fsync_every_s:
                os.fsync(self._handle.fileno())
                self._last_fsync = time.monotonic()
        except OSError as error:  # a write error names no file: name the report (disk full, ...)
            raise OSError(error.errno, error.strerror, self.path) from None

    def close(self) -> None:
        if not self._handle.closed:
            try:
                self._handle.flush()
                os.fsync(self._handle.fileno())
            except OSError as error:
                raise OSError(error.errno, error.strerror, self.path) from None
            finally:
                try:
                    self._handle.close()
                except OSError:
                    pass  # the flush above already failed and said so

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _repair_tail(path) -> None:
    """Cut a partial last line (no trailing newline) so the next append starts a fresh line."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def write_json_atomic(path, obj) -> None:
    """The align outputs' JSON style (indent 2, sorted keys), written atomically."""
    fileio.write_json_atomic(path, obj, indent=2, sort_keys=True)


def compact_report(path, records: list) -> None:
    """Replace the log by exactly `records` (one per input, in the given order), atomically."""
    fileio.write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records), fsync=True)
