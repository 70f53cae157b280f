"""MXNet RecordIO (``.rec`` + ``.idx``), read from the format's specification: no mxnet.

The format (dmlc-core ``recordio.h``/``recordio.cc``, mxnet ``python/mxnet/recordio.py``):

- ``.idx``: text, one ``key<TAB>byte offset`` line per record (keys are integers).
- ``.rec``: a sequence of parts, each ``uint32 magic 0xced7230a``, ``uint32 lrec``, ``length`` bytes,
  zero padding to a multiple of 4 bytes; all little-endian. ``cflag = lrec >> 29`` and
  ``length = lrec & (2**29 - 1)``. cflag 0 is a whole record. The writer splits a record wherever
  the magic appears at a 4-byte-aligned offset of its data, dropping those 4 bytes: cflag 1 starts
  the record, 2 continues it, 3 ends it; the reader joins the parts with the magic put back between
  them (so readers never mistake data for a record boundary).
- A record's payload (mxnet ``pack``): ``IRHeader`` packed ``'IfQQ'`` (uint32 flag, float32 label,
  uint64 id, uint64 id2; 24 bytes); when ``flag > 0``, ``flag`` float32 labels follow and ``label``
  is unused; the rest is the image file's bytes (JPEG, sometimes PNG).

Everything here reads with ``os.pread`` on one file descriptor: no seek state, so worker threads
share it, and the GIL is released while the kernel copies. Errors are RecordIOError with a reason
(the caller adds the file and key, which it knows).
"""

import os
import struct
from typing import NamedTuple

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_MASK = (1 << 29) - 1
CFLAG_WHOLE, CFLAG_START, CFLAG_MIDDLE, CFLAG_END = 0, 1, 2, 3
PART_HEADER = struct.Struct("<II")      # magic, lrec
IR_HEADER = struct.Struct("<IfQQ")      # flag, label, id, id2: 24 bytes, the same as mxnet's native 'IfQQ' on x86/ARM
# Enough for the part header, the IRHeader and 4 float labels: one pread answers the header pass
# for every insightface record (they carry 1 or 2 labels).
HEADER_PROBE_BYTES = PART_HEADER.size + IR_HEADER.size + 16


class RecordIOError(ValueError):
    """One record cannot be read; the message says why (byte offsets, what was found)."""


class IRHeader(NamedTuple):
    """The image record header. ``labels``: (label,) when flag == 0, else the ``flag`` float32 labels."""

    flag: int
    labels: tuple
    id: int
    id2: int


def _part(fd, position, file_size):
    """(cflag, length) of the part header at ``position``; RecordIOError if there is none."""
    if position + PART_HEADER.size > file_size:
        raise RecordIOError(f"truncated: a record header at byte {position} would end past the end of the "
                            f"file ({file_size} bytes)")
    magic, lrec = PART_HEADER.unpack(os.pread(fd, PART_HEADER.size, position))
    if magic != MAGIC:
        raise RecordIOError(f"no RecordIO magic at byte {position} (found 0x{magic:08x}, expected 0x{MAGIC:08x})")
    return lrec >> 29, lrec & LENGTH_MASK


def _padded(length):
    return (length + 3) & ~3


def read_record(fd, offset, file_size):
    """The payload (bytes) of the record whose first part starts at ``offset``, split parts joined.

    fd: an open file descriptor of the .rec; file_size: its size in bytes. Raises RecordIOError when
    the offset holds no magic, the first part is not a record start (cflag 0 or 1), a continuation
    is missing, or the record runs past the end of the file (a truncated file).
    """
    parts = []
    position = offset
    while True:
        cflag, length = _part(fd, position, file_size)
        expected = (CFLAG_WHOLE, CFLAG_START) if not parts else (CFLAG_MIDDLE, CFLAG_END)
        if cflag not in expected:
            where = "start of a record" if not parts else f"continuation of the record at byte {offset}"
            raise RecordIOError(f"part at byte {position} has cflag {cflag}, not a {where} "
                                f"(cflag {' or '.join(map(str, expected))})")
        end = position + PART_HEADER.size + length
        if end > file_size:
            raise RecordIOError(f"truncated (or a damaged length): the record at byte {offset} ends {end - file_size} "
                                f"bytes past the end of the file ({file_size} bytes)")
        parts.append(os.pread(fd, length, position + PART_HEADER.size))
        if cflag in (CFLAG_WHOLE, CFLAG_END):
            return parts[0] if len(parts) == 1 else MAGIC_BYTES.join(parts)
        position += PART_HEADER.size + _padded(length)


def record_end(fd, offset, file_size):
    """The byte just past the record whose first part starts at ``offset`` (its parts and their padding),
    reading only the part headers. RecordIOError as read_record."""
    position, first = offset, True
    while True:
        cflag, length = _part(fd, position, file_size)
        expected = (CFLAG_WHOLE, CFLAG_START) if first else (CFLAG_MIDDLE, CFLAG_END)
        if cflag not in expected:
            raise RecordIOError(f"part at byte {position} has cflag {cflag}, not a "
                                f"{'start of a record' if first else 'continuation'}")
        position += PART_HEADER.size + _padded(length)
        if position > file_size + 3:
            raise RecordIOError(f"truncated: the record at byte {offset} ends past the end of the file")
        if cflag in (CFLAG_WHOLE, CFLAG_END):
            return min(position, file_size)
        first = False


