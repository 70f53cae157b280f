"""``manifest.json``: what a shard directory holds, written last by the builder.

Layout (``format_version`` 1)::

    {
      "format_version": 1,
      "image_size": [H, W],               # every image is exactly H x W
      "num_classes": C,                   # train classes
      "labels": [name_0, ..., name_C-1],  # label -> identity name (sorted names)
      "class_counts": [n_0, ...],         # train images per label
      "num_images": N,                    # train images
      "splits": {
        "train": {"num_images": N, "num_classes": C, "formats": {"jpeg": N},
                  "shards": [{"file": "train-00000-of-00004.tfrecord",
                              "num_images": n, "bytes": b, "sha256": hex}, ...]},
        "val":   {... , "labels": [held-out identity names]}      # optional
      },
      "val_pairs": "val_pairs.txt" | null,
      "unreadable": {"count": k, "file": "unreadable.txt" | null},
      "center_crop": [H, W],              # only when --center-crop was asked (splits count "center_cropped")
      ...  # source, filters, seed, build time: informative only
    }

``source`` describes the input: {"input_dir": ...}, {"list": ..., "list_root": ...}, or for a RecordIO
pack {"rec", "idx", "property", "header_record", "declared_classes", "identity_names", "paths", ...}
(identities of a pack are its zero-padded labels; image paths are ``train.rec#KEY``).

``open_shards`` reads and checks the manifest once and returns a ``Shards`` handle (the manifest, the
shard files' paths, their size checks); the reader (``tfrecords.reader``), training and ``tfrecords.verify``
take that handle rather than reading manifest.json again.

Standard library only, so tools that just inspect a shard directory need no TensorFlow.
"""

import dataclasses
import json
from pathlib import Path

from fileio import sha256_of_file

from .features import SPLITS

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class ManifestError(ValueError):
    """A shard directory or its manifest is missing, malformed, or does not match the request."""


class ShardError(ManifestError):
    """A shard file is missing, truncated or corrupt (message names the shard)."""


def _require(cond, path, message):
    if not cond:
        raise ManifestError(f"{path}: {message}. Rebuild the shards with `python -m tfrecords.build`.")


def read_manifest(data_dir):
    """Load and validate ``DATA_DIR/manifest.json``; returns the dict (see module docstring).

    Raises ManifestError naming the file and the problem. Checks structure and internal
    consistency only (counts add up, labels match num_classes); shard files themselves are
    checked by the reader (size always, sha256 on request) and by ``python -m tfrecords.verify``.
    """
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST_NAME
    if not data_dir.is_dir():
        raise ManifestError(f"{data_dir}: no such shard directory. Build it with "
                            f"`python -m tfrecords.build --input-dir ALIGNED --output-dir {data_dir}`.")
    if not path.is_file():
        raise ManifestError(f"{path}: not found (an unfinished or interrupted build leaves none). "
                            f"Run `python -m tfrecords.build ... --output-dir {data_dir}` (it resumes).")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}:{e.lineno}: not valid JSON ({e.msg}). "
                            f"Rebuild the shards with `python -m tfrecords.build`.") from e
    _require(isinstance(manifest, dict), path, "top level is not a JSON object")
    version = manifest.get("format_version")
    _require(version == FORMAT_VERSION, path,
             f"format_version is {version!r}, this reader understands {FORMAT_VERSION}")
    for key in ("image_size", "num_classes", "labels", "splits"):
        _require(key in manifest, path, f"missing key {key!r}")
    size = manifest["image_size"]
    _require(isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size),
             path, f"image_size must be [H, W] positive integers, got {size!r}")
    labels = manifest["labels"]
    _require(isinstance(labels, list) and len(labels) == manifest["num_classes"], path,
             f"labels has {len(labels) if isinstance(labels, list) else '?'} names "
             f"but num_classes is {manifest['num_classes']}")
    splits = manifest["splits"]
    _require(isinstance(splits, dict) and "train" in splits, path, "splits must contain 'train'")
    for name, split in splits.items():
        _require(name in SPLITS, path, f"unknown split {name!r} (known: {', '.join(SPLITS)})")
        _require(isinstance(split.get("shards"), list), path, f"splits.{name}.shards is missing")
        total = 0
        for i, shard in enumerate(split["shards"]):
            for key in ("file", "num_images", "sha256", "bytes"):
                _require(key in shard, path, f"splits.{name}.shards[{i}] lacks {key!r}")
            _require("/" not in shard["file"] and not shard["file"].startswith("."), path,
                     f"splits.{name}.shards[{i}].file {shard['file']!r} must be a plain file name")
            total += shard["num_images"]
        _require(total == split.get("num_images"), path,
                 f"splits.{name}: shards hold {total} images but num_images is {split.get('num_images')}")
    _require(splits["train"].get("num_classes", manifest["num_classes"]) == manifest["num_classes"], path,
             "splits.train.num_classes differs from num_classes")
    pairs = manifest.get("val_pairs")
    if pairs is not None:
        _require("/" not in pairs, path, f"val_pairs {pairs!r} must be a plain file name")
    return manifest


