"""A balanced, identity-folded pairs file from an aligned folder, so evaluate.py can score a model on one's own people.

    python -m evaluation.make_pairs --input-dir ALIGNED --output pairs.txt [--pairs-per-fold N] [--seed 0]
    python evaluate.py --model RUN --lfw-pairs pairs.txt --lfw-dir ALIGNED

The people (ALIGNED/<name>/ folders; with an align_report.jsonl, only the crops it backs) are dealt into
10 folds, no person in two folds, balancing the images per fold; each fold gets N same-person pairs
(drawn round-robin over its people, as tfrecords.pairs draws the validation pairs) and N different-person
pairs (two of its people), with no pair twice and no image paired with itself. N is --pairs-per-fold, or
as many as every fold allows (at most 300, LFW's number). Written in the generic format
(fileio/pairs_format.py) fold by fold: the reader's 10 stratified folds are exactly these, so each
threshold is chosen on people the fold being scored does not contain. Deterministic in --seed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NUM_FOLDS = 10
MAX_PAIRS_PER_FOLD = 300   # LFW View 2's number


class PairsInputError(ValueError):
    """A folder that cannot give the pairs asked for: the message says why and what to do."""


def people_images(aligned_dir, log=print) -> dict:
    """{person: [relative image paths]} of an aligned folder: its subfolders' images, sorted; with an
    align_report.jsonl, the crops it marks as training images only (fileio.align_report.crop_verdicts)."""
    from fileio import is_image_file
    from fileio.align_report import crop_verdicts

    root = Path(aligned_dir)
    if not root.is_dir():
        raise PairsInputError(f"--input-dir {root} is not a folder (expected ALIGNED/<person>/<image>, the output "
                              "of python -m align)")
    verdicts = crop_verdicts(root, log)
    people = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        images = [f"{entry.name}/{name}" for name in sorted(os.listdir(entry.path))
                  if is_image_file(name) and (verdicts is None or verdicts.get(f"{entry.name}/{name}", "") is None)]
        if images:
            people[entry.name] = images
    return people


def assign_folds(people: dict, num_folds: int, seed: int) -> list:
    """Deal the people into ``num_folds`` lists: largest first (seeded order among equals), each to the fold
    with the fewest images so far, so the folds hold about as many images and the people with two or more
    images spread over all folds first; a fold with fewer than two people is filled first, so that one
    person with many photos never fills a fold alone (a fold needs two people for a different pair)."""
    import numpy as np

    names = sorted(people)
    order = np.random.default_rng([seed, 11]).permutation(len(names))
    ranked = sorted((names[i] for i in order), key=lambda n: -len(people[n]))   # stable: the shuffle breaks ties
    folds, sizes = [[] for _ in range(num_folds)], [0] * num_folds
    for name in ranked:
        f = min(range(num_folds), key=lambda k: (len(folds[k]) >= 2, sizes[k], k))
        folds[f].append(name)
        sizes[f] += len(people[name])
    return folds


def make_folded_pairs(people: dict, pairs_per_fold=None, num_folds=NUM_FOLDS, seed=0) -> list:
    """[fold][(path_a, path_b, is_same)]: N same then N different pairs per fold, people disjoint across folds.

    pairs_per_fold: N (PairsInputError when a fold cannot give it); None: the most every fold can give, at
    most MAX_PAIRS_PER_FOLD.
    """
    from tfrecords.pairs import make_pairs

    with_two = sum(1 for images in people.values() if len(images) >= 2)
    if with_two < num_folds or len(people) < 2 * num_folds:
        raise PairsInputError(f"{num_folds} identity-disjoint folds need at least {num_folds} people with >= 2 images "
                              f"and {2 * num_folds} people in all; this folder has {with_two} and {len(people)}")
    want = pairs_per_fold or MAX_PAIRS_PER_FOLD
    drawn = []
    for f, names in enumerate(assign_folds(people, num_folds, seed)):
        pairs = make_pairs({n: list(people[n]) for n in names}, 2 * want, seed * 1000 + f)
        drawn.append(([p for p in pairs if p[2]], [p for p in pairs if not p[2]]))
    per_fold = min(min(len(same), len(different)) for same, different in drawn)
    if pairs_per_fold and per_fold < pairs_per_fold:
        raise PairsInputError(f"--pairs-per-fold {pairs_per_fold}: the smallest fold gives only {per_fold} same and "
                              f"{per_fold} different pairs; ask for at most {per_fold} (or leave it out)")
    if per_fold == 0:
        raise PairsInputError("a fold has no pair of each kind; add photos (people with >= 2 images)")
    return [[(a, b, True) for a, b, _ in same[:per_fold]] + [(a, b, False) for a, b, _ in different[:per_fold]]
            for same, different in drawn]


def write_pairs_file(folds: list, output, seed: int, source) -> Path:
    """Write the folds as one generic pair list, fold by fold (fileio.format_generic_pairs), atomically."""
    from fileio import format_generic_pairs, write_text_atomic

    per_fold = len(folds[0]) // 2
    comments = [f"{len(folds)} folds x ({per_fold} same + {per_fold} different pairs), no person in two folds; "
                f"python -m evaluation.make_pairs --input-dir {source} --seed {seed}"]
    return write_text_atomic(output, format_generic_pairs([p for fold in folds for p in fold], comments))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input-dir", required=True, metavar="ALIGNED", help="aligned folder, one subfolder per person")
    p.add_argument("--output", required=True, metavar="PAIRS", help="pairs file to write (for evaluate.py --lfw-pairs)")
    p.add_argument("--pairs-per-fold", type=int, metavar="N",
                   help=f"same (and as many different) pairs per fold (default: the most every fold allows, at "
                        f"most {MAX_PAIRS_PER_FOLD})")
    p.add_argument("--seed", type=int, default=0, help="which people go to which fold and which pairs (default 0)")
    args = p.parse_args(argv)
    if args.pairs_per_fold is not None and args.pairs_per_fold < 1:
        p.error("--pairs-per-fold must be >= 1")
    try:
        people = people_images(args.input_dir)
        folds = make_folded_pairs(people, args.pairs_per_fold, NUM_FOLDS, args.seed)
        path = write_pairs_file(folds, args.output, args.seed, args.input_dir)
    except (PairsInputError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    per_fold = len(folds[0]) // 2
    images = sum(len(v) for v in people.values())
    print(f"wrote {path}: {NUM_FOLDS} folds x ({per_fold} same + {per_fold} different pairs) = "
          f"{NUM_FOLDS * 2 * per_fold} pairs over {len(people)} people ({images} images), no person in two folds")
    print(f"evaluate a model on them: python evaluate.py --model RUN --lfw-pairs {path} --lfw-dir {args.input_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
