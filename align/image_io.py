"""Reading any user photo as RGB uint8, writing crops atomically (temporary name, then rename)."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np

from fileio import jpeg_damage, write_bytes_atomic


class ImageError(Exception):
    """A per-file problem; `reason` is the short report category, str(self) the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def read_image_rgb(path) -> np.ndarray:
    """Decode JPEG / PNG / BMP / GIF / TIFF / WebP (grey, palette, RGBA, CMYK, 16-bit) to RGB uint8 [H, W, 3].

    Applies the EXIF orientation; transparent pixels are composited over white. Raises ImageError
    with reason `unreadable` (cannot read the file), `not an image` (no known image format) or
    `corrupt image` (a known format that does not decode completely, e.g. a truncated JPEG).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ImageError("unreadable", f"cannot read {path}: {error.strerror or error}") from error
    if not data:
        raise ImageError("not an image", f"{path} is an empty file")
    if data[:3] == b"\xff\xd8\xff":  # Pillow decodes damaged JPEG data without a word: check strictly first
        damage = jpeg_damage(data)
        if damage:
            raise ImageError("corrupt image", f"{path} is a damaged JPEG ({damage})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()  # PIL decodes lazily: truncated or damaged data fails here, not in open()
            image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError as error:
        raise ImageError("not an image", f"{path} is not in an image format Pillow recognises") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError("too large", f"{path}: {error}") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError("corrupt image", f"{path} does not decode: {error}") from error
    return _to_rgb(image)


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
