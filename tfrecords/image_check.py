"""Read one input image, check it, and return the bytes to store (no TensorFlow; runs in worker threads).

The stored bytes are the file's bytes unchanged. Only ``resize=True`` or ``center_crop=True`` change
them: an image of the wrong size is then decoded, resized or cropped, and re-encoded in its own
format (JPEG quality 95). A RecordIO pack's records go through ``check_image_bytes`` the same way.
cv2.imdecode releases the GIL, so a thread pool decodes on all cores.
"""

import cv2
import numpy as np

from fileio import jpeg_damage, read_input_bytes

from .features import detect_format

cv2.setNumThreads(1)  # parallelism comes from the builder's worker threads

JPEG_QUALITY = 95


class WrongImageSize(ValueError):
    """An input image is not H x W and --resize was not given."""


def load_checked(path, image_size, resize=False, center_crop=False):
    """Return ``(encoded_bytes, format, change)`` for one image file, or raise (see check_image_bytes)."""
    data = read_input_bytes(path)   # a regular file only, bounded: NotRegularFile/InputTooLarge are OSErrors
    return check_image_bytes(data, image_size, resize, center_crop, name=path)


def check_image_bytes(data, image_size, resize=False, center_crop=False, name="image"):
    """Return ``(encoded_bytes, format, change)`` for one encoded image, or raise.

    data: the encoded bytes. image_size: (H, W) to store. change: None (bytes returned unchanged),
    "resized" or "center_cropped" (decoded, changed, re-encoded in the same format: JPEG at quality
    JPEG_QUALITY, PNG lossless). name: what error messages call the image (a path, a record key).

    Raises OSError/ValueError with a reason for unreadable data (the builder lists them), and
    WrongImageSize when the size is wrong and neither transform applies. A JPEG with no end-of-image
    marker (a truncated file, which libjpeg would silently pad with grey) or with damaged data in the
    middle (fileio.jpeg_damage) counts as unreadable.
    center_crop: an image as high as image_size and wider by an even number of pixels keeps its
    middle image_size[1] columns, exactly (no resampling): a 112x112 insightface crop -> our 112x96
    alignment, whose template is the 112x112 one shifted 8 px (align/geometry.py).
    """
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
        return data, fmt, None
    if center_crop and height == want_h and width > want_w and (width - want_w) % 2 == 0:
        left = (width - want_w) // 2
        return _encode(image[:, left:left + want_w], fmt), fmt, "center_cropped"
    if not resize:
        crop_hint = (f" --center-crop {want_h}x{want_w} keeps the middle columns of images {want_h} high and "
                     "wider by an even number of pixels." if center_crop else "")
        raise WrongImageSize(f"{name}: image is {height}x{width} (HxW), expected {want_h}x{want_w}. "
                             f"Align to {want_h}x{want_w}, or pass --resize to resize such images.{crop_hint}")
    shrink = height > want_h or width > want_w
    image = cv2.resize(image, (want_w, want_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return _encode(image, fmt), fmt, "resized"


def _encode(image, fmt):
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    else:
        ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot re-encode the changed {fmt} image")
    return buf.tobytes()


def image_size_of(path):
    """(H, W) of an image file (decodes it)."""
    return image_size_of_bytes(np.frombuffer(read_input_bytes(path), np.uint8), path)


def image_size_of_bytes(data, name="image"):
    """(H, W) of encoded image bytes (decodes them); ValueError naming ``name`` when they do not decode."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if len(data) else None
    if image is None:
        raise ValueError(f"{name}: cannot decode image to read its size")
    return tuple(int(v) for v in image.shape[:2])
