"""Verification pair lists: LFW View 2 / View 1 files and the generic list, parsed into a PairSet.

Formats (detected from the first line):
- View 2 (``pairs.txt``): header ``F N`` (LFW: ``10 300``), then F folds, each N same-person lines
  ``name<TAB>i<TAB>j`` followed by N different-person lines ``name1<TAB>i<TAB>name2<TAB>j``.
  Fold k is the k-th block of 2N lines, as published.
- View 1 (``pairsDevTrain.txt``, ``pairsDevTest.txt``): header ``N``, then N same lines and N
  different lines. One set, so we make 10 folds to cross-validate the threshold: the same pairs
  are split into 10 contiguous groups in file order and so are the different pairs; fold k holds
  group k of each (``stratified_contiguous_folds``). That equals interleaving same and different
  pairs evenly and cutting the interleaved list into 10 contiguous folds of equal size (220 pairs
  for DevTrain, 100 for DevTest), and it is how ``evaluation.binset`` lays the pairs out in a .bin.
- Generic list (written for validation splits): first line ``# generic pairs``, then lines
  ``path_a<TAB>path_b<TAB>1|0`` (1 = same identity). Blank lines and ``#`` comments are skipped.
  Folds as for View 1, with k = min(10, #same, #different) so every fold holds both kinds.

LFW paths are ``Name/Name_0001`` without extension (matched to ``.jpg``/``.png`` files later);
generic paths are kept as written.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fileio import GENERIC_HEADER, IMAGE_EXTENSIONS, text_lines
from fileio.pairs_format import repeated_pairs

NUM_FOLDS = 10


class PairsFormatError(ValueError):
    """A pairs file that does not parse; the message names the file and line."""


@dataclasses.dataclass
class PairSet:
    """Pairs to verify.

    paths_a, paths_b: lists of relative image paths (len P); issame: bool [P];
    folds: int [P], fold index 0..K-1 of each pair; kind: "view2", "view1", "generic" or "bin";
    source: the file it came from.
    """

    paths_a: list
    paths_b: list
    issame: np.ndarray
    folds: np.ndarray
    kind: str = "generic"
    source: str = ""

    def __post_init__(self):
        self.issame = np.asarray(self.issame, dtype=bool)
        self.folds = np.asarray(self.folds, dtype=np.int64)
        n = len(self.issame)
        if not (len(self.paths_a) == len(self.paths_b) == n == len(self.folds)):
            raise ValueError(
                f"PairSet fields differ in length: paths_a {len(self.paths_a)}, paths_b {len(self.paths_b)}, "
                f"issame {n}, folds {len(self.folds)}"
            )

    def __len__(self) -> int:
        return len(self.issame)

    @property
    def num_folds(self) -> int:
        return int(self.folds.max()) + 1 if len(self.folds) else 0

    def unique_paths(self) -> list:
        """Distinct image paths in order of first appearance (each image is embedded once)."""
        return list(dict.fromkeys(p for pair in zip(self.paths_a, self.paths_b) for p in pair))


def contiguous_folds(n: int, k: int) -> np.ndarray:
    """Fold index of each of n items split into k contiguous groups, like sklearn KFold(k, shuffle=False):
    the first n % k groups get one extra item. Returns int64 [n]."""
    if k < 1 or n < k:
        raise ValueError(f"cannot split {n} items into {k} folds")
    sizes = np.full(k, n // k, dtype=np.int64)
    sizes[: n % k] += 1
    return np.repeat(np.arange(k, dtype=np.int64), sizes)


def stratified_contiguous_folds(issame: np.ndarray, k: int = NUM_FOLDS) -> np.ndarray:
    """Fold of each pair (int64 [P]) for a list without folds of its own (View 1, generic).

    The same pairs, in file order, are cut into k contiguous groups as KFold(k) would; the different
    pairs, in file order, into groups that bring fold i to the size KFold(k) gives fold i of all P
    pairs. So listing the pairs fold by fold makes exactly the k contiguous blocks that
    ``contiguous_folds(P, k)`` cuts, the layout an insightface ``.bin`` is read with (see
    ``fold_order``), and every fold holds both kinds whenever k <= min(#same, #different). With as
    many same as different pairs, a multiple of k each (LFW View 1: 1100 and 500), both kinds are cut
    evenly: the folds of interleaving them and cutting 10 contiguous folds.
    """
    issame = np.asarray(issame, dtype=bool)
    fold_sizes = np.bincount(contiguous_folds(len(issame), k), minlength=k)
    same_sizes = np.bincount(contiguous_folds(int(issame.sum()), k), minlength=k)
    if (fold_sizes < same_sizes).any():
        raise ValueError(f"cannot make {k} folds holding both kinds from {int(issame.sum())} same and "
                         f"{int((~issame).sum())} different pairs")
    folds = np.empty(len(issame), dtype=np.int64)
    folds[issame] = np.repeat(np.arange(k, dtype=np.int64), same_sizes)
    folds[~issame] = np.repeat(np.arange(k, dtype=np.int64), fold_sizes - same_sizes)
    return folds


def contiguous_fold_count(issame) -> int:
    """How many contiguous folds a list of pairs without fold labels (an insightface .bin) is cut into:
    10, or fewer when a kind has fewer pairs, so that every fold can hold both kinds."""
    issame = np.asarray(issame, dtype=bool)
    return min(NUM_FOLDS, int(issame.sum()), int((~issame).sum()))


def fold_order(pairs: PairSet) -> np.ndarray:
    """Indices listing ``pairs`` fold by fold (file order within a fold), such that cutting that list
    into ``contiguous_fold_count`` contiguous folds gives back exactly ``pairs.folds``. ValueError when
    no order can (e.g. a View 2 file with other than 10 folds)."""
    order = np.argsort(pairs.folds, kind="stable")
    count = contiguous_fold_count(pairs.issame)
    if count < 1 or not np.array_equal(contiguous_folds(len(pairs), count), pairs.folds[order]):
        raise ValueError(f"{pairs.source}: its {pairs.num_folds} folds cannot be kept in a list cut into "
                         f"{count} equal contiguous folds (how .bin files are read)")
    return order


def strip_image_extension(path: str) -> str:
    """Drop a known image extension (case-insensitive); other dots (``John_C._Doe``) are kept."""
    lower = path.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return path[: -len(ext)]
    return path


def lfw_path(name: str, number: str) -> str:
    """``("Abel_Pacheco", "4") -> "Abel_Pacheco/Abel_Pacheco_0004"``."""
    return f"{name}/{name}_{int(number):04d}"


def _parse_lfw_line(fields, expect_same, path, lineno):
    """One LFW pair line -> (path_a, path_b); the error names file and line."""
    want = 3 if expect_same else 4
    kind = "same-person ('name i j')" if expect_same else "different-person ('name1 i name2 j')"
    if len(fields) != want:
        raise PairsFormatError(
            f"{path}:{lineno}: expected a {kind} line with {want} fields, got {len(fields)}: {' '.join(fields)!r}"
        )
    numbers = [fields[1], fields[2]] if expect_same else [fields[1], fields[3]]
    if not all(x.isdigit() and int(x) > 0 for x in numbers):
        raise PairsFormatError(f"{path}:{lineno}: image numbers must be positive integers: {' '.join(fields)!r}")
    if expect_same:
        return lfw_path(fields[0], fields[1]), lfw_path(fields[0], fields[2])
    return lfw_path(fields[0], fields[1]), lfw_path(fields[2], fields[3])


def _content_lines(lines, start):
    """(lineno, fields) of the non-blank lines from index start (lineno 1-based)."""
    for i in range(start, len(lines)):
        fields = lines[i].split()
        if fields:
            yield i + 1, fields


def _read_lfw(path, lines, header):
    if len(header) == 2:
        num_folds, per_fold = int(header[0]), int(header[1])
        expected = [(fold, same) for fold in range(num_folds) for same in (True, False) for _ in range(per_fold)]
        kind = "view2"
    else:
        n_same = int(header[0])
        expected = [(None, True)] * n_same + [(None, False)] * n_same
        kind = "view1"
    body = list(_content_lines(lines, 1))
    if len(body) != len(expected):
        raise PairsFormatError(
            f"{path}: header {' '.join(header)!r} announces {len(expected)} pair lines, found {len(body)}"
        )
    paths_a, paths_b, issame, folds = [], [], [], []
    linenos = [lineno for lineno, _ in body]
    for (lineno, fields), (fold, same) in zip(body, expected):
        a, b = _parse_lfw_line(fields, same, path, lineno)
        paths_a.append(a)
        paths_b.append(b)
        issame.append(same)
        folds.append(fold)
    issame = np.array(issame, dtype=bool)
    if kind == "view2":
        folds = np.array(folds, dtype=np.int64)
    else:
        folds = stratified_contiguous_folds(issame, NUM_FOLDS)
    return PairSet(paths_a, paths_b, issame, folds, kind=kind, source=str(path)), linenos


def _read_generic(path, lines):
    paths_a, paths_b, issame, linenos = [], [], [], []
    for i in range(1, len(lines)):
        line = lines[i].rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 3 or fields[2].strip() not in ("0", "1") or not fields[0] or not fields[1]:
            raise PairsFormatError(f"{path}:{i + 1}: expected 'path_a<TAB>path_b<TAB>1|0', got {line!r}")
        paths_a.append(fields[0])
        paths_b.append(fields[1])
        issame.append(fields[2].strip() == "1")
        linenos.append(i + 1)
    issame = np.array(issame, dtype=bool)
    n_same, n_diff = int(issame.sum()), int((~issame).sum())
    if n_same == 0 or n_diff == 0:
        raise PairsFormatError(f"{path}: needs at least one same (1) and one different (0) pair; has {n_same} and {n_diff}")
    folds = stratified_contiguous_folds(issame, contiguous_fold_count(issame))
    return PairSet(paths_a, paths_b, issame, folds, kind="generic", source=str(path)), linenos


def read_pairs(path) -> PairSet:
    """Parse an LFW View 2 / View 1 pairs file or a generic pair list (see module docstring).

    Raises FileNotFoundError for a missing file and PairsFormatError (with file:line) for a malformed one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pairs file not found: {path}")
    lines = [line for _, line in text_lines(path)]
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise PairsFormatError(f"{path}: file is empty")
    if first != 0:
        raise PairsFormatError(f"{path}:1: the header must be the first line")
    if lines[0].strip().lower() == GENERIC_HEADER:
        return _checked(path, *_read_generic(path, lines))
    header = lines[0].split()
    if not (1 <= len(header) <= 2 and all(x.isdigit() and int(x) > 0 for x in header)):
        raise PairsFormatError(
            f"{path}:1: unknown header {lines[0]!r}; expected 'FOLDS N' (View 2, e.g. '10 300'), "
            f"'N' (View 1) or '{GENERIC_HEADER}'"
        )
    return _checked(path, *_read_lfw(path, lines, header))


def _checked(path, pairs, linenos):
    """``pairs``, unless a pair names one image twice (its cosine is 1 whatever the model: a free
    "same" verdict) or a pair is listed twice, in either order (it counts twice): both inflate the
    accuracy. PairsFormatError naming the file, the lines and the fix."""
    for a, b, lineno in zip(pairs.paths_a, pairs.paths_b, linenos):
        if a == b:
            raise PairsFormatError(f"{path}:{lineno}: the pair {a!r} - {b!r} names the same image twice (it scores 1 "
                                   "with any model and inflates accuracy); pair two different images")
    repeats = repeated_pairs(zip(pairs.paths_a, pairs.paths_b))
    if repeats:
        first, repeat = repeats[0]
        others = "".join(f", {linenos[j]} repeats {linenos[i]}" for i, j in repeats[1:6])
        more = f" and {len(repeats) - 6} more" if len(repeats) > 6 else ""
        also = f" ({len(repeats)} in all: line {linenos[repeat]} repeats {linenos[first]}{others}{more})" \
            if len(repeats) > 1 else ""
        raise PairsFormatError(f"{path}:{linenos[repeat]}: the pair {pairs.paths_a[repeat]!r} - {pairs.paths_b[repeat]!r} "
                               f"repeats line {linenos[first]} (the same two images, in either order){also}: a "
                               "repeated pair counts twice and inflates accuracy; list each pair once (remove the "
                               "repeated lines)")
    return pairs
