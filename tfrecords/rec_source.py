"""The builder's third source: an insightface / im2rec RecordIO pack (``train.rec`` + ``train.idx`` + ``property``).

It offers the builder the same two passes as the folder and list sources (tfrecords/sources.py):
``count_identities(skipped, wanted)`` and ``assigned_files(caps)``, plus ``load_checked`` (read one
record and check its image) and ``declared_image_size``. Both passes stream the ``.idx`` and read
only each record's first bytes (its IRHeader); image bytes are read once, when the shard is written.
Memory: one byte per key (to find duplicate and missing keys) and one counter per identity.

Which records are images (the insightface convention, as its training code reads them):
- record 0 is a header when it has flag 2, two labels ``[a, b]`` and no image bytes: images are keys
  ``1 … a−1``, and keys ``a … b−1`` are identity records (each the ``[start, end)`` of one identity's
  images; nothing to train on);
- otherwise (packs built by im2rec or insightface's RecBuilder) every ``.idx`` key is an image.
An image's label is its first IRHeader label; it must be an integer in ``[0, num_classes)``, with
num_classes from ``property`` (``num_classes,H,W``), else from the header (``b − a``).

The pack names no identities: identity names are the labels, zero-padded to the width of the
largest (``00042``), so they sort in label order and label k of an unfiltered pack stays label k.
Every record that cannot be used is reported by key (``train.rec#17``) with its reason.

Every key and every record ends in exactly one place (``_account``): packed once, or listed. An
``.idx`` that does not match its ``.rec`` can have two keys give one offset (the record would be
packed twice, and the record the second key should name lost), an image key point at an identity
record, or leave records that no line points at: the second key is listed (``packed once, under key
K``), the identity record named as such, and every record no line reaches is listed by its byte
offset (``train.rec@1234``). When the .idx offsets increase line by line (every pack mxnet writes),
this costs one 8-byte read per key; otherwise the index is sorted by offset in memory (24 bytes per key).
"""

import math
import os
import weakref
from pathlib import Path

import numpy as np

from .image_check import check_image_bytes, image_size_of_bytes
from .recordio import RecordIOError, read_header, read_index, read_property, read_record, record_end, unpack
from .sources import SourceError

FLOAT32_EXACT = 2 ** 24   # float32 holds every integer up to here; header keys beyond may be rounded


