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

Standard library only, so tools that just inspect a shard directory need no TensorFlow.
"""

import json
from pathlib import Path

from .features import SPLITS

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class ManifestError(ValueError):
    """A shard directory or its manifest is missing, malformed, or does not match the request."""


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


def shard_paths(data_dir, manifest, split="train"):
    """Absolute paths of a split's shard files, in manifest order."""
    if split not in manifest["splits"]:
        raise ManifestError(f"{Path(data_dir) / MANIFEST_NAME}: no {split!r} split "
                            f"(has: {', '.join(manifest['splits'])}); build with --val-identities for 'val'.")
    return [str(Path(data_dir) / s["file"]) for s in manifest["splits"][split]["shards"]]
