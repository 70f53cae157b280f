"""Features of photos: the alignment of training, the flip-concatenated features of evaluation.

    features, report = embed_photos(["a.jpg", "b.png"], "runs/RUN")     # raw photos of any size
    features = embed_aligned(crops_uint8, "runs/RUN")                   # crops already aligned

A feature is evaluation's ``concat`` feature: the embedding of the aligned crop and that of its
mirror image, each L2-normalised, concatenated and normalised again (float32 [2D], unit norm), so
cosine similarity = the dot product of two features and squared distance = 2 − 2·cosine.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from align.geometry import SUPPORTED_SIZES
from align.photo import FALLBACK_MODES
from fileio import DEFAULT_MAX_MEGAPIXELS

FLIP = "concat"  # the features evaluation scores and its thresholds refer to
PHOTOS_PER_CHUNK = 64  # photos aligned, then embedded together: bounded memory for any number of photos


class PhotoError(ValueError):
    """A photo could not be turned into a feature; str() names it, why, and what to do."""


@dataclass
class PhotoRecord:
    """What happened to one photo.

    status: "aligned" (a face was found), "fallback" (none; centred crop, --fallback center) or
    "failed" (no feature: see reason/detail); faces: how many faces MTCNN found (None if detection
    did not run); box: [x1, y1, x2, y2] of the face used, score its detection probability; quality:
    the L2 norm of the aligned crop's raw embedding, which MagFace and AdaFace train to be a face-quality
    score (higher = more recognisable; for other heads a number without that meaning).
    """

    path: str
    status: str
    reason: str | None = None
    detail: str | None = None
    faces: int | None = None
    box: list | None = None
    score: float | None = None
    quality: float | None = None   # L2 norm of the crop's raw embedding (MagFace/AdaFace: face quality)

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def note(self) -> str | None:
        """The sentence the commands print about this photo's alignment, or None when nothing is worth saying."""
        if self.status == "failed":  # read errors name the file already
            return self.detail if self.path in self.detail else f"{self.path}: {self.detail}"
        if self.status == "fallback":
            return f"{self.path}: no face found; used a centred crop (--fallback center)"
        if self.faces and self.faces > 1:
            return f"{self.path}: {self.faces} faces found; took the largest near the centre (as in alignment)"
        return None


@functools.lru_cache(maxsize=1)
def default_detector():
    """One MTCNN detector per process (building it and tracing its graphs takes seconds)."""
    from align.detector import FaceDetector

    return FaceDetector()


def _check_alignable(model):
    if tuple(model.image_size) not in SUPPORTED_SIZES:
        raise ValueError(f"model {model.path} takes {model.image_size[0]}x{model.image_size[1]} crops; alignment "
                         f"makes {' or '.join(f'{h}x{w}' for h, w in SUPPORTED_SIZES)} only: align the photos yourself "
                         f"and use embed_aligned")


def align_photo(path, image_size, detector, fallback="none", max_megapixels=DEFAULT_MAX_MEGAPIXELS):
    """(PhotoRecord, crop uint8 [H, W, 3] or None) for one photo file; a photo whose header says more
    than ``max_megapixels`` is refused before it is decoded (align's limit, fileio.reading)."""
    from align.image_io import ImageError, read_image_rgb
    from align.photo import align_image

    try:   # a small file claiming 30000x30000 px is refused from its header, not decoded
        image, exif_orientation = read_image_rgb(path, max_megapixels=max_megapixels, with_exif_orientation=True)
    except ImageError as error:
        fix = {"unreadable": "check the path and its permissions", "not an image": "give a JPEG, PNG or BMP photo",
               "corrupt image": "the file is damaged; use another copy",
               "too many pixels": "shrink the photo, or raise --max-megapixels"}.get(error.reason, "use another photo")
        return PhotoRecord(str(path), "failed", error.reason, f"{error} ({fix})"), None
    result = align_image(image, detector, image_size, fallback, exif_orientation=exif_orientation)
    box = None if result.box is None else [round(float(v), 1) for v in result.box]
    return PhotoRecord(str(path), result.status, result.reason, result.detail, result.faces, box, result.score), \
        result.crop


def features_of_crops(model, crops_uint8, batch_size=64, return_norms=False):
    """Flip-concatenated unit features float32 [N, 2D] of aligned crops uint8 [N, H, W, 3] (with
    ``return_norms``: and the raw embeddings' L2 norms [N], the quality score)."""
    from evaluation.embed import embed_images

    return embed_images(model.embed_fn, crops_uint8, batch_size=batch_size, flip=FLIP, return_norms=return_norms)


