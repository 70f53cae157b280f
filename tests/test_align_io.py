"""align.image_io: every supported input flavour becomes RGB uint8; broken files get the right reason."""

import numpy as np
import pytest
from PIL import Image

from align.image_io import ImageError, read_image_rgb, write_atomic


@pytest.fixture
def photo():
    """A smooth colour test picture [60, 80, 3] (JPEG-friendly)."""
    y, x = np.mgrid[0:60, 0:80]
    return np.stack([x * 3, y * 4, 255 - x * 2], axis=2).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("name,mode,tolerance", [
    ("rgb.png", "RGB", 0), ("rgb.bmp", "RGB", 0), ("rgb.jpg", "RGB", 6), ("grey.png", "L", 0),
    ("rgba.png", "RGBA", 0), ("cmyk.jpg", "CMYK", 8), ("palette.png", "P", 40), ("grey16.png", "I;16", 1),
])
def test_formats_and_modes_become_rgb(tmp_path, photo, name, mode, tolerance):
    path = tmp_path / name
    if mode == "I;16":
        grey = photo.mean(axis=2)
        Image.fromarray((grey * 257).astype(np.uint16)).save(path)
        expected = np.repeat(grey.round()[:, :, None], 3, axis=2)
    else:
        image = Image.fromarray(photo).convert(mode)
        image.save(path, quality=95) if name.endswith(".jpg") else image.save(path)
        expected = np.asarray(image.convert("RGB"), dtype=np.float64) if mode in ("L", "P") else photo
    rgb = read_image_rgb(path)
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(np.float64) - expected).mean() <= tolerance


def test_transparent_pixels_become_white(tmp_path, photo):
    rgba = np.dstack([photo, np.zeros(photo.shape[:2], np.uint8)])
    rgba[:, :40, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = read_image_rgb(tmp_path / "a.png")
    np.testing.assert_array_equal(rgb[:, :40], photo[:, :40])
    assert (rgb[:, 40:] == 255).all()


def test_exif_orientation_is_applied(tmp_path, photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(photo).save(tmp_path / "r.jpg", exif=exif, quality=95)
    assert read_image_rgb(tmp_path / "r.jpg").shape == (80, 60, 3)


@pytest.mark.parametrize("content,reason", [
    (b"hello, this is text\n", "not an image"),
    (b"", "not an image"),
])
def test_not_images(tmp_path, content, reason):
    (tmp_path / "x.jpg").write_bytes(content)
    with pytest.raises(ImageError) as error:
        read_image_rgb(tmp_path / "x.jpg")
    assert error.value.reason == reason and "x.jpg" in str(error.value)


def test_truncated_and_damaged_jpeg_are_corrupt(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbled.jpg").write_bytes(data[:200] + b"\x00" * (len(data) - 200))
    for name in ("truncated.jpg", "garbled.jpg"):
        with pytest.raises(ImageError) as error:
            read_image_rgb(tmp_path / name)
        assert error.value.reason == "corrupt image", name


def test_unreadable_path(tmp_path):
    with pytest.raises(ImageError) as error:
        read_image_rgb(tmp_path / "missing.jpg")
    assert error.value.reason == "unreadable"


def test_write_atomic_replaces_whole_file(tmp_path):
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    target = tmp_path / "id" / "a.jpg"
    write_atomic(target, b"first", tmp_dir)
    write_atomic(target, b"second", tmp_dir)
    assert target.read_bytes() == b"second" and not list(tmp_dir.iterdir())
