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


# ---- #4: stale and orphan crops ----------------------------------------------------------------------
def packed(shards):
    """{image path: stored bytes} of a shard folder's train split."""
    import tensorflow as tf

    import tfrecords
    from tfrecords import features as F

    manifest = tfrecords.read_manifest(shards)
    images = {}
    for shard in manifest["splits"]["train"]["shards"]:
        for raw in tf.data.TFRecordDataset(str(Path(shards) / shard["file"])):
            example = tf.io.parse_single_example(raw, F.feature_spec())
            images[example[F.PATH].numpy().decode()] = example[F.ENCODED].numpy()
    return images


def packed_paths(shards):
    return sorted(packed(shards))


# ---- #5: the builder accounts for every input file ----------------------------------------------------
def test_build_accounts_for_every_input_file(tmp_path):
    """Nested folders, dangling links (file or identity), loose images, non-images: each gets a line
    in unreadable.txt with its reason; a linked identity folder is packed. Nothing vanishes."""
    from tfrecords.build import build

    inp = tmp_path / "in"
    for name in ("A/0.jpg", "A/1.jpg", "A/sub/2.jpg", "A/sub/deeper/3.jpg", "loose.jpg"):
        smooth_jpeg(inp / name)
    for name in ("0.jpg", "1.jpg"):
        smooth_jpeg(tmp_path / "elsewhere" / "B" / name)
    (inp / "A" / "notes.txt").write_text("not an image")
    (inp / "A" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (inp / "B").symlink_to(tmp_path / "elsewhere" / "B", target_is_directory=True)
    (inp / "C").symlink_to(tmp_path / "missing_folder", target_is_directory=True)
    build(inp, tmp_path / "out", progress=False, log=quiet)
    packed = packed_paths(tmp_path / "out")
    listed = unreadable_lines(tmp_path / "out")
    assert packed == ["A/0.jpg", "A/1.jpg", "B/0.jpg", "B/1.jpg"]
    assert "nested below an identity" in listed["A/sub/2.jpg"] and "nested" in listed["A/sub/deeper/3.jpg"]
    assert "dangling" in listed["A/gone.jpg"] and "dangling" in listed["C"]
    assert "not in an identity folder" in listed["loose.jpg"] and "not an image" in listed["A/notes.txt"]
    everything = {str(p.relative_to(inp)) for p in inp.rglob("*") if p.is_symlink() and not p.exists()}
    for root, _, files in os.walk(inp, followlinks=True):
        everything |= {os.path.relpath(os.path.join(root, f), inp) for f in files}
    assert set(packed) | set(listed) == everything and not set(packed) & set(listed)   # exactly one place each


def test_build_resume_compares_contents_not_names(tmp_path):
    """#4: an input replaced under the same name is not 'nothing to do': the rerun is refused until
    --overwrite, which packs the new bytes."""
    from tfrecords.build import BuildError, build

    inp = tmp_path / "in"
    for k in range(2):
        smooth_jpeg(inp / "A" / f"{k}.jpg", seed=k)
    build(inp, tmp_path / "out", progress=False, log=quiet)
    replaced = smooth_jpeg(inp / "A" / "0.jpg", seed=7).read_bytes()
    with pytest.raises(BuildError, match="other inputs or options.*--overwrite"):
        build(inp, tmp_path / "out", progress=False, log=quiet)
    build(inp, tmp_path / "out", overwrite=True, progress=False, log=quiet)
    assert packed(tmp_path / "out")["A/0.jpg"] == replaced


# ---- #6: --list labels ---------------------------------------------------------------------------------
def test_list_labels_are_integers_in_numeric_order_or_names_never_mixed(tmp_path):
    """Integer labels keep their values ("10" is class 10, not class 2 by text order); a list that
    mixes integers and names, or spells one integer two ways, is refused at the line, before work."""
    from tfrecords.build import build
    from tfrecords.sources import SourceError

    lines = []
    for label in range(11):
        lines.append(f"img/{label}.jpg {label}")
        smooth_jpeg(tmp_path / "img" / f"{label}.jpg", seed=label)
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    manifest = build(None, tmp_path / "out", list_file=tmp_path / "list.txt", progress=False, log=quiet)
    assert manifest["labels"] == [str(k) for k in range(11)]
    import tensorflow as tf

    from tfrecords import features as F
    for shard in manifest["splits"]["train"]["shards"]:
        for raw in tf.data.TFRecordDataset(str(tmp_path / "out" / shard["file"])):
            example = tf.io.parse_single_example(raw, F.feature_spec())
            assert f"img/{int(example[F.LABEL])}.jpg" == example[F.PATH].numpy().decode()
    (tmp_path / "mixed.txt").write_text("img/0.jpg 0\n# a comment\nimg/1.jpg 1\nimg/2.jpg George_W_Bush\n")
    with pytest.raises(SourceError, match=r"mixed\.txt:4: label 'George_W_Bush' is a name, but line 1 has an integer"):
        build(None, tmp_path / "out2", list_file=tmp_path / "mixed.txt", progress=False, log=quiet)
    (tmp_path / "spelled.txt").write_text("img/0.jpg 7\nimg/1.jpg 007\n")
    with pytest.raises(SourceError, match=r"spelled\.txt:2: label '007' is the class number of '7'"):
        build(None, tmp_path / "out3", list_file=tmp_path / "spelled.txt", progress=False, log=quiet)
    assert not (tmp_path / "out2" / "manifest.json").exists()
