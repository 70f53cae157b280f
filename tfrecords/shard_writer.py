"""Writing shards: one TFRecord file per plan file, images read and checked on a thread pool.

A shard is written under a temporary name, fsynced, hashed and recorded in ``.build/done/`` before
it is renamed into place, so a rerun after kill -9 keeps every complete shard (``load_done``) and
rewrites the rest.
"""

import collections
import hashlib
import json
import os
import signal

import numpy as np

from fileio import sha256_of_file

from .image_check import WrongImageSize
from .plan import BuildError, read_plan

KILL_HOOK_ENV = "TFRECORDS_BUILD_KILL_AFTER_IMAGES"  # test hook: SIGKILL self after N images written


class KillHook:
    """Test hook (env TFRECORDS_BUILD_KILL_AFTER_IMAGES=N): SIGKILL this process after N images."""

    def __init__(self):
        value = os.environ.get(KILL_HOOK_ENV)
        self.remaining = int(value) if value else None

    def tick(self):
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


def write_shard(plan_file, out_path, load, executor, progress, kill_hook, seed, keep_paths, window):
    """Write one shard's images to a temporary file beside ``out_path``; returns (done record, temp path).

    load: ``load(absolute) -> (encoded bytes, format, change)`` for a plan entry's absolute path or
    record locator (image_check.load_checked for files, RecSource.load_checked for a pack), run on
    ``executor``; change is None, "resized" or "center_cropped".

    The caller records the shard as done, then renames the temporary file to ``out_path``, so a shard
    is visible only when complete. Images are read ahead by ``executor`` (``window`` in flight) and
    shuffled with a seed derived from the shard's name; an unreadable image goes into the record's
    ``unreadable`` list with its reason, never silently dropped.
    """
    import tensorflow as tf

    from .features import make_example

    entries = read_plan(plan_file)
    rng = np.random.default_rng([seed, 3, int.from_bytes(hashlib.sha256(out_path.name.encode()).digest()[:4], "little")])
    entries = [entries[i] for i in rng.permutation(len(entries))]  # mix identities inside the shard
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    record = {"file": out_path.name, "num_images": 0, "formats": {}, "resized": 0, "center_cropped": 0,
              "unreadable": [], "class_counts": {}, "paths": [] if keep_paths else None}
    pending = collections.deque()
    it = iter(entries)

    def submit():
        entry = next(it, None)
        if entry is not None:
            pending.append((entry, executor.submit(load, entry[3])))

    for _ in range(window):
        submit()
    try:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            while pending:
                (label, identity, rel, _absolute), future = pending.popleft()
                submit()
                try:
                    data, fmt, change = future.result()
                except WrongImageSize as e:
                    raise BuildError(str(e)) from None
                except Exception as e:  # unreadable input: listed in unreadable.txt, never dropped silently
                    record["unreadable"].append([rel, f"{type(e).__name__}: {e}"])
                    progress.update(1)
                    continue
                writer.write(make_example(data, fmt, int(label), identity, rel))
                record["num_images"] += 1
                record["formats"][fmt] = record["formats"].get(fmt, 0) + 1
                if change:
                    record[change] += 1
                record["class_counts"][label] = record["class_counts"].get(label, 0) + 1
                if keep_paths:
                    record["paths"].append([identity, rel])
                progress.update(1)
                kill_hook.tick()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        for _, future in pending:
            future.cancel()
        tmp.unlink(missing_ok=True)
        raise
    record["bytes"] = tmp.stat().st_size
    record["sha256"] = sha256_of_file(tmp)
    return record, tmp


def load_done(done_path, final, fingerprint):
    """The done record of a complete shard from an earlier run, or None (then it is rewritten)."""
    if not done_path.is_file() or not final.is_file():
        return None
    try:
        with open(done_path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("fingerprint") != fingerprint or final.stat().st_size != record.get("bytes"):
        return None
    return record
