"""Image files: which extensions every stage reads, and the one rule for image sizes.

Sizes are (height, width). A size is trainable when both are positive multiples of 16, because
every backbone halves the map four times with stride-2 convolutions (112x96 -> 7x6, 112x112 -> 7x7).
The aligner's template exists for 112x96 and 112x112 only (it says so itself); the models refuse any
other untrainable size; the shard builder stores any size but says at build time when the shards it
wrote cannot train (``untrainable_reason``), rather than leaving it to the first training step.

``jpeg_damage`` is the one strict JPEG check (align reads photos with it, the builder and
``tfrecords.verify`` check crops with it).
"""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DOWNSAMPLING = 16  # total stride of every backbone


def is_image_file(name):
    """True for a file name with one of IMAGE_EXTENSIONS (any case)."""
    return str(name).lower().endswith(IMAGE_EXTENSIONS)


def parse_image_size(text, trainable=True):
    """"112x96" (or "112,96") -> (112, 96) (height x width); ``trainable`` also applies ``validate_image_size``."""
    try:
        height, width = (int(part) for part in str(text).lower().replace(",", "x").split("x"))
        if height <= 0 or width <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"image size {text!r}: expected HEIGHTxWIDTH with positive integers, e.g. 112x96 "
                         "or 112x112") from None
    return validate_image_size((height, width)) if trainable else (height, width)


def image_size_type(trainable=True, sizes=None):
    """An argparse ``type=`` for a HEIGHTxWIDTH flag: ``parse_image_size``, its message as the flag's error.
    ``sizes``: the only (H, W) accepted (align/align_lfw.py: its templates' sizes)."""
    import argparse

    def image_size(text):
        try:
            size = parse_image_size(text, trainable)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if sizes is not None and size not in sizes:
            raise argparse.ArgumentTypeError(f"supported sizes are {' and '.join(f'{h}x{w}' for h, w in sizes)}, "
                                             f"got {text!r}")
        return size

    return image_size


def untrainable_reason(image_size):
    """None if (H, W) can train, else the sentence saying why not."""
    try:
        validate_image_size(image_size)
    except ValueError as e:
        return str(e)
    return None


def validate_image_size(image_size):
    """Return (H, W) as ints; ValueError unless both are positive multiples of 16 (or a bad form)."""
    if isinstance(image_size, str):
        return parse_image_size(image_size)
    try:
        height, width = (int(v) for v in image_size)
        if (height, width) != tuple(image_size):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width) integers, got {image_size!r}") from None
    if height <= 0 or width <= 0 or height % DOWNSAMPLING or width % DOWNSAMPLING:
        raise ValueError(
            f"image_size {height}x{width} is not supported: use 112x96 or 112x112, or a size whose height "
            f"and width are positive multiples of {DOWNSAMPLING} (the backbones' total stride)")
    return height, width


def jpeg_damage(data):
    """None when JPEG ``data`` decodes without one libjpeg warning, else what libjpeg said.

    Damaged bytes in the middle of a JPEG decode "successfully" in OpenCV, Pillow and TensorFlow:
    libjpeg prints ``Corrupt JPEG data: premature end of data segment`` to stderr, naming no file,
    and fills the rest with grey. simplejpeg's strict mode turns that warning into an error, so the
    damage is found per file. (Damage that still forms valid entropy codes decodes to wrong pixels
    with no warning at all: no decoder can see that; the shards' sha256 guards them afterwards.)
    """
    import simplejpeg  # libjpeg-turbo; imported here so fileio stays importable without it

    try:
        simplejpeg.decode_jpeg(bytes(data), strict=True)
    except ValueError as error:
        return str(error).strip() or "undecodable JPEG data"
    return None
