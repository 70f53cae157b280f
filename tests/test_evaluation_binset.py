"""insightface .bin sets: safe reading (restricted unpickler), writing, and formats seen in the wild."""

import os
import pickle
import struct

import cv2
import numpy as np
import pytest

from evaluation.binset import UnsafePickleError, bin_image_loader, bin_pairset, load_bin, main, write_bin


def make_aligned(root, names_counts, size=(16, 12), seed=0):
    rng = np.random.default_rng(seed)
    for name, count in names_counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            cv2.imwrite(str(root / name / f"{name}_{i:04d}.jpg"), image)


def write_view2(path):
    """10 folds of one same and one different pair, none repeated."""
    lines = ["10\t1"]
    for f in range(10):
        lines += [f"P{f}\t1\t2", f"P{f}\t1\tP{(f + 1) % 10}\t2"]
    path.write_text("\n".join(lines) + "\n")


def test_write_then_load_roundtrip(tmp_path):
    make_aligned(tmp_path / "aligned", {f"P{f}": 2 for f in range(10)})
    write_view2(tmp_path / "pairs.txt")
    assert main(["--aligned-dir", str(tmp_path / "aligned"), "--pairs", str(tmp_path / "pairs.txt"),
                 "--output", str(tmp_path / "out" / "lfw.bin")]) == 0
    bins, issame = load_bin(tmp_path / "out" / "lfw.bin")
    assert len(bins) == 40 and issame.tolist() == [True, False] * 10
    assert bins[0] == (tmp_path / "aligned" / "P0" / "P0_0001.jpg").read_bytes()
    assert bins[3] == (tmp_path / "aligned" / "P1" / "P1_0002.jpg").read_bytes()
    pairs = bin_pairset("x.bin", issame)
    assert pairs.folds.tolist() == [f for f in range(10) for _ in (0, 1)]
    image = bin_image_loader("x.bin", bins)("1")
    assert image.shape == (16, 12, 3) and image.dtype == np.uint8
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_write_names_missing_image(tmp_path):
    make_aligned(tmp_path / "aligned", {f"P{f}": 2 for f in range(9)})  # P9 missing
    write_view2(tmp_path / "pairs.txt")
    with pytest.raises(FileNotFoundError, match="P9/P9_0001"):
        write_bin(tmp_path / "aligned", tmp_path / "pairs.txt", tmp_path / "lfw.bin")
    assert not (tmp_path / "lfw.bin").exists()


class CallsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class CallsEval:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


@pytest.mark.parametrize("payload", ["system", "eval", "object_array"])
def test_malicious_pickles_are_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = {"system": CallsSystem(marker), "eval": CallsEval(),
            "object_array": np.array([b"x", None], dtype=object)}[payload]
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([b"jpeg", evil], [True]), protocol=2))
    with pytest.raises(UnsafePickleError, match="evil.bin"):
        load_bin(path)
    assert not marker.exists()


def python2_bin(images, issame):
    """A pickle as Python 2 insightface wrote it: protocol 2, image bytes as py2 str (BINSTRING opcodes)."""
    out = b"\x80\x02](" + b"".join(b"T" + struct.pack("<I", len(x)) + x for x in images) + b"e]("
    return out + b"".join(b"\x88" if s else b"\x89" for s in issame) + b"e\x86."


@pytest.mark.parametrize("flavour", ["python2", "protocol2", "protocol4", "numpy_buffers"])
def test_published_flavours_load(tmp_path, flavour):
    _ok, encoded = cv2.imencode(".jpg", np.full((8, 8, 3), 200, np.uint8))
    images = [encoded.tobytes(), encoded.tobytes()]
    path = tmp_path / "set.bin"
    if flavour == "python2":
        path.write_bytes(python2_bin(images, [True]))
    elif flavour == "numpy_buffers":
        path.write_bytes(pickle.dumps(([np.frombuffer(x, np.uint8) for x in images], np.array([True])), protocol=4))
    else:
        path.write_bytes(pickle.dumps((images, [True]), protocol=int(flavour[-1])))
    bins, issame = load_bin(path)
    assert issame.tolist() == [True] and len(bins) == 2
    assert bin_image_loader(path, bins)("1").shape == (8, 8, 3)


def test_bad_structure_and_garbage(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True]), protocol=4))
    with pytest.raises(ValueError, match="3 images for 1 pairs"):
        load_bin(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="bad.bin"):
        load_bin(path)


def test_center_crop(tmp_path):
    image = np.zeros((112, 112, 3), np.uint8)
    image[:, 8:104] = 255
    _ok, encoded = cv2.imencode(".png", image)
    load = bin_image_loader("x.bin", [encoded.tobytes()], image_size=(112, 96), center_crop=True)
    assert load("0").shape == (112, 96, 3) and load("0").min() == 255
