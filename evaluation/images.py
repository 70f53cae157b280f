"""Finding and reading the aligned crops that pairs refer to (``ALIGNED/<identity>/<stem>.jpg|.png``)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from evaluation.pairs import IMAGE_EXTENSIONS, strip_image_extension

DEFAULT_LFW_DIR = Path("data/lfw_aligned")
ALIGN_HINT = "python align/align_lfw.py --input-dir LFW/images --output-dir {dir}"


def check_aligned_dir(root) -> Path:
    """The aligned folder as a Path; a clear error (with the align command) when it is missing."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"aligned face folder not found: {root}. Align LFW first "
            f"({ALIGN_HINT.format(dir=root)}) or pass --lfw-dir pointing at the aligned crops."
        )
    return root


def resolve_image_files(root, paths) -> dict:
    """Map each pair path (with or without extension) to its file under root, whatever its image extension.

    Returns {path: Path}. Raises FileNotFoundError naming the missing files (all are checked before
    any work starts) and ValueError when a stem has two image files (e.g. both .jpg and .png).
    """
    root = check_aligned_dir(root)
    listings = {}  # directory -> {stem: [file names]}
    found, missing = {}, []
    for path in paths:
        rel_dir, _, name = strip_image_extension(path).replace("\\", "/").rpartition("/")
        if rel_dir not in listings:
            directory = root / rel_dir
            names = os.listdir(directory) if directory.is_dir() else []
            stems = {}
            for n in names:
                if n.lower().endswith(IMAGE_EXTENSIONS):
                    stems.setdefault(strip_image_extension(n), []).append(n)
            listings[rel_dir] = stems
        candidates = listings[rel_dir].get(name, [])
        if not candidates:
            missing.append(path)
        elif len(candidates) > 1:
            raise ValueError(
                f"{root / rel_dir}: {sorted(candidates)} all match pair path {path!r}; remove all but one"
            )
        else:
            found[path] = root / rel_dir / candidates[0]
    if missing:
        shown = ", ".join(str(root / m) + ".*" for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{len(missing)} image(s) used by the pairs are missing from {root}: {shown}{more}. "
            f"Check --lfw-dir, or align the missing photos ({ALIGN_HINT.format(dir=root)})."
        )
    return found


def read_rgb(path) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3]; the error names the file (a FIFO or a device is
    refused by fileio.read_input_bytes rather than read forever)."""
    from fileio import read_input_bytes

    try:
        data = np.frombuffer(read_input_bytes(path), dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"cannot read image file {error}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"cannot decode image file {path} (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_rgb(data: bytes, what: str) -> np.ndarray:
    """Decode encoded image bytes (JPEG/PNG) to RGB uint8 [H, W, 3]; ``what`` names it in errors."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        raise ValueError(f"cannot decode {what} (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def folder_loader(root, paths):
    """A callable path -> RGB uint8 image for evaluate_pairs, after checking every file exists."""
    files = resolve_image_files(root, paths)
    return lambda path: read_rgb(files[path])
