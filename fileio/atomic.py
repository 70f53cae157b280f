"""Atomic file writes: the file at ``path`` is either the old one or the whole new one, never half.

Everything is written under a temporary name in the same folder (so the final rename is atomic on
one filesystem) that keeps the real suffix (``model.save`` and ``np.savez`` look at it), then renamed
over ``path``; on any error the temporary file is removed and ``path`` is untouched.
"""

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path

# Write failures that mean "no room": a full disk, a quota, a file-size limit. Every stage stops on
# them with one line naming the file and saying that a rerun resumes.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def atomic_output(path, tmp_dir=None):
    """Yield a temporary path to write ``path`` through; renamed over ``path`` when the block ends.

    ``tmp_dir``: where the temporary file lives (default: ``path``'s folder; it must be on the same
    filesystem). Works for a file or a folder (an existing folder at ``path`` is replaced).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tmp_dir or path.parent) / f".{path.name}.tmp-{os.getpid()}{path.suffix}"
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        if isinstance(error, OSError) and error.filename is None and error.errno is not None:
            # A failed write() names no file (disk full: "[Errno 28] No space left on device"): name the target.
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def write_bytes_atomic(path, data, fsync=False, tmp_dir=None):
    """Write ``data`` (bytes) to ``path`` atomically; ``fsync`` also forces it to disk before the rename."""
    with atomic_output(path, tmp_dir) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text_atomic(path, text, fsync=False):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def write_json_atomic(path, obj, indent=1, sort_keys=False, fsync=True):
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept, trailing newline) to ``path`` atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    return write_text_atomic(path, text, fsync=fsync)
