"""Where the images come from: an aligned folder or a ``path label`` list file, streamed.

Every source offers the same two passes to the builder (tfrecords/plan.py), one identity (or one
line) at a time, never holding all paths in memory:
- ``count_identities(skipped, wanted=None) -> {name: (count, bytes)}``, reporting every input file
  it will not pack (not an image, misplaced, not backed by an alignment report) through
  ``skipped(path, reason)``;
- ``assigned_files(caps) -> iterator of (name, k, absolute path, relative path)``: the first
  ``caps[name]`` images of each identity, k = 0, 1, ...
and ``description`` (a dict for the manifest) and ``root`` (the folder paths are relative to).
"""

import array
import collections
import hashlib
import os
import re
from pathlib import Path

import numpy as np

from fileio import IMAGE_EXTENSIONS, is_image_file, is_utf8_name, text_lines
from fileio.align_report import CONTACT_SHEET_NAME, NOT_IN_REPORT, crop_verdicts

NOT_UTF8_NAME = ("its name is not valid UTF-8 (shown with \\xNN), which the shards and manifest cannot store: "
                 "rename it in UTF-8 (e.g. convmv -f latin1 -t utf-8 -r --notest FOLDER), skipped")


class SourceError(ValueError):
    """The input folder or list file cannot be used (message names the file and line)."""


class FolderSource:
    """``ROOT/<identity>/<image>``; only subdirectories are identities (a linked one is followed).

    Within an identity, files are taken in sorted name order. Every other entry is reported through
    ``skipped`` with its reason, never silently dropped: files without an image extension, files in
    a folder nested below an identity, dangling symbolic links, image files directly in ROOT (other
    top-level files, such as align_report.jsonl, are the aligner's and are not inputs). When ROOT
    holds an align_report.jsonl, an image is packed only if an aligned record writes it and its
    source is unchanged (fileio/align_report.py); every other image is reported with the reason.
    """

    def __init__(self, root, log=print):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: input folder does not exist")
        self.description = {"input_dir": str(self.root.resolve())}
        try:
            self.verdicts = crop_verdicts(self.root, log)   # None: not an aligned folder, pack every image
        except (OSError, ValueError) as e:
            raise SourceError(f"{self.root}: cannot read its alignment report ({e})") from None

    def _refusal(self, rel):
        """Why the image ``rel`` is not packed (the alignment report says so), or None."""
        if self.verdicts is None:
            return None
        return self.verdicts.get(rel, NOT_IN_REPORT)

    def identity_names(self):
        """Sorted identity (subdirectory) names whose name is UTF-8 (count_identities reports the others)."""
        return sorted(e.name for e in os.scandir(self.root)
                      if e.is_dir() and not e.name.startswith(".") and is_utf8_name(e.name))

    def _entries(self, identity):
        with os.scandir(self.root / identity) as it:
            return sorted(it, key=lambda e: e.name)

    def count(self, identity, skipped):
        """(number of image files, their total bytes); calls skipped(path, reason) for every other entry."""
        n = size = 0
        for e in self._entries(identity):
            rel = f"{identity}/{e.name}"
            if not is_utf8_name(e.name):   # the shards, manifest and pair list store names as UTF-8 text
                skipped(rel, NOT_UTF8_NAME)
            elif e.is_file() and is_image_file(e.name) and self._refusal(rel):
                skipped(rel, self._refusal(rel))
            elif e.is_file() and is_image_file(e.name):
                n += 1
                size += e.stat().st_size
            elif e.is_file():
                skipped(rel, f"not an image file ({'/'.join(IMAGE_EXTENSIONS)}), skipped")
            elif e.is_dir():
                _report_nested(e, rel, skipped)
            elif e.is_symlink() and not os.path.exists(e.path):
                skipped(rel, "dangling symbolic link (its target does not exist), skipped")
            else:   # a FIFO would block the read, a link to /dev/zero never end: never opened
                skipped(rel, "not a regular file (a FIFO, a device or a socket, or a link to one), skipped")
        return n, size

    def files(self, identity):
        """[(absolute path, 'identity/filename')] of one identity's images, sorted by name."""
        return [(e.path, f"{identity}/{e.name}") for e in self._entries(identity)
                if is_utf8_name(e.name) and e.is_file() and is_image_file(e.name)
                and not self._refusal(f"{identity}/{e.name}")]

    def count_identities(self, skipped, wanted=None):
        """{name: (count, bytes)} per identity folder (only names in ``wanted`` when given)."""
        with os.scandir(self.root) as it:
            for e in sorted(it, key=lambda e: e.name):
                if not is_utf8_name(e.name):
                    skipped(e.name + ("/" if e.is_dir() else ""), NOT_UTF8_NAME)
                elif e.is_file() and is_image_file(e.name) and e.name != CONTACT_SHEET_NAME:
                    skipped(e.name, "directly in the input folder, not in an identity folder "
                                    "(expected <identity>/<image>), skipped")
                elif e.is_symlink() and not e.is_dir() and not e.is_file():
                    skipped(e.name, "dangling symbolic link (its target does not exist), skipped")
        return {name: self.count(name, skipped) for name in self.identity_names()
                if wanted is None or name in wanted}

    def assigned_files(self, caps):
        """(name, k, absolute, rel) of the first caps[name] images of each identity, in caps' order."""
        for name, cap in caps.items():
            files = self.files(name)
            if len(files) < cap:
                raise SourceError(f"{self.root / name}: {len(files)} images now, {cap} when counted a moment "
                                  "ago; is another program writing to it? Rerun when it is done.")
            for k, (absolute, rel) in enumerate(files[:cap]):
                yield name, k, absolute, rel