def unpack(payload):
    """(IRHeader, image bytes) of a record payload (mxnet ``recordio.unpack``)."""
    if len(payload) < IR_HEADER.size:
        raise RecordIOError(f"record of {len(payload)} bytes is shorter than the {IR_HEADER.size}-byte IRHeader")
    flag, label, id1, id2 = IR_HEADER.unpack_from(payload)
    start = IR_HEADER.size
    if flag > 0:
        end = start + 4 * flag
        if end > len(payload):
            raise RecordIOError(f"IRHeader flag {flag} announces {flag} labels ({4 * flag} bytes) but the record "
                                f"has {len(payload) - start} bytes after its header")
        labels = struct.unpack_from(f"<{flag}f", payload, start)
        start = end
    else:
        labels = (label,)
    return IRHeader(flag, labels, id1, id2), payload[start:]


def read_header(fd, offset, file_size):
    """(IRHeader, image length in bytes) of the record at ``offset``, reading only its first bytes.

    One pread for a whole record (cflag 0) whose header fits HEADER_PROBE_BYTES; a split record or a
    long label array falls back to read_record. The image bytes themselves are not checked here.
    """
    probe = os.pread(fd, HEADER_PROBE_BYTES, offset)
    if len(probe) >= PART_HEADER.size:
        magic, lrec = PART_HEADER.unpack_from(probe)
        cflag, length = lrec >> 29, lrec & LENGTH_MASK
        if magic == MAGIC and cflag == CFLAG_WHOLE and offset + PART_HEADER.size + length <= file_size:
            payload = probe[PART_HEADER.size:PART_HEADER.size + length]
            if len(payload) >= IR_HEADER.size:
                flag = IR_HEADER.unpack_from(payload)[0]
                needed = IR_HEADER.size + 4 * flag
                if needed <= len(payload):
                    header, _ = unpack(payload[:needed])
                    return header, length - needed
    # Every unusual case (split, truncated, no magic, many labels) goes through the full reader,
    # which either succeeds or says precisely what is wrong.
    header, image = unpack(read_record(fd, offset, file_size))
    return header, len(image)


def iter_records(path, chunk_bytes=1 << 22):
    """Yield (offset, payload) of every record of a .rec in file order, scanning it sequentially.

    Independent of the .idx (no seeks): what a plain sequential read of the file costs, plus framing.
    Raises RecordIOError at the first damaged part.
    """
    with open(path, "rb", buffering=0) as f:
        buffer = b""
        base = 0            # file offset of buffer[0]
        position = 0        # parse position within buffer
        record_start, parts = None, []
        while True:
            if len(buffer) - position < PART_HEADER.size:
                more = f.read(chunk_bytes)
                if not more:
                    if position != len(buffer) or parts:
                        raise RecordIOError(f"truncated: {len(buffer) - position} stray bytes at byte "
                                            f"{base + position} (end of file inside a record)")
                    return
                buffer, base, position = buffer[position:] + more, base + position, 0
                continue
            magic, lrec = PART_HEADER.unpack_from(buffer, position)
            if magic != MAGIC:
                raise RecordIOError(f"no RecordIO magic at byte {base + position} (found 0x{magic:08x})")
            cflag, length = lrec >> 29, lrec & LENGTH_MASK
            need = PART_HEADER.size + _padded(length)
            while len(buffer) - position < need:
                more = f.read(max(chunk_bytes, need))
                if not more:
                    raise RecordIOError(f"truncated: the part at byte {base + position} needs {need} bytes, "
                                        f"the file has {len(buffer) - position} left")
                buffer, base, position = buffer[position:] + more, base + position, 0
            data = buffer[position + PART_HEADER.size:position + PART_HEADER.size + length]
            if cflag in (CFLAG_WHOLE, CFLAG_START) and parts:
                raise RecordIOError(f"part at byte {base + position} starts a record inside the record at "
                                    f"byte {record_start}")
            if cflag in (CFLAG_MIDDLE, CFLAG_END) and not parts:
                raise RecordIOError(f"part at byte {base + position} continues a record that never started")
            if not parts:
                record_start = base + position
            parts.append(data)
            position += need
            if cflag in (CFLAG_WHOLE, CFLAG_END):
                yield record_start, parts[0] if len(parts) == 1 else MAGIC_BYTES.join(parts)
                parts = []


class IdxFormatError(ValueError):
    """A malformed .idx line (message names the file and line)."""


def read_index(path):
    """Yield (line number, key, byte offset) of each ``key<TAB>offset`` line of a .idx, one line at a time.

    Blank lines are skipped; anything else that is not two integers raises IdxFormatError naming the line.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            fields = raw.split()
            if not fields:
                continue
            try:
                key, offset = int(fields[0]), int(fields[1])
                if len(fields) != 2 or key < 0 or offset < 0:
                    raise ValueError
            except (ValueError, IndexError):
                shown = raw[:80].decode("utf-8", "backslashreplace").rstrip()
                raise IdxFormatError(f"{path}:{lineno}: expected 'key<TAB>byte offset' (two non-negative integers), "
                                  f"got {shown!r}; is this the .idx written with the .rec?") from None
            yield lineno, key, offset


def read_property(path):
    """(num_classes, height, width) from an insightface ``property`` file (one line ``C,H,W``)."""
    text = open(path, encoding="utf-8", errors="replace").read().strip()
    try:
        num_classes, height, width = (int(v) for v in text.split(","))
        if num_classes < 1 or height < 1 or width < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"{path}: expected one line 'num_classes,height,width' of positive integers "
                         f"(e.g. 85742,112,112), got {text[:80]!r}") from None
    return num_classes, height, width
