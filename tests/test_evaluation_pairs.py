"""Pairs files: LFW View 2 / View 1 and generic lists."""

import numpy as np
import pytest

from evaluation import PairsFormatError, read_pairs
from evaluation.pairs import contiguous_folds, strip_image_extension


def write(tmp_path, text, name="pairs.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def view2_text(num_folds=2, per_fold=2):
    lines = [f"{num_folds}\t{per_fold}"]
    for f in range(num_folds):
        lines += [f"Person_{f}\t{i + 1}\t{i + 2}" for i in range(per_fold)]
        lines += [f"Person_{f}\t{i + 1}\tOther_Guy\t{f * per_fold + i + 1}" for i in range(per_fold)]
    return "\n".join(lines) + "\n"


def test_view2(tmp_path):
    pairs = read_pairs(write(tmp_path, view2_text(2, 2)))
    assert pairs.kind == "view2" and len(pairs) == 8
    assert pairs.paths_a[0] == "Person_0/Person_0_0001" and pairs.paths_b[0] == "Person_0/Person_0_0002"
    assert pairs.paths_b[2] == "Other_Guy/Other_Guy_0001"
    assert pairs.issame.tolist() == [True, True, False, False] * 2
    assert pairs.folds.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert pairs.unique_paths()[:3] == ["Person_0/Person_0_0001", "Person_0/Person_0_0002", "Person_0/Person_0_0003"]


def test_view1_folds_interleave_same_and_different(tmp_path):
    lines = ["20"] + [f"A_{i}\t1\t2" for i in range(20)] + [f"A_{i}\t1\tB_{i}\t1" for i in range(20)]
    pairs = read_pairs(write(tmp_path, "\n".join(lines)))
    assert pairs.kind == "view1" and len(pairs) == 40 and pairs.num_folds == 10
    for f in range(10):  # 10 folds of 4: 2 same + 2 different, contiguous within each kind
        assert pairs.issame[pairs.folds == f].sum() == 2 and (~pairs.issame[pairs.folds == f]).sum() == 2
    assert pairs.folds[:4].tolist() == [0, 0, 1, 1] and pairs.folds[20:24].tolist() == [0, 0, 1, 1]


def test_generic_list(tmp_path):
    text = "# generic pairs\n" + "".join(
        f"id{i}/a.jpg\tid{i}/b.png\t1\nid{i}/a.jpg\tid{i + 1}/c.jpg\t0\n" for i in range(5)
    ) + "\n# trailing comment\n"
    pairs = read_pairs(write(tmp_path, text))
    assert pairs.kind == "generic" and len(pairs) == 10 and pairs.num_folds == 5
    assert pairs.paths_a[0] == "id0/a.jpg" and pairs.paths_b[0] == "id0/b.png"
    assert pairs.issame.sum() == 5


@pytest.mark.parametrize(
    "text, where",
    [
        ("2\t2\nP\t1\t2\nP\t1\t3\nP\t1\tQ\t1\nP\t1\t4\n" + "P\t1\t2\n" * 2 + "P\t1\tQ\t1\n" * 2, ":5:"),  # same line among different
        (view2_text(2, 2).replace("Person_1\t1\t2", "Person_1\tx\t2"), ":6:"),  # non-numeric image number
        ("2\t2\n" + "P\t1\t2\n" * 3, "announces 8 pair lines, found 3"),
        ("ten\t300\n", ":1:"),
        ("# generic pairs\na.jpg\tb.jpg\t1\na.jpg c.jpg 0\n", ":3:"),
        ("# generic pairs\na.jpg\tb.jpg\t1\n", "at least one same"),
    ],
)
def test_malformed_files_name_the_line(tmp_path, text, where):
    path = write(tmp_path, text)
    with pytest.raises(PairsFormatError, match=where) as info:
        read_pairs(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_pairs(tmp_path / "nope.txt")


def test_helpers():
    assert contiguous_folds(23, 10).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] + [k for k in range(3, 10) for _ in (0, 1)]
    assert strip_image_extension("John_C._Doe/John_C._Doe_0001.JPG") == "John_C._Doe/John_C._Doe_0001"
    assert strip_image_extension("John_C._Doe/John_C._Doe_0001") == "John_C._Doe/John_C._Doe_0001"


@pytest.mark.real_data
def test_real_lfw_pairs(lfw_dir):
    pairs = read_pairs(lfw_dir / "pairs.txt")
    assert pairs.kind == "view2" and len(pairs) == 6000 and pairs.issame.sum() == 3000
    assert np.bincount(pairs.folds).tolist() == [600] * 10
    assert pairs.paths_a[0] == "Abel_Pacheco/Abel_Pacheco_0001" and pairs.paths_b[0] == "Abel_Pacheco/Abel_Pacheco_0004"
    assert len(pairs.unique_paths()) == 7701
    for name, n in (("pairsDevTrain.txt", 2200), ("pairsDevTest.txt", 1000)):
        dev = read_pairs(lfw_dir / name)
        assert dev.kind == "view1" and len(dev) == n and np.bincount(dev.folds).tolist() == [n // 10] * 10
    missing = [p for p in pairs.unique_paths() if not (lfw_dir / "images" / (p + ".jpg")).is_file()]
    assert missing == []