def _report_nested(entry, rel, skipped):
    """Report every file under a folder nested below an identity (linked folders as one line)."""
    why = "in a folder nested below an identity folder (expected <identity>/<image>), skipped"
    if entry.is_symlink():
        skipped(rel + "/", "a linked folder nested below an identity folder (expected <identity>/<image>), skipped")
        return
    for root, dirs, files in os.walk(entry.path):
        dirs.sort()
        below = os.path.relpath(root, entry.path)
        for name in sorted(files) + sorted(d for d in dirs if os.path.islink(os.path.join(root, d))):
            path = name if below == "." else f"{below}/{name}"
            skipped(f"{rel}/{path}".replace(os.sep, "/"), why)


class ListSource:
    """A text file of ``path label`` lines.

    How a line splits (names with spaces, ``img.jpg George W Bush``, are why there is a rule):
    - a line with a tab is tab-separated: ``path<TAB>label``, or insightface's ``.lst``
      ``flag<TAB>path<TAB>label[<TAB>...]`` (3 or more fields: the path is the second, the label the
      third); spaces inside a field are part of it;
    - otherwise ``path label`` on whitespace; a line of more than two fields is ambiguous (a path or a
      label with spaces), so it is split where the part before names an existing file. A line where
      no split, or more than one, does so is listed in unreadable.txt with the fix (use a tab), never
      guessed: a guess would invent a class ("Bush") or lose the line's image.
    A listed file that does not exist is listed in unreadable.txt when the list is counted, so no
    class is created from lines whose files are all missing.

    Labels are all integers (class numbers, ordered numerically: "10" comes after "2") or all
    identity names (ordered by name); a list that mixes them is refused at the first line that
    breaks the rule, as are two spellings of one integer ("7" and "007"), because either would
    silently renumber classes. Relative paths are resolved against ``root`` (default: the list
    file's folder). Blank lines and lines starting with '#' are ignored. Within an identity, images
    keep their file order. Use ``counts_and_sizes`` once, then ``stream`` for the second pass.
    """

    def __init__(self, list_file, root=None):
        self.list_file = Path(list_file)
        if not self.list_file.is_file():
            raise SourceError(f"{self.list_file}: list file does not exist")
        self.root = Path(root) if root else self.list_file.parent
        self.description = {"list": str(self.list_file.resolve()), "list_root": str(self.root.resolve())}
        self._repeated = None   # digests of files listed more than once (see _unique_lines)

    def _absolute(self, path):
        return path if os.path.isabs(path) else str(self.root / path)

    def _split(self, line, lineno):
        """(path, label, None), or (None, None, reason) for a line that cannot be split safely."""
        if "\t" in line:
            fields = [field.strip() for field in line.split("\t")]
            path, label = fields[:2] if len(fields) == 2 else fields[1:3]
            if not path or not label:
                raise SourceError(f"{self.list_file}:{lineno}: expected 'path<TAB>label' or insightface's "
                                  f"'flag<TAB>path<TAB>label', got {line!r}")
            return path, label, None
        parts = line.split()
        if len(parts) < 2:
            raise SourceError(f"{self.list_file}:{lineno}: expected 'path label', got {line!r}")
        if len(parts) == 2:
            return parts[0], parts[1], None
        splits = [(line[:gap.start()], line[gap.end():]) for gap in re.finditer(r"\s+", line)]
        existing = [(path, label) for path, label in splits if os.path.isfile(self._absolute(path))]
        if len(existing) == 1:
            return existing[0][0], existing[0][1], None
        found = ("no split of it names an existing file" if not existing else
                 f"{len(existing)} ways to split it name existing files ({', '.join(repr(p) for p, _ in existing)})")
        return None, None, (f"{self.list_file}:{lineno}: {line!r} has {len(parts)} fields and no tab, so where the "
                            f"path ends is unclear; {found}. Separate the path from the label with a tab "
                            "(path<TAB>label, or insightface's flag<TAB>path<TAB>label)")

    def _lines(self):
        """(absolute, rel, label, lineno, None) per line, or (None, line, None, lineno, reason) for a line
        that names no file it can be sure of (see _split)."""
        label_rule = _LabelRule(self.list_file)
        for lineno, line in text_lines(self.list_file):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path, label, unclear = self._split(line, lineno)
            if unclear:
                yield None, line, None, lineno, unclear
                continue
            label_rule.check(label, lineno)
            absolute = self._absolute(path)
            try:
                rel = os.path.relpath(absolute, self.root)
            except ValueError:
                rel = path
            if rel.startswith(".."):
                rel = path
            yield absolute, rel.replace(os.sep, "/"), label, lineno, None

    def _unique_lines(self, skipped=None):
        """(absolute, rel, label, size in bytes) of _lines without a file listed a second time (by its
        resolved path: ``a.jpg`` and ``./a.jpg`` or a link to it are one file), each reported through
        ``skipped`` with the line that listed it first; a line that cannot be split or names a file
        that does not exist is reported too (so its label gets no class from it).

        Packed twice, one image would count double (or, under two labels, be a positive and a negative of
        two classes). A first pass keeps one 8-byte digest per line (not the paths), so a list of millions
        of images costs megabytes; only the repeated digests are kept for the second pass.
        """
        if self._repeated is None:
            digests = array.array("Q", (_path_digest(absolute) for absolute, *_ in self._lines() if absolute))
            values, counts = np.unique(np.frombuffer(digests, np.uint64), return_counts=True)
            self._repeated = set(values[counts > 1].tolist())
        first = {}
        for absolute, rel, label, lineno, unclear in self._lines():
            if unclear:
                if skipped is not None:
                    skipped(rel, unclear)
                continue
            try:
                size = os.stat(absolute).st_size
            except OSError as error:
                if skipped is not None:
                    skipped(rel, f"{self.list_file}:{lineno}: {error.strerror or error} (label {label!r}); fix the "
                                 f"path (relative paths are read from {self.root}) or remove the line")
                continue
            digest = _path_digest(absolute) if self._repeated else None
            if digest in self._repeated:
                if digest in first:
                    where, first_label = first[digest]
                    if skipped is not None:
                        other = "" if label == first_label else f" with label {first_label!r}, not {label!r}"
                        skipped(rel, f"{self.list_file}:{lineno}: the same file as line {where}{other} (listed twice); "
                                     "packed once, remove the repeated line")
                    continue
                first[digest] = (lineno, label)
            yield absolute, rel, label, size

    def counts_and_sizes(self, skipped):
        """{label: [count, bytes]} over the list (one entry per identity, not per image)."""
        counts = {}
        for _, _, label, size in self._unique_lines(skipped):
            entry = counts.setdefault(label, [0, 0])
            entry[0] += 1
            entry[1] += size
        return counts

    def stream(self):
        """Yield (absolute path, relative path, label) in file order (a file listed again: its first line only)."""
        return ((absolute, rel, label) for absolute, rel, label, _ in self._unique_lines())

    def count_identities(self, skipped, wanted=None):
        """{label: (count, bytes)} over the list (only labels in ``wanted`` when given)."""
        return {k: tuple(v) for k, v in self.counts_and_sizes(skipped).items() if wanted is None or k in wanted}

    def assigned_files(self, caps):
        """(label, k, absolute, rel) of the first caps[label] lines of each label, in file order."""
        seen = collections.Counter()
        for absolute, rel, name in self.stream():
            if name in caps and seen[name] < caps[name]:
                yield name, seen[name], absolute, rel
                seen[name] += 1


