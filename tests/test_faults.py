"""The fault suite (issue 14): hostile inputs and faults at every stage end in exactly one place:
packed/aligned, or a report line with its reason, or one error line naming the file and the fix.
Never a hang, never a traceback, never a silent loss.

Small inputs throughout; real LFW faces (``lfw_dir``) where alignment needs a face.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def quiet(*_):
    pass


def damage_middle(data: bytes) -> bytes:
    """16 bytes scrambled at 60 % of a JPEG: libjpeg warns (naming no file) and fills in grey."""
    data = bytearray(data)
    start = int(len(data) * 0.6)
    for k in range(start, start + 16):
        data[k] = (data[k] * 7 + 13) & 0xFF
    return bytes(data)


def smooth_jpeg(path, size=(16, 12), seed=0):
    """A small JPEG with smooth content (so damaged middle bytes break the entropy coding)."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (4, 3, 3), dtype=np.uint8), size[::-1], interpolation=cv2.INTER_LINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def unreadable_lines(out):
    """{path: reason} of SHARDS/unreadable.txt."""
    path = Path(out) / "unreadable.txt"
    if not path.exists():
        return {}
    return dict(line.split("\t", 1) for line in path.read_text().splitlines() if not line.startswith("#"))


# ---- #5: a JPEG with damaged middle bytes ------------------------------------------------------------
def test_damaged_jpeg_is_listed_by_the_build_and_caught_by_verify(lfw_dir, tmp_path, monkeypatch):
    from fileio import jpeg_damage
    from tfrecords import image_check
    from tfrecords.build import build
    from tfrecords.reader import ShardError
    from tfrecords.verify import verify

    good = (lfw_dir / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg").read_bytes()
    bad = damage_middle(good)
    assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV takes it
    assert jpeg_damage(good) is None and jpeg_damage(bad)
    for person in ("A", "B"):
        for k in range(2):
            (tmp_path / "in" / person).mkdir(parents=True, exist_ok=True)
            (tmp_path / "in" / person / f"{k}.jpg").write_bytes(good)
    (tmp_path / "in" / "B" / "1.jpg").write_bytes(bad)
    manifest = build(tmp_path / "in", tmp_path / "out", progress=False, log=quiet)
    assert manifest["num_images"] == 3
    assert "damaged JPEG" in unreadable_lines(tmp_path / "out")["B/1.jpg"]
    # Shards packed before this check existed: verify finds the record and names it.
    monkeypatch.setattr(image_check, "jpeg_damage", lambda data: None)
    build(tmp_path / "in", tmp_path / "old", progress=False, log=quiet)
    with pytest.raises(ShardError, match=r"B/1\.jpg.*damaged JPEG.*--overwrite"):
        verify(tmp_path / "old", log=quiet)
    assert verify(tmp_path / "out", log=quiet) == {"train": 3}
