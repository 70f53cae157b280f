"""One photo to one aligned crop: the rule every aligning command shares.

`align_image` is what `align/align_lfw.py` does to each file of a tree and what `verify.py` /
`identify.py` do to each photo they are given: refuse an image smaller than the minimum face, detect
with MTCNN, take the largest face near the centre (`pick_face`), else (with `fallback="center"`) the
centred crop at the LFW median face position, and warp it onto the template (`align_face`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from align.detector import pick_face
from align.geometry import align_face, fallback_landmarks

FALLBACK_MODES = ("none", "center")


class AlignedImage(NamedTuple):
    """The result for one image.

    status: "aligned" (a face was detected), "fallback" (none; centred crop) or "failed" (no crop);
    reason/detail: why it is not "aligned" (short category / sentence), else None;
    crop: uint8 [H, W, 3] or None when failed; landmarks: float [5, 2] (x, y) input pixels used for
    the warp; box: [x1, y1, x2, y2] and score of the chosen face (None without one); faces: how many
    faces MTCNN found (None when detection did not run); input_size: (height, width) of the image.
    """

    status: str
    reason: str | None
    detail: str | None
    crop: np.ndarray | None
    landmarks: np.ndarray | None
    box: np.ndarray | None
    score: float | None
    faces: int | None
    input_size: tuple


def align_image(image_rgb: np.ndarray, detector, image_size=(112, 96), fallback: str = "none") -> AlignedImage:
    """Align the face of `image_rgb` (uint8 [H, W, 3]) with `detector` (an align.FaceDetector).

    fallback: "none" (no face -> status "failed") or "center" (no face -> centred crop, "fallback").
    """
    if fallback not in FALLBACK_MODES:
        raise ValueError(f"fallback must be one of {FALLBACK_MODES}, got {fallback!r}")
    height, width = image_rgb.shape[:2]
    if min(height, width) < detector.min_face_size:
        return AlignedImage("failed", "too small", f"{width}×{height} px is smaller than the minimum face size "
                            f"{detector.min_face_size} px (--min-face-size)", None, None, None, None, None,
                            (height, width))
    faces = detector.detect(image_rgb)
    chosen = pick_face(faces, image_rgb.shape)
    if chosen >= 0:
        box, score, landmarks = faces[chosen]
        crop = align_face(image_rgb, landmarks, image_size)
        return AlignedImage("aligned", None, None, crop, np.asarray(landmarks), np.asarray(box), float(score),
                            len(faces), (height, width))
    if fallback == "center":
        landmarks = fallback_landmarks(image_rgb.shape, image_size)
        return AlignedImage("fallback", "no face", "no face detected; centred crop (--fallback center)",
                            align_face(image_rgb, landmarks, image_size), landmarks, None, None, 0, (height, width))
    return AlignedImage("failed", "no face", "no face detected (use --fallback center to get a centred crop)",
                        None, None, None, None, 0, (height, width))