def refuse_low_quality(record, min_quality):
    """Mark ``record`` failed when its quality is below ``min_quality`` (None: no minimum); True if so."""
    if min_quality is None or record.quality is None or record.quality >= min_quality:
        return False
    record.status, record.reason = "failed", "low quality"
    record.detail = (f"{record.path}: face quality {record.quality:.2f} (the feature norm) is below --min-quality "
                     f"{min_quality:g}; use a sharper, frontal, better-lit photo, or lower --min-quality")
    return True


def embed_photos(paths, model=None, fallback: str = "none", on_failure: str = "report", batch_size: int = 64,
                 progress: bool = False, detector=None, engine: str = "auto", min_quality=None,
                 max_megapixels=DEFAULT_MAX_MEGAPIXELS):
    """Align and embed raw photos (any size, JPEG/PNG/BMP/...): (features, report).

    model: a run directory, .keras or .onnx file, Keras model or engines.EmbeddingModel (None:
    the newest run under runs/). fallback: "none" (a photo without a face fails) or "center" (centred
    crop). on_failure: "report" (a failed photo's row is NaN and its record says why) or "raise"
    (PhotoError at the first failure). batch_size: images per forward pass (a photo and its mirror
    count as two). Each record's ``quality`` is the feature norm (see PhotoRecord); min_quality: a photo
    below it fails ("low quality", the record says by how much) like a photo without a face.
    max_megapixels: a photo whose header says more pixels fails ("too many pixels"), undecoded.

    Returns features float32 [N, 2D] (row i for paths[i]; unit norm; NaN rows for failed photos) and
    report: list of N PhotoRecord (status, faces found, the box used, why it failed).
    """
    from tqdm import tqdm

    from engines.loading import load_model

    if fallback not in FALLBACK_MODES:
        raise ValueError(f"fallback must be one of {FALLBACK_MODES}, got {fallback!r}")
    if on_failure not in ("report", "raise"):
        raise ValueError(f"on_failure must be 'report' or 'raise', got {on_failure!r}")
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no photos to embed")
    model = load_model(model, engine)
    _check_alignable(model)
    detector = detector or default_detector()
    features, report = None, []
    bar = tqdm(total=len(paths), unit="photo", desc="align+embed", disable=not progress)
    try:
        for start in range(0, len(paths), PHOTOS_PER_CHUNK):
            crops, rows = [], []
            for row, path in enumerate(paths[start:start + PHOTOS_PER_CHUNK], start=start):
                record, crop = align_photo(path, model.image_size, detector, fallback, max_megapixels)
                report.append(record)
                bar.update(1)
                if crop is None:
                    if on_failure == "raise":
                        raise PhotoError(record.note())
                    continue
                crops.append(crop)
                rows.append(row)
            if crops:
                chunk, norms = features_of_crops(model, np.stack(crops), batch_size, return_norms=True)
                if features is None:
                    features = np.full((len(paths), chunk.shape[1]), np.nan, np.float32)
                features[rows] = chunk
                for row, norm in zip(rows, norms):
                    report[row].quality = round(float(norm), 4)
                    if refuse_low_quality(report[row], min_quality):
                        features[row] = np.nan
                        if on_failure == "raise":
                            raise PhotoError(report[row].note())
    finally:
        bar.close()
    if features is None:  # every photo failed: the width is still the model's
        width = 2 * model.embed_fn(np.zeros((1, *model.image_size, 3), np.float32)).shape[1]
        features = np.full((len(paths), width), np.nan, np.float32)
    return features, report


def embed_aligned(images, model=None, batch_size: int = 256, progress: bool = False, engine: str = "auto"):
    """Features of crops that are already aligned: float32 [N, 2D] (unit rows, see module doc).

    images: uint8 [N, H, W, 3] RGB, or a list of image files (read as RGB). Every crop must be the
    model's input size (e.g. 112x96, as align/align_lfw.py writes them); a wrong size is an error
    naming the file.
    """
    from engines.loading import load_model
    from evaluation.embed import embed_paths
    from evaluation.images import read_rgb

    model = load_model(model, engine)
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[1:] != (*model.image_size, 3):
            raise ValueError(f"images have shape {images.shape}; the model {model.path} needs "
                             f"[N, {model.image_size[0]}, {model.image_size[1]}, 3] aligned RGB crops")
        return features_of_crops(model, images, batch_size)
    files = [str(p) for p in images]
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"aligned crop not found: {path}")
    return embed_paths(model.embed_fn, files, read_rgb, batch_size, FLIP, model.image_size, progress)
