"""sha256 of a file, read in 1 MiB blocks (flat memory whatever the file's size)."""

import hashlib

from fileio.reading import open_regular


def sha256_of_file(path, chunk=1 << 20):
    """Hex sha256 of the regular file at ``path`` (NotRegularFile, an OSError, for a FIFO or a device:
    a FIFO would block and ``/dev/zero`` would never end)."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
