"""Read one input image, check it, and return the bytes to store (no TensorFlow; runs in worker threads).

The stored bytes are the file's bytes unchanged. Only ``resize=True`` changes them: an image
of the wrong size is then decoded, resized and re-encoded in its own format (JPEG quality 95).
cv2.imdecode releases the GIL, so a thread pool decodes on all cores.
"""

import cv2
import numpy as np

from fileio import jpeg_damage

from .features import detect_format

cv2.setNumThreads(1)  # parallelism comes from the builder's worker threads

JPEG_QUALITY = 95


class WrongImageSize(ValueError):
    """An input image is not H x W and --resize was not given."""


def load_checked(path, image_size, resize=False):
    """Return ``(encoded_bytes, format, was_resized)`` for one image file, or raise.

    path: file to read. image_size: (H, W) expected. Raises OSError/ValueError with a reason
    for unreadable files (the builder lists them), WrongImageSize when the size is wrong and
    resize is False. A JPEG with no end-of-image marker (a truncated file, which libjpeg would
    silently pad with grey) or with damaged data in the middle (fileio.jpeg_damage) counts as
    unreadable.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError("empty file")
    fmt = detect_format(data)
    if fmt is None:
        raise ValueError("not a JPEG or PNG file (convert it to .jpg or .png)")
    if fmt == "jpeg" and b"\xff\xd9" not in data[-4096:]:
        raise ValueError("truncated JPEG (no end-of-image marker)")
    if fmt == "jpeg":
        damage = jpeg_damage(data)
        if damage:
            raise ValueError(f"damaged JPEG data ({damage}); re-align or re-export this image")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode {fmt} data (corrupt file)")
    height, width = image.shape[:2]
    want_h, want_w = image_size
    if (height, width) == (want_h, want_w):
        return data, fmt, False
    if not resize:
        raise WrongImageSize(f"{path}: image is {height}x{width} (HxW), expected {want_h}x{want_w}. "
                             f"Align to {want_h}x{want_w}, or pass --resize to resize such images.")
    shrink = height > want_h or width > want_w
    image = cv2.resize(image, (want_w, want_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot re-encode resized {fmt}")
    return buf.tobytes(), fmt, True


def image_size_of(path):
    """(H, W) of an image file (decodes it)."""
    image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot decode image to read its size")
    return tuple(int(v) for v in image.shape[:2])
