"""Reading any user photo as RGB uint8, writing crops atomically (temporary name, then rename)."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np

from fileio import jpeg_damage, printable_name, read_input_bytes, write_bytes_atomic
from fileio.reading import DEFAULT_MAX_MEGAPIXELS, MB_PER_MEGAPIXEL  # noqa: F401  (the limit's home; align re-exports it)

EXIF_ORIENTATION = 0x0112  # the EXIF tag that says how to turn the stored pixels upright (1 = as stored)


class ImageError(Exception):
    """A per-file problem; `reason` is the short report category, str(self) the detail, `input_size`
    the [H, W] from the header when it was read."""

    def __init__(self, reason: str, detail: str, input_size=None):
        super().__init__(detail)
        self.reason = reason
        self.input_size = input_size


def read_image_rgb(path, max_megapixels=None, with_exif_orientation: bool = False):
    """Decode JPEG / PNG / BMP / GIF / TIFF / WebP (grey, palette, RGBA, CMYK, 16-bit) to RGB uint8 [H, W, 3].

    ``path`` may be any name (str with surrogate escapes, or bytes): it is read with
    fileio.read_input_bytes, so a FIFO, a device or a file of more than fileio.MAX_IMAGE_BYTES is
    `unreadable` with the reason, never a hang. Applies the EXIF orientation; transparent pixels are composited over white. Raises ImageError
    with reason `unreadable` (cannot read the file), `not an image` (no known image format),
    `too many pixels` (the header says more than `max_megapixels`; nothing is decoded, so a small
    file that claims 30000×30000 px costs no memory; None: Pillow's own decompression-bomb limit,
    reason `too large`) or `corrupt image` (a known format that does not decode completely, e.g. a
    truncated JPEG or one whose data libjpeg only warns about).

    with_exif_orientation: return (image, tag) where tag is the EXIF orientation (1–8) that was
    applied, or None when the file has none; align.photo checks it against the face it finds.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        data = read_input_bytes(path)   # a regular file only (a FIFO would block), bounded
    except OSError as error:
        raise ImageError("unreadable", f"cannot read {printable_name(path)}: {error.strerror or error}") from error
    path = printable_name(path)   # what the messages below name (a non-UTF-8 name shown with \xNN)
    if not data:
        raise ImageError("not an image", f"{path} is an empty file")
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if max_megapixels is not None:
                Image.MAX_IMAGE_PIXELS = None  # our limit, on the same header, replaces Pillow's
            image = Image.open(io.BytesIO(data))  # reads the header only
            _check_pixels(path, image.size, max_megapixels)
            if data[:3] == b"\xff\xd8\xff":  # Pillow decodes damaged JPEG data without a word: check strictly
                damage = jpeg_damage(data)
                if damage:
                    raise ImageError("corrupt image", f"{path} is a damaged JPEG ({damage})")
            image.load()  # PIL decodes lazily: truncated or damaged data fails here, not in open()
            tag = image.getexif().get(EXIF_ORIENTATION)
            image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as error:
        raise ImageError("not an image", f"{path} is not in an image format Pillow recognises") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError("too large", f"{path}: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError("corrupt image", f"{path} does not decode: {error}") from error
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    rgb = _to_rgb(image)
    if with_exif_orientation:
        return rgb, (int(tag) if isinstance(tag, int) and 1 <= tag <= 8 else None)
    return rgb


def _check_pixels(path, size, max_megapixels):
    width, height = size
    if max_megapixels is not None and width * height > max_megapixels * 1e6:
        megapixels = width * height / 1e6
        raise ImageError("too many pixels", f"{path} is {width}×{height} px ({megapixels:.1f} megapixels), above "
                         f"the {max_megapixels:g} megapixel limit; not decoded (finding faces in it would take about "
                         f"{megapixels * MB_PER_MEGAPIXEL / 1000:.1f} GB per worker). Shrink it, or raise "
                         "--max-megapixels (with fewer --workers if memory is short)", input_size=[height, width])


def _to_rgb(image) -> np.ndarray:
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: rescale to 8 bits, do not clip
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def encode_image(image_rgb: np.ndarray, image_format: str = "jpg", jpeg_quality: int = 95) -> bytes:
    """RGB uint8 [H, W, 3] -> encoded JPEG (quality 1–100) or PNG bytes."""
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if image_format == "jpg":
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif image_format == "png":
        ok, buffer = cv2.imencode(".png", bgr)
    else:
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image_rgb.shape} image as {image_format}")
    return buffer.tobytes()


def write_atomic(path, data: bytes, tmp_dir, fsync: bool = False) -> None:
    """Write a crop so that `path` is never seen half-written; the temporary file lives in `tmp_dir`
    (same filesystem), which a rerun clears of what a kill left behind."""
    write_bytes_atomic(path, data, fsync=fsync, tmp_dir=tmp_dir)
