"""fileio/: the one home of atomic writes, image-size rules, image extensions, file hashes and the
generic pairs format."""

import hashlib
import json
import os

import pytest

import fileio


def test_atomic_output_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "model.keras"
    fileio.write_bytes_atomic(target, b"old")
    with pytest.raises(RuntimeError), fileio.atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".keras" and tmp.name.startswith(".")
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(target.parent)) == ["model.keras"]   # no temporary file left
    with fileio.atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_output_of_a_folder_replaces_the_old_folder(tmp_path):
    target = tmp_path / "saved_model"
    (target / "variables").mkdir(parents=True)
    (target / "stale.pb").write_text("old")
    with fileio.atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "saved_model.pb").write_text("new")
    assert sorted(os.listdir(target)) == ["saved_model.pb"]
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


def test_json_text_and_tmp_dir(tmp_path):
    fileio.write_json_atomic(tmp_path / "m.json", {"name": "Zoë", "n": 1})
    assert json.loads((tmp_path / "m.json").read_text(encoding="utf-8")) == {"name": "Zoë", "n": 1}
    assert "Zoë" in (tmp_path / "m.json").read_text(encoding="utf-8")   # non-ASCII kept as is
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    fileio.write_bytes_atomic(tmp_path / "out" / "a.jpg", b"\xff\xd8", tmp_dir=scratch)
    assert (tmp_path / "out" / "a.jpg").read_bytes() == b"\xff\xd8" and not os.listdir(scratch)


def test_sha256_of_file(tmp_path):
    data = os.urandom(3 * (1 << 20) + 5)   # several read blocks
    (tmp_path / "f").write_bytes(data)
    assert fileio.sha256_of_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_one_image_size_rule():
    assert fileio.parse_image_size("112x96") == (112, 96)
    assert fileio.parse_image_size("112X112") == (112, 112)
    assert fileio.parse_image_size("100x100", trainable=False) == (100, 100)
    with pytest.raises(ValueError, match="multiples of 16"):
        fileio.parse_image_size("100x100")
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        fileio.parse_image_size("0x96", trainable=False)
    assert fileio.untrainable_reason((112, 96)) is None
    assert "multiples of 16" in fileio.untrainable_reason((100, 100))
    assert fileio.parse_image_size("112,96") == (112, 96)   # tfrecords.build --image-size took commas too
    import argparse
    flag = fileio.image_size_type(trainable=False, sizes=((112, 96), (112, 112)))
    assert flag("112x112") == (112, 112)
    with pytest.raises(argparse.ArgumentTypeError, match="supported sizes are 112x96 and 112x112"):
        flag("100x100")
    with pytest.raises(argparse.ArgumentTypeError, match="multiples of 16"):
        fileio.image_size_type()("100x100")
    import models
    with pytest.raises(ValueError, match="multiples of 16"):   # the models use the same rule
        models.build_backbone("mobilefacenet", image_size=(100, 100))


def test_image_extensions_are_shared():
    from evaluation import pairs
    from tfrecords import sources
    assert pairs.IMAGE_EXTENSIONS is fileio.IMAGE_EXTENSIONS and sources.IMAGE_EXTENSIONS is fileio.IMAGE_EXTENSIONS
    assert fileio.is_image_file("A/B.JPG") and fileio.is_image_file("x.bmp") and not fileio.is_image_file("x.txt")


def test_generic_pairs_written_by_the_builder_are_read_by_evaluation(tmp_path):
    from evaluation import read_pairs
    pairs = [(f"p{i}/a.jpg", f"p{i}/b.jpg", 1) for i in range(3)] + [(f"p{i}/a.jpg", f"p{i + 1}/a.jpg", 0)
                                                                     for i in range(3)]
    (tmp_path / "val_pairs.txt").write_text(fileio.format_generic_pairs(pairs))
    read = read_pairs(tmp_path / "val_pairs.txt")
    assert list(read.issame) == [True] * 3 + [False] * 3 or sorted(read.issame) == [False] * 3 + [True] * 3
    assert set(zip(read.paths_a, read.paths_b)) == {(a, b) for a, b, _ in pairs}


def test_text_inputs_that_are_not_utf8_name_file_and_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from evaluation import read_pairs
    bad = tmp_path / "pairs.txt"
    bad.write_bytes(b"10\t1\nAaron\t1\t2\nZo\xeb\t1\t2\n")   # Latin-1, not UTF-8, on line 3
    lines = fileio.text_lines(bad)   # streamed: the good lines come before the error
    assert [next(lines), next(lines)] == [(1, "10\t1"), (2, "Aaron\t1\t2")]
    with pytest.raises(fileio.TextEncodingError, match=r"pairs\.txt:3: not UTF-8 text \(byte 0xeb at column 3\)"):
        read_pairs(bad)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a.jpg 0\nb\xff.jpg 1\n")
    out = subprocess.run([sys.executable, "-m", "tfrecords.build", "--list", str(listing), "--output-dir",
                          str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 1 and "list.txt:2: not UTF-8" in out.stderr and "Traceback" not in out.stderr


def test_tensorflow_startup_lines_are_filtered_and_the_rest_passes(tmp_path):
    """A process that quiets TensorFlow: absl's info lines and the known start-up errors written to
    fd 2 are dropped; its own messages, unknown errors and Python's stderr pass."""
    import subprocess
    import sys
    from pathlib import Path
    script = r'''
import os, sys
from fileio.quiet_tensorflow import quiet_tensorflow
quiet_tensorflow()
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
os.write(2, b"I0000 00:00:1795604669.943038    8788 port.cc:153] oneDNN custom operations are on.\n")
os.write(2, b"E0000 00:00:1795604672.200862    8788 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
os.write(2, b"E0000 00:00:1795604672.200862    8788 other.cc:1] a real C++ error\n")
os.write(2, b"plain C-level line\n")
print("progress\r", file=sys.stderr, end="")
print("python line", file=sys.stderr)
'''
    repo = Path(__file__).resolve().parents[1]
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=repo)
    err = quiet.stderr.decode()
    assert quiet.returncode == 0 and "oneDNN" not in err and "cuInit" not in err and "absl" not in err
    assert "a real C++ error" in err and "plain C-level line" in err
    assert "progress\r" in err and "python line" in err   # Python's stderr, untouched (its own channel)
    loud = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=repo,
                          env={**os.environ, "FACEID_TF_LOGS": "1"})
    assert "oneDNN" in loud.stderr.decode()
