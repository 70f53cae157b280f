"""A RecordIO writer that follows the specification, for tests and benchmarks only (the project reads packs,
it never writes them).

It mirrors dmlc-core ``RecordIOWriter::WriteRecord`` (recordio.cc) and mxnet ``recordio.pack`` /
``MXIndexedRecordIO.write_idx``, and shares no code or constant with ``tfrecords/recordio.py``, so a
test that reads these packs back checks the reader against the specification, not against itself.
"""

import struct
from pathlib import Path

RECORDIO_MAGIC = struct.pack("<I", 0xCED7230A)


def frame(payload):
    """The bytes WriteRecord writes for one record: the payload split wherever the magic sits at a
    4-byte-aligned offset (those 4 bytes dropped; cflag 1 first part, 2 middle, 3 last), every part
    behind ``magic, lrec = cflag << 29 | length``, then zero padding to 4 bytes."""
    assert len(payload) < 1 << 29
    out, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == RECORDIO_MAGIC:
            cflag = 1 if start == 0 else 2
            out += [RECORDIO_MAGIC, struct.pack("<I", cflag << 29 | (i - start)), payload[start:i]]
            start = i + 4
    cflag = 3 if start else 0
    out += [RECORDIO_MAGIC, struct.pack("<I", cflag << 29 | (len(payload) - start)), payload[start:],
            bytes(-len(payload) % 4)]
    return b"".join(out)


def pack(label, image, id1=0, id2=0):
    """mxnet ``recordio.pack``: IRHeader 'IfQQ' (flag 0 and the scalar label, or flag = the number of
    labels, label 0 and the float32 labels after the header), then the image bytes."""
    if isinstance(label, (list, tuple)):
        return struct.pack("<IfQQ", len(label), 0.0, id1, id2) + struct.pack(f"<{len(label)}f", *label) + image
    return struct.pack("<IfQQ", 0, float(label), id1, id2) + image


def header_length(label):
    """Bytes of pack()'s header for this label (where the image starts in the payload)."""
    return 24 + (4 * len(label) if isinstance(label, (list, tuple)) else 0)


class PackWriter:
    """Writes ``DIR/NAME.rec`` + ``NAME.idx`` (``key<TAB>offset`` lines), as MXIndexedRecordIO does."""

    def __init__(self, directory, name="train"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rec_path = self.directory / f"{name}.rec"
        self.rec = open(self.rec_path, "wb")
        self.idx = open(self.directory / f"{name}.idx", "w")

    def write(self, key, payload):
        """Append one record; returns its byte offset."""
        offset = self.rec.tell()
        self.rec.write(frame(payload))
        self.idx.write(f"{key}\t{offset}\n")
        return offset

    def close(self, property_line=None):
        """Close both files; ``property_line`` (num_classes, H, W) writes the ``property`` file beside them."""
        self.rec.close()
        self.idx.close()
        if property_line:
            (self.directory / "property").write_text(",".join(str(v) for v in property_line) + "\n")
        return self.rec_path


def write_insightface_pack(directory, images, num_classes, image_size, name="train"):
    """An insightface pack with its header: record 0 ``flag=2, label=[a, b]``, images as keys 1..a-1 (in
    label order, scalar labels), identity records a..b-1 each ``[start, end)`` of one label's keys.

    images: [(label, encoded bytes)]. Returns (.rec path, {key: (label, image bytes)}).
    """
    writer = PackWriter(directory, name)
    ordered = sorted(images, key=lambda item: item[0])
    first_identity = len(ordered) + 1
    writer.write(0, pack([float(first_identity), float(first_identity + num_classes)], b""))
    keys, ranges = {}, {}
    for key, (label, image) in enumerate(ordered, 1):
        writer.write(key, pack(float(label), image))
        keys[key] = (label, image)
        start, end = ranges.get(label, (key, key))
        ranges[label] = (start, key + 1)
    for label in range(num_classes):
        start, end = ranges.get(label, (0, 0))
        writer.write(first_identity + label, pack([float(start), float(end)], b""))
    return writer.close((num_classes, *image_size)), keys


def jpeg_with_magic(jpeg, image_offset):
    """The JPEG with a comment segment (COM, FF FE) after its start-of-image marker that holds the
    RecordIO magic twice at 4-byte-aligned payload offsets (so the writer splits the record into cflag
    1, 2 and 3 parts) and once unaligned (which must stay as it is). ``image_offset``: where the JPEG
    starts in the record payload (the header length). Decoders skip comments: the image is unchanged."""
    assert jpeg[:2] == b"\xff\xd8"
    data_at = image_offset + 6                       # SOI (2) + COM marker (2) + segment length (2)
    comment = (b"c" * (-data_at % 4) + RECORDIO_MAGIC + b"abcd" + RECORDIO_MAGIC + b"yz" + RECORDIO_MAGIC
               + b"end!")
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def read_parts(rec_path):
    """[(byte offset, cflag, length)] of every part of a .rec, walked by its framing alone."""
    data = Path(rec_path).read_bytes()
    parts, position = [], 0
    while position + 8 <= len(data):
        assert data[position:position + 4] == RECORDIO_MAGIC, position
        lrec = struct.unpack_from("<I", data, position + 4)[0]
        parts.append((position, lrec >> 29, lrec & ((1 << 29) - 1)))
        position += 8 + ((lrec & ((1 << 29) - 1)) + 3) // 4 * 4
    return parts