class RecSource:
    """``DIR/NAME.rec`` with ``NAME.idx`` and (optionally) ``property`` beside it."""

    def __init__(self, rec_path, log=print):
        self.rec = Path(rec_path)
        self.idx = self.rec.with_suffix(".idx")
        self.property_file = self.rec.parent / "property"
        if not self.rec.is_file():
            raise SourceError(f"{self.rec}: RecordIO file does not exist (give the pack's train.rec)")
        if not self.idx.is_file():
            raise SourceError(f"{self.idx}: index file not found beside {self.rec.name}; a RecordIO pack is "
                              f"read through its .idx (key<TAB>offset lines): copy it next to the .rec")
        self.root = self.rec.parent
        self.name = self.rec.name
        fd = os.open(self.rec, os.O_RDONLY)
        self._fd = fd
        weakref.finalize(self, os.close, fd)
        self.size = os.fstat(fd).st_size
        self.declared_classes = self.declared_image_size = self.classes_from = None
        if self.property_file.is_file():
            try:
                self.declared_classes, height, width = read_property(self.property_file)
            except ValueError as e:
                raise SourceError(str(e)) from None
            self.declared_image_size = (height, width)
            self.classes_from = f"{self.property_file.name} declares"
        self.header = self._read_header_record(log)
        if self.header:
            first, end = self.header["identities"]
            if self.declared_classes is None and end <= FLOAT32_EXACT:
                self.declared_classes, self.classes_from = end - first, "the header record has identity records for"
            elif self.declared_classes is not None and end - first != self.declared_classes:
                log(f"warning: {self.property_file} declares {self.declared_classes} classes, the header record of "
                    f"{self.rec} has {end - first} identity records; labels are checked against {self.property_file.name}")
        rec_stat, idx_stat = self.rec.stat(), self.idx.stat()
        self.description = {
            "rec": str(self.rec.resolve()), "idx": str(self.idx.resolve()),
            "property": str(self.property_file.resolve()) if self.declared_image_size else None,
            # size and time of both files: a rebuilt pack is a different input (resume and no-op checks)
            "rec_bytes": rec_stat.st_size, "rec_mtime_ns": rec_stat.st_mtime_ns,
            "idx_bytes": idx_stat.st_size, "idx_mtime_ns": idx_stat.st_mtime_ns,
            "header_record": self.header,
            "declared_classes": self.declared_classes,
            "identity_names": "the pack's integer labels, zero-padded (the pack names no identities): "
                              "identity '00042' is the pack's label 42",
            "paths": f"{self.name}#KEY: the record's key in {self.idx.name}; {self.name}@BYTE: a record no key "
                     "points at",
        }
        self._accounted = None

    # -- the header record -----------------------------------------------------------------------

    def _offsets_of(self, keys):
        """{key: offset} of the given keys, from one pass over the .idx."""
        wanted, found = set(keys), {}
        for _, key, offset in read_index(self.idx):
            if key in wanted and key not in found:
                found[key] = offset
                if len(found) == len(wanted):
                    break
        return found

    def _header_at(self, offset):
        try:
            return read_header(self._fd, offset, self.size)
        except RecordIOError:
            return None

    def _is_table_record(self, offset):
        """True for a header or identity record: flag 2, two integer labels, no image bytes."""
        found = None if offset is None else self._header_at(offset)
        return bool(found) and found[0].flag == 2 and found[1] == 0 and all(
            float(v).is_integer() for v in found[0].labels)

    def _read_header_record(self, log):
        """{"images": [1, a], "identities": [a, b]} when record 0 is an insightface header, else None."""
        offset = self._offsets_of([0]).get(0)
        if not self._is_table_record(offset):
            return None
        header, _ = self._header_at(offset)
        first_identity, end_identity = (int(v) for v in header.labels)
        if not 1 <= first_identity <= end_identity:
            return None
        most_keys = self.idx.stat().st_size // 4 + 1   # an .idx line takes at least 4 bytes ("7\t0\n")
        if end_identity > most_keys + 8:
            raise SourceError(f"{self.rec}: its header record says keys 1..{end_identity - 1} exist, but {self.idx} "
                              f"can hold at most {most_keys} lines; the header (record 0) is damaged")
        if first_identity > FLOAT32_EXACT:
            # The header stores keys as float32: above 2**24 it may be off by a few. The true first
            # identity key is where the image records end and the identity records begin.
            window = range(first_identity - 4, first_identity + 5)
            offsets = self._offsets_of([k for k in window] + [first_identity - 5])
            exact = [k for k in window if self._is_table_record(offsets.get(k))
                     and not self._is_table_record(offsets.get(k - 1))]
            if len(exact) != 1:
                raise SourceError(f"{self.rec}: the header record says images end at key {first_identity}, a float32 "
                                  "value that may be rounded, and no identity record starts near it; the pack's "
                                  "header is damaged")
            if exact[0] != first_identity:
                log(f"{self.rec}: header key {first_identity} is rounded (float32); identity records start at "
                    f"key {exact[0]}")
            first_identity = exact[0]
        return {"images": [1, first_identity], "identities": [first_identity, end_identity]}

    # -- every key and every record in one place ---------------------------------------------------

    def _mismatch_fix(self):
        return (f"{self.idx.name} does not match {self.name}: use the .idx written with this .rec, or rebuild one "
                "from it (mxnet's tools/rec2idx.py)")

    def _kind(self, key):
        """'image', 'table' (the header or an identity record) or 'other' (beyond the header's ranges)."""
        if not self.header:
            return "image"
        identities = self.header["identities"]
        if key == 0 or identities[0] <= key < identities[1]:
            return "table"
        return "other" if key >= identities[1] else "image"

    def _index_in_file_order(self):
        """(line, key, offset, kind, duplicate key line?) of every .idx line, by offset (ties in line order)."""
        previous, increasing = -1, True
        for _, _, offset in read_index(self.idx):
            if offset <= previous:
                increasing = False
                break
            previous = offset
        if increasing:   # no two lines share an offset, no line repeats a key at another offset: stream it
            for lineno, key, offset in read_index(self.idx):
                yield lineno, key, offset, self._kind(key), False
            return
        rows = np.array([(lineno, key, offset) for lineno, key, offset in read_index(self.idx)], np.int64).reshape(-1, 3)
        duplicate = np.ones(len(rows), bool)
        duplicate[np.unique(rows[:, 1], return_index=True)[1]] = False   # a key's first line is no duplicate
        for i in np.lexsort((rows[:, 0], rows[:, 2])):
            lineno, key, offset = (int(v) for v in rows[i])
            yield lineno, key, offset, self._kind(key), bool(duplicate[i])

    def _account(self):
        """({line: reason} of image lines that repeat another key's offset, [(name, reason)] of identity
        keys whose record is an image and of records no line points at). Computed once."""
        if self._accounted is not None:
            return self._accounted
        shared, reports = {}, []
        covered = 0          # every byte before this belongs to a record some line points at
        previous, owner = None, None
        for lineno, key, offset, kind, duplicate in self._index_in_file_order():
            if offset >= self.size:
                continue     # listed by the header pass (past the end)
            candidate = kind == "image" and not duplicate
            if offset == previous:
                if candidate and owner is None:
                    owner = (lineno, key)
                elif candidate and owner[1] != key:
                    shared[lineno] = (f"the same record (byte {offset}) as key {owner[1]} ({self.idx.name} line "
                                      f"{owner[0]}): packed once, under key {owner[1]}; {self._mismatch_fix()}")
                continue
            previous, owner = offset, (lineno, key) if candidate else None
            if offset > covered:
                covered = max(covered, self._unreached(covered, offset, reports))
            try:
                end = record_end(self._fd, offset, self.size)
            except RecordIOError as error:
                if "truncated" in str(error):
                    covered = self.size   # the rest of the file is this record; listed through its key
                continue                  # listed through its key by the header pass
            if kind == "table" and self.header and not self._is_table_record(offset):
                found = self._header_at(offset)
                what = f"an image (label {found[0].labels[0]:g})" if found and found[1] else "no identity record"
                reports.append((self._key_name(key), f"key {key} is an identity key by the header record's ranges "
                                f"({self.header['identities'][0]}..{self.header['identities'][1] - 1}), but its record "
                                f"at byte {offset} holds {what}: not packed; {self._mismatch_fix()}"))
            covered = max(covered, end)
        if covered < self.size:
            self._unreached(covered, self.size, reports)
        self._accounted = shared, reports
        return self._accounted

    def _unreached(self, start, stop, reports):
        """List every record in bytes [start, stop) (no .idx line points at them); returns where the walk ended."""
        position = start
        while position < stop:
            try:
                end = record_end(self._fd, position, self.size)
            except RecordIOError as error:
                reports.append((f"{self.name}@{position}", f"bytes {position}..{stop - 1} hold no record a line of "
                                f"{self.idx.name} points at, and no readable record ({error}); {self._mismatch_fix()}"))
                return stop
            found = self._header_at(position)
            if found and found[0].flag == 2 and found[1] == 0:
                what = f"an identity record {list(found[0].labels)}"
            elif found:
                what = f"an image record (label {found[0].labels[0]:g}, {found[1]} image bytes)"
            else:
                what = "a record"
            reports.append((f"{self.name}@{position}", f"{what} that no line of {self.idx.name} points at: not "
                            f"packed; {self._mismatch_fix()}"))
            position = end
        return position

    # -- the two passes --------------------------------------------------------------------------

    def _key_name(self, key):
        return f"{self.name}#{key}"

    def _image_records(self, report):
        """Yield (key, offset, label, image bytes) of every usable image record, in .idx order;
        ``report(name, reason)`` for every key and record that cannot be used (see _account)."""
        shared, unreached = self._account()
        named = report
        report = lambda key, why: named(self._key_name(key), why)
        images = self.header["images"] if self.header else None
        identities = self.header["identities"] if self.header else None
        seen = bytearray(images[1] if images else 0)   # one byte per key: duplicates and missing keys
        sparse = set()   # keys far beyond the line count (a damaged .idx): not worth a byte each below them
        for lineno, key, offset in read_index(self.idx):
            if images:
                if key == 0 or identities[0] <= key < identities[1]:
                    continue   # the header and the identity table: no images
                if key >= identities[1]:
                    report(key, f"not an image record: the header record makes keys {images[0]}..{images[1] - 1} "
                                f"images and {identities[0]}..{identities[1] - 1} identity records ({self.idx.name} "
                                f"line {lineno})")
                    continue
            if key >= len(seen) and key < max(1 << 20, 4 * lineno):
                seen.extend(bytes(max(key + 1 - len(seen), len(seen))))
            if (seen[key] if key < len(seen) else key in sparse):
                report(key, f"duplicate key in {self.idx.name} (line {lineno}); its first line is used")
                continue
            if key < len(seen):
                seen[key] = 1
            else:
                sparse.add(key)
            if lineno in shared:
                report(key, shared[lineno])
                continue
            if offset >= self.size:
                report(key, f"truncated: {self.idx.name} line {lineno} gives byte {offset}, past the end of "
                            f"{self.name} ({self.size} bytes)")
                continue
            try:
                header, image_bytes = read_header(self._fd, offset, self.size)
            except RecordIOError as e:
                report(key, f"{e} ({self.idx.name} line {lineno})")
                continue
            if image_bytes == 0 and header.flag == 2 and self.header:
                report(key, f"its record at byte {offset} is an identity record {list(header.labels)}, not an "
                            f"image ({self.idx.name} line {lineno}); {self._mismatch_fix()}")
                continue
            label = header.labels[0]
            if not math.isfinite(label) or not float(label).is_integer() or label < 0:
                report(key, f"label {label!r} is not a non-negative integer")
                continue
            label = int(label)
            if self.declared_classes is not None and label >= self.declared_classes:
                report(key, f"label {label} is outside 0..{self.declared_classes - 1} "
                            f"({self.classes_from} {self.declared_classes} classes)")
                continue
            if image_bytes == 0:
                report(key, "the record holds no image bytes")
                continue
            yield key, offset, label, image_bytes
        if images:   # every key the header promises must be in the index
            for key in range(images[0], images[1]):
                if key >= len(seen) or not seen[key]:
                    report(key, f"missing from {self.idx.name}: the header record makes keys "
                                f"{images[0]}..{images[1] - 1} images")
        for name, why in unreached:
            named(name, why)

    def _label_width(self, largest):
        return len(str(max(largest, (self.declared_classes or 1) - 1)))

    def count_identities(self, skipped, wanted=None):
        """{identity name: (images, image bytes)}; ``skipped(name, reason)`` for each unusable record."""
        counts = {}
        for key, offset, label, image_bytes in self._image_records(skipped):
            entry = counts.setdefault(label, [0, 0])
            entry[0] += 1
            entry[1] += image_bytes
        width = self._label_width(max(counts, default=0))
        named = {f"{label:0{width}d}": tuple(counts[label]) for label in sorted(counts)}
        return {name: value for name, value in named.items() if wanted is None or name in wanted}

    def assigned_files(self, caps):
        """(name, k, locator 'KEY@OFFSET', 'train.rec#KEY') of the first caps[name] images of each identity, in .idx order."""
        name_of = {int(name): name for name in caps}
        taken = dict.fromkeys(caps, 0)
        for key, offset, label, _ in self._image_records(lambda k, why: None):   # reported by count_identities
            name = name_of.get(label)
            if name is not None and taken[name] < caps[name]:
                yield name, taken[name], f"{key}@{offset}", self._key_name(key)
                taken[name] += 1
        short = [name for name in caps if taken[name] < caps[name]]
        if short:
            raise SourceError(f"{self.rec}: identity {short[0]} has {taken[short[0]]} usable records now, "
                              f"{caps[short[0]]} when counted a moment ago; is another program writing the pack?")

    # -- reading images --------------------------------------------------------------------------

    def read_image(self, locator):
        """The image bytes of a record, by its locator ``'KEY@OFFSET'`` (from assigned_files)."""
        _, image = unpack(read_record(self._fd, int(locator.partition("@")[2]), self.size))
        return image

    def load_checked(self, locator, image_size, resize=False, center_crop=False):
        """(bytes, format, change) of one record's image, as image_check.load_checked for a file."""
        return check_image_bytes(self.read_image(locator), image_size, resize, center_crop,
                                 name=f"{self.rec}#{locator.partition('@')[0]}")

    def first_image_size(self, log):
        """(H, W) of the first record whose image decodes (when no property file declares it)."""
        for key, offset, _, _ in self._image_records(lambda k, why: None):
            try:
                size = image_size_of_bytes(self.read_image(f"{key}@{offset}"), self._key_name(key))
            except (RecordIOError, ValueError):
                continue
            log(f"image size {size[0]}x{size[1]} (HxW), taken from {self._key_name(key)} (no property file); "
                "set --image-size to enforce another")
            return size
        raise SourceError(f"{self.rec}: no record holds a decodable image")
