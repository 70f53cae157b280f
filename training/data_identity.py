"""What a run trained on, so ``--resume`` refuses other data behind the same path.

Shards rebuilt in place with the same class count but other people resume without an error on shape
alone: the head's class centres would then mean other identities, and an identity that was trained
on could now sit in the held-out split and flatter validation. So a run records, in
RUN/data_identity.json, digests of its manifest's label maps (class -> identity, train and val) and
of its shards' sha256 list (from the manifest: nothing is re-read); a resume compares them and stops
with one line naming what changed and the fix.
"""

import hashlib
import json
from pathlib import Path

from fileio import write_json_atomic

IDENTITY_NAME = "data_identity.json"


def _digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def data_identity(manifest) -> dict:
    """{"train_labels", "val_labels", "train_shards", "val_shards": sha256 hex} of a shard manifest."""
    splits = manifest.get("splits", {})
    val = splits.get("val", {})
    return {"train_labels": _digest(manifest.get("labels", [])), "val_labels": _digest(val.get("labels", [])),
            "train_shards": _digest([s.get("sha256") for s in splits.get("train", {}).get("shards", [])]),
            "val_shards": _digest([s.get("sha256") for s in val.get("shards", [])])}


WHAT = {"train_labels": "its label map (class number -> identity) differs, so class centres would mean other people",
        "val_labels": "its held-out identities differ, so trained identities could now be validated on",
        "train_shards": "its training shards' checksums differ (rebuilt with other images)",
        "val_shards": "its validation shards' checksums differ"}


def check_data_identity(run_dir, data_dir, manifest, resume, chief=True, log=print):
    """Record the data's identity in a new run; on ``resume`` raise ValueError if it differs.

    ``manifest`` None (synthetic data): nothing to check. A run made before this record existed
    gets one now (its first resume cannot be checked, and says so).
    """
    if manifest is None:
        return
    path = Path(run_dir) / IDENTITY_NAME
    now = data_identity(manifest)
    if resume and path.is_file():
        try:
            then = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"--resume: {path} cannot be read ({error}); restore it, or start a new run") from None
        changed = [WHAT[key] for key in WHAT if then.get(key) != now[key]]
        if changed:
            raise ValueError(f"--resume: {data_dir} is not the data run {run_dir} trained on: {'; '.join(changed)} "
                             f"(checked against {path}); resume with the original shards, or start a new run")
        return
    if resume:
        log(f"warning: {path} is missing (a run from before data checks): the data cannot be checked this "
            "time; recorded now")
    if chief:
        write_json_atomic(path, now)
