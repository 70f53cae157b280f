"""The one way every stage opens an input file: a regular file only, and never more than a bound.

A FIFO given as an image blocks ``open()`` until a writer appears (forever, for a user's typo); a
link to ``/dev/zero`` or ``/dev/urandom`` reads without end. So an input is opened non-blocking
(a FIFO's open returns at once), checked with ``fstat`` on the open descriptor (no race between the
check and the read), and refused unless it is a regular file; its bytes are read up to a bound.
``NotRegularFile`` and ``InputTooLarge`` are ``OSError``\\ s, so every stage that already reports an
unreadable file (align's ``unreadable``, the builder's ``unreadable.txt``, a command's one error line)
reports these the same way, with the reason in the message.

File names may be any byte string (Linux allows any bytes but ``/`` and NUL; Python hands the ones
that are not UTF-8 over as surrogate escapes): these functions take them as they are, and
``printable_name`` is the text to show or store for one.
"""

import errno
import os
import stat

# The largest input image any stage reads: a 25-megapixel BMP is 75 MB; 512 MiB leaves room for
# any real photo while keeping a sparse or endless file from being read into memory.
MAX_IMAGE_BYTES = 512 << 20

# The most pixels a photo may have before it is decoded (align, verify.py, identify.py: one limit).
# Measured (MTCNN on one CPU thread): detection takes about 100 MB of memory per megapixel, on top
# of ~0.7 GB for TensorFlow and the networks; 25 MP (a 24 MP camera, a 12 MP phone) stays near 3 GB.
DEFAULT_MAX_MEGAPIXELS = 25.0
MB_PER_MEGAPIXEL = 100


def megapixels(text) -> float:
    """argparse type of ``--max-megapixels``: a finite number > 0."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of megapixels > 0 (e.g. {DEFAULT_MAX_MEGAPIXELS:g}), "
                                         f"got {text!r}")
    return value


def add_max_megapixels_argument(parser, per="per worker") -> None:
    """``--max-megapixels`` (default DEFAULT_MAX_MEGAPIXELS): the flag align, verify.py and identify.py share."""
    parser.add_argument("--max-megapixels", type=megapixels, default=DEFAULT_MAX_MEGAPIXELS, metavar="MP",
                        help=f"refuse images whose header says more pixels than this, before decoding them "
                             f"(default {DEFAULT_MAX_MEGAPIXELS:g}; finding faces takes about {MB_PER_MEGAPIXEL} MB "
                             f"of memory per megapixel {per}); they are reported as 'too many pixels'")


class InputFileError(OSError):
    """An input that no stage reads; ``str()`` is "PATH: why, and the fix", ``strerror`` the why."""

    def __str__(self):
        return f"{self.filename}: {self.strerror}"


class NotRegularFile(InputFileError):
    """An input that is a FIFO, a device, a socket or a folder."""


class InputTooLarge(InputFileError):
    """An input larger than the bound its stage reads."""


def _kind(mode):
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path):
    """A binary file object for the regular file at ``path`` (links followed); NotRegularFile otherwise.

    Opened with O_NONBLOCK so that a FIFO cannot block the open; the flag is cleared again for a
    regular file (where it has no effect anyway).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"{_kind(mode)}, not a regular file: replace it with the file itself, "
                                    "or remove it", printable_name(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def check_regular(path):
    """Raise NotRegularFile (an OSError) unless ``path`` is a regular file (or a link to one)."""
    open_regular(path).close()


def read_input_bytes(path, max_bytes=MAX_IMAGE_BYTES) -> bytes:
    """The bytes of the regular file at ``path``; NotRegularFile, or InputTooLarge past ``max_bytes``.

    Reads at most ``max_bytes + 1`` bytes whatever the file claims, so a file that grows while it is
    read cannot exceed the bound either.
    """
    with open_regular(path) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputTooLarge(errno.EINVAL, f"larger than {max_bytes >> 20} MiB, the most read for one input; "
                               "shrink it or leave it out", printable_name(path))
    return data


def printable_name(path) -> str:
    """``path`` as text that can always be printed and stored as UTF-8: bytes that are not UTF-8
    (a surrogate escape from ``os.listdir``, or raw bytes) shown as ``\\xNN``."""
    if isinstance(path, bytes):
        return path.decode("utf-8", "backslashreplace")
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", "backslashreplace")


def is_utf8_name(path) -> bool:
    """True when ``path`` (str or bytes) is valid UTF-8, so it can be stored in a manifest or a shard as is."""
    try:
        path.decode("utf-8") if isinstance(path, bytes) else os.fspath(path).encode("utf-8")
    except UnicodeError:
        return False
    return True
