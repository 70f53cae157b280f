"""The alignment report: one JSON object per input file, in `ALIGNED/align_report.jsonl`.

While a run is going, records are appended and flushed one by one (fsync every few seconds), so a
kill -9 loses at most the line being written: `load_report` drops a truncated last line and the
file is repaired before appending. Where a file has several records (a resumed run redid it),
the last one counts. At the end of a run the log is compacted to exactly one record per input
file, sorted by path, and replaced atomically.

Record fields: input (path relative to the input dir), output (relative to the output dir, or
null), status (aligned | fallback | failed | excluded), reason (why not aligned, else null),
detail, landmarks ([5][2] x, y in input pixels used for the warp, or null), box ([x1, y1, x2, y2]
of the chosen face), score (its ONet probability), faces (number detected), input_size ([H, W]).
"""

from __future__ import annotations

import json
import os
import time

import fileio

REPORT_NAME = "align_report.jsonl"
SUMMARY_NAME = "align_summary.json"
CONFIG_NAME = "align_config.json"
CONTACT_SHEET_NAME = "contact_sheet.png"
STATUSES = ("aligned", "fallback", "failed", "excluded")


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
        records[record["input"]] = record
    return records


class ReportLog:
    """Append-only writer: `append(record)` flushes each line and fsyncs at most every `fsync_every_s`."""

    def __init__(self, path, fsync_every_s: float = 2.0):
        self.path = path
        _repair_tail(path)
        self._handle = open(path, "a", encoding="utf-8")
        self._fsync_every_s = fsync_every_s
        self._last_fsync = time.monotonic()

    def append(self, record: dict) -> None:
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()
        if time.monotonic() - self._last_fsync > self._fsync_every_s:
            os.fsync(self._handle.fileno())
            self._last_fsync = time.monotonic()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

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
