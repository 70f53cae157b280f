"""Verification pairs over held-out (val) identities, written in the generic pair-list format.

Format (read by ``evaluation.read_pairs``)::

    # generic pairs
    path_a<TAB>path_b<TAB>1      (1 = same identity, 0 = different)

Paths are the ``image/path`` values of the val split (``identity/filename``).
"""

import numpy as np


def make_pairs(paths_by_identity, num_pairs, seed):
    """Balanced, shuffled [(path_a, path_b, is_same)] list; at most num_pairs // 2 of each kind.

    Positives are drawn round-robin over identities (one new pair per identity per round), so a
    person with hundreds of photos cannot dominate as they would under uniform sampling of all
    same-person pairs. Negatives pair two distinct identities chosen uniformly. Deterministic in seed.
    """
    rng = np.random.default_rng([seed, 7])
    names = sorted(paths_by_identity)
    for name in names:
        paths_by_identity[name] = sorted(paths_by_identity[name])
    want = num_pairs // 2
    positives = []
    used = {n: set() for n in names if len(paths_by_identity[n]) >= 2}
    active = sorted(used)
    while len(positives) < want and active:
        rng.shuffle(active)
        still = []
        for name in active:
            if len(positives) >= want:
                break
            files = paths_by_identity[name]
            k = len(files)
            while True:
                i, j = sorted(int(v) for v in rng.choice(k, 2, replace=False))
                if (i, j) not in used[name]:
                    break
            used[name].add((i, j))
            positives.append((files[i], files[j], 1))
            if len(used[name]) < k * (k - 1) // 2:
                still.append(name)
        active = still
    negatives = set()
    if len(names) >= 2:
        tries = 0
        while len(negatives) < len(positives) and tries < 50 * max(1, len(positives)):
            tries += 1
            a, b = rng.choice(len(names), 2, replace=False)
            fa = paths_by_identity[names[a]]
            fb = paths_by_identity[names[b]]
            pa, pb = fa[rng.integers(len(fa))], fb[rng.integers(len(fb))]
            negatives.add((min(pa, pb), max(pa, pb), 0))
    pairs = positives + sorted(negatives)
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


