"""A contact sheet of aligned crops, for checking alignment by eye: the template's eye and mouth rows
are drawn as thin green lines across every tile, fallback crops get a red frame."""

from __future__ import annotations

import os

import cv2
import numpy as np

from fileio import read_input_bytes, write_bytes_atomic


def write_contact_sheet(records: list, output_dir, path, template, count: int = 50, columns: int = 10):
    """Tile `count` crops spread evenly over the aligned/fallback records into a PNG at `path`.

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
        tile = crop.copy()
        eye_row = round(template[:2, 1].mean())
        mouth_row = round(template[3:, 1].mean())
        for row in (eye_row, mouth_row):
            tile[row, ::2] = (0, 255, 0)  # dotted, so the face under it stays visible
        if record["status"] == "fallback":
            cv2.rectangle(tile, (0, 0), (tile.shape[1] - 1, tile.shape[0] - 1), (0, 0, 255), 2)
        tiles.append(tile)
    if not tiles:
        return None
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (height + 2), min(columns, len(tiles)) * (width + 2), 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = (i // columns) * (height + 2), (i % columns) * (width + 2)
        sheet[y:y + height, x:x + width] = tile
    _ok, data = cv2.imencode(".png", sheet)
    write_bytes_atomic(path, data.tobytes())
    return str(path)
