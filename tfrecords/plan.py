"""Planning a build: which identities, which images, which shard each image goes to.

Streaming: identities are counted one folder (or one list line) at a time, then each identity's files
are assigned to shards and spilled to per-shard plan files ``.build/plan/<split>-<i>.tsv``; memory holds
C names and counts, never the whole dataset. Identities are laid out in a seeded random order, so
every shard mixes many identities (the writer shuffles each shard, the reader shuffles further).
"""

import bisect
import collections
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from .sources import sort_identities


class BuildError(RuntimeError):
    """The build cannot go on (message names the file and the fix)."""


def count_identities(source, people, skipped):
    """{name: (count, bytes)} of every identity of ``source`` (only those in ``people`` when given)."""
    return source.count_identities(skipped, wanted=people)


def shard_counts(totals, est_bytes, num_shards=None, shard_size_mb=100.0):
    """{split: number of shards}: --num-shards train shards, else shards of about --shard-size-mb;
    val shards are sized like train's. Never more shards than images, never fewer than one."""
    if num_shards:
        per_shard = max(1.0, est_bytes["train"] / num_shards)
        shards = {"train": min(num_shards, max(1, totals["train"]))}
    else:
        per_shard = shard_size_mb * 1e6
        shards = {"train": min(max(1, math.ceil(est_bytes["train"] / per_shard)), max(1, totals["train"]))}
    if "val" in totals:
        shards["val"] = min(max(1, math.ceil(est_bytes["val"] / per_shard)), totals["val"])
    return shards


# --val-identities auto (the default): a validation split when there are enough people to spare some.
# 50 identities with >= 2 images give 5 held-out people at least: fewer would measure noise (a few dozen
# same-person pairs), and a user with 30 people needs every one of them for training.
AUTO_VAL_MIN_IDENTITIES = 50
AUTO_VAL_FRACTION, AUTO_VAL_MIN, AUTO_VAL_MAX = 0.05, 5, 200


def auto_val_count(eligible):
    """Held-out identities --val-identities auto takes from ``eligible`` identities with >= 2 images: 5 %
    of them (5 to 200) from 50 up, else none."""
    if eligible < AUTO_VAL_MIN_IDENTITIES:
        return 0
    return min(AUTO_VAL_MAX, max(AUTO_VAL_MIN, round(AUTO_VAL_FRACTION * eligible)))


def describe_auto_val(eligible, num_val):
    """The line the builder prints for --val-identities auto."""
    if num_val:
        return (f"validation: held out {num_val} of the {eligible} identities with >= 2 images (identity-disjoint; "
                f"--val-identities auto takes {AUTO_VAL_FRACTION:.0%} of them when there are >= "
                f"{AUTO_VAL_MIN_IDENTITIES}); --val-identities 0 trains on all of them")
    return (f"no validation split: only {eligible} identities have >= 2 images (--val-identities auto holds some out "
            f"from {AUTO_VAL_MIN_IDENTITIES} up); --val-identities N holds out N anyway, or validate with "
            f"train.py --val-pairs/--val-dir")


def select_identities(counts, *, min_images=1, max_images_per_class=None, max_classes=None,
                      val_identities=0.0, seed=0):
    """Apply the identity filters; returns (train names, val names, {name: capped count}).

    Order: keep identities with >= min_images images; keep the first max_classes of them
    (sorted order; train + val together); cap each at max_images_per_class (first files);
    then hold out val identities, drawn (seeded) among those with >= 2 images so that
    same-person pairs exist. val_identities < 1 is a fraction of the kept identities, >= 1 a count,
    "auto" auto_val_count's. Both lists come back sorted.
    """
    kept = [n for n in sort_identities(counts) if counts[n][0] >= max(1, min_images)]
    if max_classes:
        kept = kept[:max_classes]
    cap = max_images_per_class or None
    capped = {n: min(counts[n][0], cap) if cap else counts[n][0] for n in kept}
    candidates = [n for n in kept if capped[n] >= 2]
    if val_identities == "auto":
        val_identities = auto_val_count(len(candidates))
    if val_identities < 0:
        raise BuildError(f"--val-identities must be >= 0, got {val_identities}")
    num_val = round(val_identities * len(kept)) if val_identities < 1 else int(val_identities)
    if val_identities > 0 and num_val == 0:
        num_val = 1
    if num_val > len(candidates):
        raise BuildError(f"--val-identities asks for {num_val} held-out identities but only "
                         f"{len(candidates)} identities have >= 2 images; lower it")
    rng = np.random.default_rng([seed, 1])
    val = set(rng.choice(candidates, num_val, replace=False).tolist()) if num_val else set()
    train = [n for n in kept if n not in val]
    if not train:
        raise BuildError("no training identity left after the filters "
                         f"(min_images={min_images}, max_classes={max_classes}, val={num_val})")
    return train, sort_identities(val), capped