@dataclasses.dataclass(frozen=True)
class Shards:
    """An opened shard directory: its manifest, read and checked once (``open_shards``)."""

    data_dir: Path
    manifest: dict

    @property
    def manifest_path(self):
        return self.data_dir / MANIFEST_NAME

    @property
    def image_size(self):
        """(H, W) of every stored image."""
        return tuple(self.manifest["image_size"])

    @property
    def num_classes(self):
        """Train classes (labels 0..C-1)."""
        return self.manifest["num_classes"]

    @property
    def val_pairs_path(self):
        """The held-out identities' pair list (val_pairs.txt), or None when the build wrote none."""
        name = self.manifest.get("val_pairs")
        return self.data_dir / name if name else None

    def num_images(self, split="train"):
        return self.split(split)["num_images"]

    def split(self, split="train"):
        """The manifest's entry of ``split``; ManifestError when the build has no such split."""
        if split not in self.manifest["splits"]:
            raise ManifestError(f"{self.manifest_path}: no {split!r} split (has: {', '.join(self.manifest['splits'])}); "
                                "build with --val-identities for 'val'.")
        return self.manifest["splits"][split]

    def paths(self, split="train"):
        """Paths (str) of a split's shard files, in manifest order."""
        return [str(self.data_dir / s["file"]) for s in self.split(split)["shards"]]

    def check_files(self, split="train", verify_checksums=False):
        """Raise ShardError naming the first shard of ``split`` that is missing, of the wrong size, or (on
        request) of the wrong sha256. The size check is a stat per shard and catches truncation; the
        sha256 check reads every byte (about 1 GB/s) and catches corruption too."""
        fix = f"Rerun `python -m tfrecords.build` into {self.data_dir} with --overwrite to rebuild it."
        for shard in self.split(split)["shards"]:
            path = self.data_dir / shard["file"]
            if not path.is_file():
                raise ShardError(f"{path}: shard listed in {MANIFEST_NAME} is missing. {fix}")
            size = path.stat().st_size
            if size != shard["bytes"]:
                raise ShardError(f"{path}: shard is {size} bytes, {MANIFEST_NAME} says {shard['bytes']} "
                                 f"({'truncated' if size < shard['bytes'] else 'changed'}). {fix}")
            if verify_checksums and sha256_of_file(path) != shard["sha256"]:
                raise ShardError(f"{path}: sha256 differs from {MANIFEST_NAME} (corrupt shard). {fix}")

    def check_image_size(self, image_size=None):
        """The shards' (H, W); ManifestError naming manifest.json when a requested ``image_size`` disagrees."""
        if image_size is not None and tuple(int(v) for v in image_size) != self.image_size:
            height, width = self.image_size
            raise ManifestError(f"{self.manifest_path}: shards hold {height}x{width} (HxW) images, but "
                                f"{image_size[0]}x{image_size[1]} was requested; build shards at that size or "
                                "change the requested image size")
        return self.image_size

    def check_num_classes(self, num_classes=None):
        """ManifestError naming manifest.json when a model's ``num_classes`` differs from the shards'."""
        if num_classes is not None and int(num_classes) != self.num_classes:
            raise ManifestError(f"{self.manifest_path}: {self.num_classes} classes, but the model expects "
                                f"{num_classes}; use the matching shard directory or head size")


def open_shards(data_dir):
    """Read and check ``DATA_DIR/manifest.json`` (``read_manifest``) and the size of every listed shard:
    the ``Shards`` handle that the reader, training and verification share. Raises ManifestError /
    ShardError naming the file and the fix."""
    shards = Shards(Path(data_dir), read_manifest(data_dir))
    for split in shards.manifest["splits"]:
        shards.check_files(split)
    return shards