def _path_digest(absolute):
    """64-bit digest of a file's resolved path (links and ``.`` resolved; any name bytes)."""
    return int.from_bytes(hashlib.blake2b(os.fsencode(os.path.realpath(absolute)), digest_size=8).digest(), "little")


def is_integer_label(label):
    """True for "0", "17", "-3": a class number, ordered numerically (sort_identities)."""
    return label.lstrip("-").isdigit()


class _LabelRule:
    """One kind of label per list file: integers or names, and one spelling per integer."""

    def __init__(self, list_file):
        self.list_file = list_file
        self.first = None          # (label, line) that fixed the kind
        self.spellings = {}        # int value -> (label, line)

    def check(self, label, lineno):
        if self.first is None:
            self.first = (label, lineno)
        first_label, first_line = self.first
        if is_integer_label(label) != is_integer_label(first_label):
            kinds = ("an integer", "a name") if is_integer_label(first_label) else ("a name", "an integer")
            raise SourceError(f"{self.list_file}:{lineno}: label {label!r} is {kinds[1]}, but line {first_line} "
                              f"has {kinds[0]} ({first_label!r}); use integer class numbers on every line or "
                              "identity names on every line (mixing them would renumber the integers by text order)")
        if is_integer_label(label):
            earlier = self.spellings.setdefault(int(label), (label, lineno))
            if earlier[0] != label:
                raise SourceError(f"{self.list_file}:{lineno}: label {label!r} is the class number of {earlier[0]!r} "
                                  f"(line {earlier[1]}) written differently; write each class number one way")


def sort_identities(names):
    """Sorted identity names; all-integer labels sort numerically (so labels 0..C-1 keep their values)."""
    names = list(names)
    if names and all(is_integer_label(n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def read_people_file(path):
    """Identity names from an LFW people file (``name<TAB>count``; lone fold-size numbers skipped) or one name per line."""
    names = set()
    for _, line in text_lines(path):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) == 1 and fields[0].isdigit():
            continue  # LFW fold header / count line
        names.add(fields[0])
    if not names:
        raise SourceError(f"{path}: no identity names found (expected 'name' or 'name<TAB>count' lines)")
    return names