class _PlanWriter:
    """Per-shard plan files ``.build/plan/<split>-<i>.tsv`` (label, identity, rel, abs), spilled in batches."""

    def __init__(self, plan_dir, flush_every=50_000):
        self.plan_dir = Path(plan_dir)
        self.buffers = collections.defaultdict(list)
        self.buffered = 0
        self.flush_every = flush_every

    def add(self, key, label, identity, rel, absolute):
        for field in (identity, rel, absolute):
            if "\t" in field or "\n" in field:
                raise BuildError(f"{absolute}: tab or newline in a path or identity name is not supported; rename it")
        self.buffers[key].append(f"{label}\t{identity}\t{rel}\t{absolute}\n")
        self.buffered += 1
        if self.buffered >= self.flush_every:
            self.flush()

    def flush(self):
        for key, lines in self.buffers.items():
            with open(self.plan_dir / f"{key}.tsv", "a", encoding="utf-8") as f:
                f.writelines(lines)
        self.buffers.clear()
        self.buffered = 0


def _shard_bounds(total, num_shards):
    """First global position of each shard (even split of `total` positions)."""
    return [(j * total) // num_shards for j in range(num_shards)]


def write_plan(source, splits, capped, num_shards, plan_dir, seed):
    """Assign every selected image to (split, shard) and spill the assignment to plan files.

    splits: {split: sorted names}. Identities are laid out in a seeded random order and cut
    into num_shards[split] equal runs of positions. Returns the hex sha256 of every planned file's
    size and modification time (in plan order): the plan files hold names, this holds contents,
    so a file replaced under the same name changes the build's fingerprint.
    """
    if plan_dir.exists():
        shutil.rmtree(plan_dir)
    plan_dir.mkdir(parents=True)
    where = {}  # name -> (split, label, first position)
    bounds = {}
    for split, names in splits.items():
        rng = np.random.default_rng([seed, 2, len(split)])
        position = 0
        for i in rng.permutation(len(names)):
            where[names[i]] = (split, int(i), position)
            position += capped[names[i]]
        bounds[split] = _shard_bounds(position, num_shards[split])
    writer = _PlanWriter(plan_dir)
    for split in splits:  # touch every plan file, so empty shards still exist
        for j in range(num_shards[split]):
            (plan_dir / f"{split}-{j:05d}.tsv").touch()

    def add(name, k, rel, absolute):
        split, label, first = where[name]
        shard = bisect.bisect_right(bounds[split], first + k) - 1
        writer.add(f"{split}-{shard:05d}", label, name, rel, absolute)

    caps = {name: capped[name] for names in splits.values() for name in names}
    contents = hashlib.sha256()
    for name, k, absolute, rel in source.assigned_files(caps):
        add(name, k, rel, absolute)
        try:
            stat = os.stat(absolute)
            contents.update(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:  # listed as unreadable when the shard is written
            contents.update(f"{rel}\tmissing\n".encode())
    writer.flush()
    return contents.hexdigest()


def read_plan(path):
    """[[label, identity, rel, absolute], ...] of one plan file."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


def plan_fingerprint(options, plan_dir, contents):
    """sha256 over the options, every plan file and the planned files' contents stamp (write_plan):
    equal fingerprints mean the same shards."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    digest.update(contents.encode())
    for path in sorted(plan_dir.iterdir()):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()
