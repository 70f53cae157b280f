"""The generic verification pair list, for any set of images (LFW's own formats are in evaluation/pairs.py).

    # generic pairs
    path_a<TAB>path_b<TAB>1      (1 = same identity, 0 = different)

The shard builder writes it for held-out identities (``val_pairs.txt``), ``evaluation.make_pairs`` for a
user's own aligned folder (listed fold by fold, so the reader's folds are the identity-disjoint ones it
made); ``evaluation.read_pairs`` reads it (blank lines and ``#`` comments are skipped there).
"""

GENERIC_HEADER = "# generic pairs"


def format_generic_pairs(pairs, comments=()):
    """Text of a generic pair list from [(path_a, path_b, is_same)]; ``comments``: lines written as ``# ...``
    after the header (the reader skips them)."""
    lines = [GENERIC_HEADER] + [f"# {c}" for c in comments] + [f"{a}\t{b}\t{int(same)}" for a, b, same in pairs]
    return "\n".join(lines) + "\n"
