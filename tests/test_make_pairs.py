"""evaluation/make_pairs.py: a balanced, identity-folded pairs file from an aligned folder, read back by
evaluate.py's reader into the same folds."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.make_pairs import PairsInputError, main, make_folded_pairs, people_images
from evaluation.pairs import read_pairs

REPO = Path(__file__).resolve().parents[1]


def _folder(root, counts):
    for i, n in enumerate(counts):
        (root / f"person_{i:02d}").mkdir(parents=True)
        for k in range(n):
            (root / f"person_{i:02d}" / f"IMG_{k:04d}.jpg").write_bytes(b"not decoded here")
    (root / "contact_sheet.png").write_bytes(b"top-level files are no people")
    return root


def test_pairs_file_is_balanced_identity_disjoint_and_read_back_into_the_same_folds(tmp_path, capsys):
    counts = [1 + (7 * i) % 19 for i in range(30)]   # 30 people, 1 to 19 images: a user's own photos
    aligned = _folder(tmp_path / "aligned", counts)
    assert main(["--input-dir", str(aligned), "--output", str(tmp_path / "pairs.txt"), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert pairs.num_folds == 10
    per_fold = len(pairs) // 20
    assert per_fold >= 5 and f"10 folds x ({per_fold} same + {per_fold} different pairs)" in out
    seen = set()
    people_of_fold = []
    for f in range(10):
        in_fold = pairs.folds == f
        assert pairs.issame[in_fold].sum() == per_fold and (~pairs.issame[in_fold]).sum() == per_fold
        people = set()
        for a, b, same in zip(np.array(pairs.paths_a)[in_fold], np.array(pairs.paths_b)[in_fold],
                              pairs.issame[in_fold]):
            assert a != b and (min(a, b), max(a, b)) not in seen   # no pair of one image, no pair twice
            seen.add((min(a, b), max(a, b)))
            assert (a.split("/")[0] == b.split("/")[0]) == bool(same)
            assert (aligned / a).is_file() and (aligned / b).is_file()
            people |= {a.split("/")[0], b.split("/")[0]}
        people_of_fold.append(people)
    for f in range(10):
        for g in range(f + 1, 10):
            assert not people_of_fold[f] & people_of_fold[g], (f, g)
    # seedable: the same seed writes the same file, another seed another
    assert main(["--input-dir", str(aligned), "--output", str(tmp_path / "again.txt"), "--seed", "3"]) == 0
    assert main(["--input-dir", str(aligned), "--output", str(tmp_path / "other.txt"), "--seed", "4"]) == 0
    assert (tmp_path / "again.txt").read_text() == (tmp_path / "pairs.txt").read_text()
    assert (tmp_path / "other.txt").read_text() != (tmp_path / "pairs.txt").read_text()


def test_too_few_people_or_pairs_are_refused_in_one_line(tmp_path):
    people = people_images(_folder(tmp_path / "few", [3] * 12))
    with pytest.raises(PairsInputError, match="need at least 10 people with >= 2 images and 20 people"):
        make_folded_pairs(people)
    people = people_images(_folder(tmp_path / "ok", [2] * 20))
    assert len(make_folded_pairs(people)[0]) == 4   # two people of 2 images per fold: 2 same + 2 different pairs
    with pytest.raises(PairsInputError, match="--pairs-per-fold 5: the smallest fold gives only 2"):
        make_folded_pairs(people, pairs_per_fold=5)
    out = subprocess.run([sys.executable, "-m", "evaluation.make_pairs", "--input-dir", str(tmp_path / "few"),
                          "--output", str(tmp_path / "p.txt")], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: 10 identity-disjoint")


def test_one_person_with_many_photos_never_fills_a_fold_alone():
    """20 people, one with 9 photos and 19 with 2: dealt by image count alone, the 9-photo person's fold
    held nobody else and gave no different pair (the 30-person run of benchmarks/own_photos.py hit it);
    now every fold has two people and each fold gives a same and a different pair."""
    from evaluation.make_pairs import assign_folds

    people = {"P00": [f"P00/{i}.jpg" for i in range(9)]}
    people.update({f"P{k:02d}": [f"P{k:02d}/0.jpg", f"P{k:02d}/1.jpg"] for k in range(1, 20)})
    folds = assign_folds(people, 10, seed=0)
    assert sorted(len(f) for f in folds) == [2] * 10
    pairs = make_folded_pairs(people, seed=0)
    assert len(pairs) == 10 and all(sum(s for *_, s in fold) == len(fold) // 2 >= 1 for fold in pairs)
