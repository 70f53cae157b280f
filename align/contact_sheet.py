"""A contact sheet of aligned crops, for checking alignment by eye. Under every tile: the person (its
folder) and the file; across every tile, as thin dotted green lines: the template's eye and mouth
rows; around a fallback crop (no face found): a red frame. A legend at the foot says so."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import cv2
import numpy as np

from fileio import read_input_bytes, write_bytes_atomic

FONT, SCALE, LINE = cv2.FONT_HERSHEY_PLAIN, 0.8, 12   # caption and legend text; LINE: pixels per line
GAP = 2                                                # white pixels between tiles
GREEN, RED, BLACK = (0, 160, 0), (0, 0, 255), (0, 0, 0)   # BGR


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only: any other character is drawn as '?'."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def _text_width(text: str) -> int:
    return cv2.getTextSize(text, FONT, SCALE, 1)[0][0]


def _fit(text: str, width: int, keep_end: bool = False) -> str:
    """``text`` cut to ``width`` pixels, the cut marked '..'; ``keep_end`` keeps the end (a file's number)."""
    text = _ascii(text)
    while len(text) > 1 and _text_width(text) > width:
        text = (".." + text[3:]) if keep_end else (text[:-3] + "..")
    return text


def _wrap(text: str, width: int) -> list:
    """``text`` broken at spaces into lines of at most ``width`` pixels."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and _text_width(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


def tile_caption(output: str) -> tuple:
    """(person, file) of a crop's path relative to ALIGNED: its folder (the identity) and its file name
    without the extension; person is "" for a crop at the top of a flat folder."""
    path = PurePosixPath(output.replace(os.sep, "/"))
    return ("/".join(path.parts[:-1]), path.stem)


def legend_lines(shown: int, usable: int) -> list:
    """(text, colour) lines explaining the sheet's marks."""
    return [
        ("Dotted green rows: where the template puts the eyes (upper) and the mouth (lower); "
         "an aligned face has its eyes and mouth on them.", GREEN),
        ("Red frame: a fallback crop (no face found, the image's centre).", RED),
        (f"Under each tile: person (folder) and file. {shown} of {usable} crops, spread evenly; "
         "align_report.jsonl lists every file.", BLACK),
    ]


def write_contact_sheet(records: list, output_dir, path, template, count: int = 50, columns: int = 10):
    """Tile `count` crops spread evenly over the aligned/fallback records into a PNG at `path`, each
    captioned with its person and file, with a legend at the foot.

    Returns `path`, or None when there is no crop to show.
    """
    usable = [r for r in records if r["status"] in ("aligned", "fallback") and r["output"]]
    if not usable or count <= 0:
        return None
    picks = [usable[i] for i in np.unique(np.linspace(0, len(usable) - 1, min(count, len(usable))).astype(int))]
    tiles = []
    for record in picks:
        # Read by Python, decoded from memory: cv2.imread takes a C string and crashes on a name that is not
        # UTF-8 (a surrogate escape); read_input_bytes takes any name and refuses a FIFO or a device.
        try:
            data = read_input_bytes(os.path.join(output_dir, record["output"]))
        except OSError:
            continue
        crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if crop is None:
            continue
        tiles.append(_tile(crop, record, template))
    if not tiles:
        return None
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet_width = min(columns, len(tiles)) * (width + GAP)
    legend = [(line, colour) for text, colour in legend_lines(len(tiles), len(usable))
              for line in _wrap(text, sheet_width - 2 * GAP)]
    grid_height = rows * (height + GAP)
    sheet = np.full((grid_height + len(legend) * LINE + 2 * GAP, sheet_width, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = (i // columns) * (height + GAP), (i % columns) * (width + GAP)
        sheet[y:y + height, x:x + width] = tile
    for i, (line, colour) in enumerate(legend):
        cv2.putText(sheet, line, (GAP, grid_height + (i + 1) * LINE - 2), FONT, SCALE, colour, 1, cv2.LINE_AA)
    _ok, data = cv2.imencode(".png", sheet)
    write_bytes_atomic(path, data.tobytes())
    return str(path)


def _tile(crop, record, template):
    """The crop with its guide rows (and a red frame when it is a fallback) over a two-line caption."""
    crop = crop.copy()
    eye_row = round(template[:2, 1].mean())
    mouth_row = round(template[3:, 1].mean())
    for row in (eye_row, mouth_row):
        crop[row, ::2] = (0, 255, 0)  # dotted, so the face under it stays visible
    if record["status"] == "fallback":
        cv2.rectangle(crop, (0, 0), (crop.shape[1] - 1, crop.shape[0] - 1), RED, 2)
    width = crop.shape[1]
    caption = np.full((2 * LINE, width, 3), 255, np.uint8)
    person, name = tile_caption(record["output"])
    for i, text in enumerate((_fit(person, width - 2), _fit(name, width - 2, keep_end=True))):
        cv2.putText(caption, text, (1, (i + 1) * LINE - 3), FONT, SCALE, BLACK, 1, cv2.LINE_AA)
    return np.concatenate([crop, caption])
