"""Where the images come from: an aligned folder or a ``path label`` list file, streamed.

Every source offers the same two passes to the builder (tfrecords/plan.py), one identity (or one
line) at a time, never holding all paths in memory:
- ``count_identities(skipped, wanted=None) -> {name: (count, bytes)}``, reporting every input file
  that is not an image through ``skipped(path, reason)``;
- ``assigned_files(caps) -> iterator of (name, k, absolute path, relative path)``: the first
  ``caps[name]`` images of each identity, k = 0, 1, ...
and ``description`` (a dict for the manifest) and ``root`` (the folder paths are relative to).
"""

import collections
import os
from pathlib import Path

from fileio import IMAGE_EXTENSIONS, is_image_file, text_lines


class SourceError(ValueError):
    """The input folder or list file cannot be used (message names the file and line)."""


class FolderSource:
    """``ROOT/<identity>/<image>``; only subdirectories are identities, top-level files are ignored.

    Within an identity, files are taken in sorted name order; files without a .jpg/.jpeg/.png
    extension are reported through ``skipped`` (never silently dropped).
    """

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: input folder does not exist")
        self.description = {"input_dir": str(self.root.resolve())}

    def identity_names(self):
        """Sorted identity (subdirectory) names."""
        return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))

    def _entries(self, identity):
        with os.scandir(self.root / identity) as it:
            return sorted((e for e in it if e.is_file()), key=lambda e: e.name)

    def count(self, identity, skipped):
        """(number of image files, their total bytes); calls skipped(path, reason) for other files."""
        n = size = 0
        for e in self._entries(identity):
            if is_image_file(e.name):
                n += 1
                size += e.stat().st_size
            elif not e.name.startswith("."):
                skipped(f"{identity}/{e.name}", f"not an image file ({'/'.join(IMAGE_EXTENSIONS)}), skipped")
        return n, size

    def files(self, identity):
        """[(absolute path, 'identity/filename')] of one identity's images, sorted by name."""
        return [(e.path, f"{identity}/{e.name}") for e in self._entries(identity)
                if is_image_file(e.name)]

    def count_identities(self, skipped, wanted=None):
        """{name: (count, bytes)} per identity folder (only names in ``wanted`` when given)."""
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


class ListSource:
    """A text file of ``path label`` lines (label = identity name or integer; last field on the line).

    Relative paths are resolved against ``root`` (default: the list file's folder). Blank lines
    and lines starting with '#' are ignored. Within an identity, images keep their file order.
    Use ``counts_and_sizes`` once, then ``stream`` for the second pass.
    """

    def __init__(self, list_file, root=None):
        self.list_file = Path(list_file)
        if not self.list_file.is_file():
            raise SourceError(f"{self.list_file}: list file does not exist")
        self.root = Path(root) if root else self.list_file.parent
        self.description = {"list": str(self.list_file.resolve()), "list_root": str(self.root.resolve())}

    def _lines(self):
        for lineno, line in text_lines(self.list_file):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2:
                raise SourceError(f"{self.list_file}:{lineno}: expected 'path label', got {line!r}")
            path, label = parts
            absolute = path if os.path.isabs(path) else str(self.root / path)
            try:
                rel = os.path.relpath(absolute, self.root)
            except ValueError:
                rel = path
            if rel.startswith(".."):
                rel = path
            yield absolute, rel.replace(os.sep, "/"), label

    def counts_and_sizes(self, skipped):
        """{label: [count, bytes]} over the list (one entry per identity, not per image)."""
        counts = {}
        for absolute, rel, label in self._lines():
            try:
                size = os.stat(absolute).st_size
            except OSError:
                size = 0  # reported as unreadable when the builder reads it
            entry = counts.setdefault(label, [0, 0])
            entry[0] += 1
            entry[1] += size
        return counts

    def stream(self):
        """Yield (absolute path, relative path, label) in file order."""
        return self._lines()

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


def sort_identities(names):
    """Sorted identity names; all-integer labels sort numerically (so labels 0..C-1 keep their values)."""
    names = list(names)
    if names and all(n.lstrip("-").isdigit() for n in names):
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
