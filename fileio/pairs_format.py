"""The generic verification pair list, for any set of images (LFW's own formats are in evaluation/pairs.py).

    # generic pairs
    path_a<TAB>path_b<TAB>1      (1 = same identity, 0 = different)

The shard builder writes it for held-out identities (``val_pairs.txt``), ``evaluation.make_pairs`` for a
user's own aligned folder (listed fold by fold, so the reader's folds are the identity-disjoint ones it
made); ``evaluation.read_pairs`` reads it (blank lines and ``#`` comments are skipped there).

The rule for every pair list (this one and LFW's, checked where they are read and here where one is
written): each pair is listed once. The same two images twice, in either order, count twice in the
accuracy (an easy pair listed ten times is ten free correct answers).
"""

import posixpath

GENERIC_HEADER = "# generic pairs"


def repeated_pairs(pairs):
    """[(i, j)] for each pair j that repeats an earlier pair i (the same two paths, in either order;
    paths compared after ``posixpath.normpath``). pairs: iterable of (path_a, path_b, ...)."""
    first, repeats = {}, []
    for j, (a, b, *_) in enumerate(pairs):
        key = tuple(sorted((posixpath.normpath(a), posixpath.normpath(b))))
        if key in first:
            repeats.append((first[key], j))
        else:
            first[key] = j
    return repeats


def format_generic_pairs(pairs, comments=()):
    """Text of a generic pair list from [(path_a, path_b, is_same)]; ``comments``: lines written as ``# ...``
    after the header (the reader skips them). ValueError if a pair repeats."""
    pairs = list(pairs)
    repeats = repeated_pairs(pairs)
    if repeats:
        i, j = repeats[0]
        raise ValueError(f"pair {j + 1} ({pairs[j][0]!r}, {pairs[j][1]!r}) repeats pair {i + 1}: each pair is listed "
                         f"once ({len(repeats)} repeat(s))")
    lines = [GENERIC_HEADER] + [f"# {c}" for c in comments] + [f"{a}\t{b}\t{int(same)}" for a, b, same in pairs]
    return "\n".join(lines) + "\n"
