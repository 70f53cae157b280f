"""One photo to one aligned crop: the rule every aligning command shares.

`align_image` is what `align/align_lfw.py` does to each file of a tree and what `verify.py` /
`identify.py` do to each photo they are given: refuse an image smaller than the minimum face, detect
with MTCNN, take the largest face near the centre (`pick_face`), else (with `fallback="center"`) the
centred crop at the LFW median face position, and warp it onto the template (`align_face`).

A face counts only when its landmarks are upright (`geometry.is_upright`): an EXIF orientation can
lie (a phone that stored the tag wrong, an editor that turned the pixels and kept the tag), and then
the image as decoded holds a face on its side (no detection) or upside down. So when the first try
finds no upright face, the image is tried with the tag undone and turned by the other quarter turns;
the most confident upright face wins and `rotation` says which turn it took. A photo whose first try
is upright costs one detection, as before; any other costs four.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from align.detector import pick_face
from align.geometry import (
    align_face,
    face_rotation_degrees,
    fallback_landmarks,
    is_upright,
    rotate_image,
    unrotate_points,
)

FALLBACK_MODES = ("none", "center")

# Counterclockwise quarter turns that undo what Pillow's exif_transpose did for each rotating EXIF
# orientation (3: 180°, 6: it turned 90° clockwise, 8: 90° counterclockwise). The mirroring tags
# (2, 4, 5, 7) are left out: a mirrored face is still upright, so landmarks cannot tell.
UNDO_EXIF_TURNS = {3: 2, 6: 1, 8: 3}


class AlignedImage(NamedTuple):
    """The result for one image.

    status: "aligned" (a face was detected), "fallback" (none; centred crop) or "failed" (no crop);
    reason/detail: why it is not "aligned" (short category / sentence), else None;
    crop: uint8 [H, W, 3] or None when failed; landmarks: float [5, 2] (x, y) input pixels used for
    the warp; box: [x1, y1, x2, y2] and score of the chosen face (None without one); faces: how many
    faces MTCNN found (None when detection did not run); input_size: (height, width) of the image;
    rotation: degrees (0, 90, 180, 270) the image as decoded was turned counterclockwise for the face to
    be upright (landmarks and box are still in the unturned image's pixels), None without a face.
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
    rotation: int | None = None


def align_image(image_rgb: np.ndarray, detector, image_size=(112, 96), fallback: str = "none",
                exif_orientation: int | None = None) -> AlignedImage:
    """Align the face of `image_rgb` (uint8 [H, W, 3]) with `detector` (an align.FaceDetector).

    fallback: "none" (no upright face -> status "failed") or "center" (-> centred crop, "fallback");
    exif_orientation: the tag the decoder applied (1–8, None: none), named in the detail when the
    face was upright only in another orientation.
    """
    if fallback not in FALLBACK_MODES:
        raise ValueError(f"fallback must be one of {FALLBACK_MODES}, got {fallback!r}")
    height, width = image_rgb.shape[:2]
    if min(height, width) < detector.min_face_size:
        return AlignedImage("failed", "too small", f"{width}×{height} px is smaller than the minimum face size "
                            f"{detector.min_face_size} px (--min-face-size)", None, None, None, None, None,
                            (height, width))
    first_faces, tilted, best = None, None, None
    for turns in _turns_to_try(exif_orientation):
        turned = rotate_image(image_rgb, turns) if turns else image_rgb
        faces = detector.detect(turned)
        first_faces = faces if first_faces is None else first_faces
        chosen = pick_face(faces, turned.shape)
        if chosen < 0:
            continue
        box, score, landmarks = faces[chosen]
        if not is_upright(landmarks, image_size):
            tilted = tilted if tilted is not None else face_rotation_degrees(landmarks, image_size)
            continue
        if turns == 0:  # the usual case: upright as decoded, one detection, as before
            return AlignedImage("aligned", None, None, align_face(image_rgb, landmarks, image_size),
                                np.asarray(landmarks), np.asarray(box), float(score), len(faces), (height, width), 0)
        # Once the first try failed, every turn is tried and the most confident upright face wins: an
        # upside-down face can give a weak detection whose landmarks look upright (measured: ONet 0.89
        # against 0.9998 for the same face the right way up).
        if best is None or score > best[2]:
            best = (turns, box, float(score), landmarks, len(faces))
    if best is not None:
        turns, box, score, landmarks, count = best
        # back into the decoded image's pixels: the same warp, recorded where the face is in the input
        landmarks = unrotate_points(landmarks, (height, width), turns)
        corners = unrotate_points(np.reshape(box, (2, 2)), (height, width), turns)
        box = np.concatenate([corners.min(axis=0), corners.max(axis=0)])
        # the record says the tag was not believed, and what was done instead
        tag = f"EXIF orientation {exif_orientation}" if exif_orientation else "no EXIF orientation"
        undone = " (the tag undone)" if turns == UNDO_EXIF_TURNS.get(exif_orientation) else ""
        detail = (f"{tag} overridden: the face is upright only with the image as decoded turned "
                  f"{90 * turns}° counterclockwise{undone}")
        return AlignedImage("aligned", None, detail, align_face(image_rgb, landmarks, image_size), landmarks, box,
                            score, count, (height, width), 90 * turns)
    # "no face detected" when nothing was found; say so when only faces turned off upright were
    no_face = "no face detected" if tilted is None else (
        f"no upright face detected (a face was found turned {tilted:.0f}° from upright)")
    faces_found = len(first_faces) if first_faces is not None else 0
    if fallback == "center":
        landmarks = fallback_landmarks(image_rgb.shape, image_size)
        return AlignedImage("fallback", "no face", f"{no_face}; centred crop (--fallback center)",
                            align_face(image_rgb, landmarks, image_size), landmarks, None, None, faces_found,
                            (height, width))
    return AlignedImage("failed", "no face", f"{no_face} (use --fallback center to get a centred crop)", None, None,
                        None, None, faces_found, (height, width))


def _turns_to_try(exif_orientation) -> list:
    """Quarter turns in the order tried: as decoded, the EXIF tag undone, then the other turns."""
    order = [0]
    undo = UNDO_EXIF_TURNS.get(exif_orientation)
    for turns in ([undo] if undo else []) + [2, 1, 3]:
        if turns not in order:
            order.append(turns)
    return order
