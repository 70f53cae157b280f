"""5-point similarity alignment onto the reference template (docs/DESIGN.md, "Alignment geometry")."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

# (x, y) in a 112 (high) × 96 (wide) crop: left eye, right eye, nose tip, left and right mouth corners
# (left/right as seen in the image). The SphereFace / insightface template.
REFERENCE_LANDMARKS = np.array([
    [30.2946, 51.6963],
    [65.5318, 51.5014],
    [48.0252, 71.7366],
    [33.5493, 92.3655],
    [62.7299, 92.2041],
], dtype=np.float64)

SUPPORTED_SIZES = ((112, 96), (112, 112))

# Centre-crop fallback geometry, the median over 250 LFW images of where the detected alignment
# crop lies: its width is 0.45 × the shorter image side, centred horizontally at 0.5 × width and
# vertically at 0.47 × height (measured with align.FaceDetector defaults, every 53rd LFW file).
FALLBACK_CROP_WIDTH_FRACTION = 0.45
FALLBACK_CENTRE_Y_FRACTION = 0.47


def reference_landmarks(image_size=(112, 96)) -> np.ndarray:
    """Template [5, 2] (x, y) for an output of (height, width) = 112×96, or 112×112 (x + 8)."""
    image_size = tuple(int(v) for v in image_size)
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES} (height, width), got {image_size}")
    template = REFERENCE_LANDMARKS.copy()
    template[:, 0] += (image_size[1] - 96) / 2  # 112×112: the same face, 8 px more on each side
    return template


def estimate_transform(landmarks5, image_size=(112, 96)) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) from the 5 input landmarks to the
    template; returns the 2×3 affine matrix mapping input pixels to output pixels."""
    src = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(src).all():
        raise ValueError(f"landmarks must be finite, got {src.tolist()}")
    transform = SimilarityTransform.from_estimate(src, reference_landmarks(image_size))
    if not transform:
        raise ValueError(f"cannot estimate a similarity from landmarks {src.tolist()}: {transform}")
    return transform.params[:2]


def align_face(image_rgb: np.ndarray, landmarks5, image_size=(112, 96)) -> np.ndarray:
    """Warp `image_rgb` uint8 [H, W, 3] so the 5 landmarks (x, y) land on the template.

    Returns the aligned crop, uint8 [image_size[0], image_size[1], 3]; pixels from outside the
    input are black (the reference implementations' border).
    """
    matrix = estimate_transform(landmarks5, image_size)
    height, width = (int(v) for v in image_size)
    return cv2.warpAffine(image_rgb, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def fallback_landmarks(image_shape, image_size=(112, 96)) -> np.ndarray:
    """Landmarks [5, 2] of a centred crop, for `--fallback center`: the template scaled (no rotation)
    into a box FALLBACK_CROP_WIDTH_FRACTION × the shorter side wide, at the LFW median face position.
    Aligning with them yields that crop, and the report records them as the landmarks used."""
    height, width = image_shape[:2]
    out_h, out_w = (int(v) for v in image_size)
    # input px per output px; the 112×96 crop is FALLBACK_CROP_WIDTH_FRACTION × the shorter side wide
    # (112×112 shows the same face scale with 8 more px on each side)
    scale = FALLBACK_CROP_WIDTH_FRACTION * min(height, width) / 96
    template = reference_landmarks(image_size)
    centre_out = np.array([out_w / 2, out_h / 2])
    centre_in = np.array([width / 2, FALLBACK_CENTRE_Y_FRACTION * height])
    return (template - centre_out) * scale + centre_in


# A detection counts as an upright face when the similarity that puts its landmarks, in the template's
# order (left eye, right eye, nose, left and right mouth corners as seen in the image), onto the
# template turns them by at most this much: then the eyes lie above the nose above the mouth and the
# left eye left of the right. 45° is halfway to a quarter turn: MTCNN's landmarks on a face left on its
# side lean back towards upright (measured: 59.6° for Serena_Williams_0003 turned 90°), while LFW's
# tilted heads stay well inside 45°.
UPRIGHT_MAX_DEGREES = 45.0


def face_rotation_degrees(landmarks5, image_size=(112, 96)) -> float:
    """How far (degrees, -180..180, counterclockwise positive in image coordinates) the aligning
    similarity turns the 5 landmarks to put them on the template; 0 for an upright face."""
    matrix = estimate_transform(landmarks5, image_size)
    return float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))


def is_upright(landmarks5, image_size=(112, 96)) -> bool:
    """True when the 5 landmarks form an upright face (|face_rotation_degrees| <= UPRIGHT_MAX_DEGREES)."""
    return abs(face_rotation_degrees(landmarks5, image_size)) <= UPRIGHT_MAX_DEGREES


def rotate_image(image, quarter_turns: int) -> np.ndarray:
    """The image turned counterclockwise by 90° × quarter_turns (np.rot90: an exact pixel permutation)."""
    return np.ascontiguousarray(np.rot90(image, quarter_turns % 4))


def unrotate_points(points, image_shape, quarter_turns: int) -> np.ndarray:
    """Points [N, 2] (x, y) found in rotate_image(image, quarter_turns), mapped back to the pixels of
    `image` (of shape image_shape [H, W, ...]); pixel centres are at integer coordinates."""
    height, width = image_shape[:2]
    x, y = np.asarray(points, dtype=np.float64).T
    turns = quarter_turns % 4
    if turns == 1:
        return np.stack([width - 1 - y, x], axis=1)
    if turns == 2:
        return np.stack([width - 1 - x, height - 1 - y], axis=1)
    if turns == 3:
        return np.stack([y, height - 1 - x], axis=1)
    return np.stack([x, y], axis=1)
