"""Face alignment: MTCNN 5-point detection and similarity warp onto the 112×96 (or 112×112) template.

    from align import FaceDetector, pick_face, align_face
    faces = FaceDetector().detect(image_rgb)          # [(box, score, landmarks [5, 2]), ...]
    crop = align_face(image_rgb, faces[pick_face(faces, image_rgb.shape)].landmarks)   # uint8 [112, 96, 3]

    align_folder(RAW, ALIGNED)   # the whole tree, parallel and resumable (CLI: align/align_lfw.py)

TensorFlow is imported only when a FaceDetector is built.
"""

from fileio.quiet_tensorflow import quiet_tensorflow_for_api

quiet_tensorflow_for_api()   # before any TensorFlow import below: its C++ start-up lines stay out of the terminal

from align.detector import DEFAULT_MIN_FACE_SIZE, DEFAULT_THRESHOLDS, Face, FaceDetector, pick_face
from align.folder import AlignError, align_folder
from align.geometry import REFERENCE_LANDMARKS, align_face, estimate_transform, fallback_landmarks, reference_landmarks
from align.image_io import ImageError, read_image_rgb
from align.report import load_report

__all__ = [
    "DEFAULT_MIN_FACE_SIZE",
    "DEFAULT_THRESHOLDS",
    "REFERENCE_LANDMARKS",
    "AlignError",
    "Face",
    "FaceDetector",
    "ImageError",
    "align_face",
    "align_folder",
    "estimate_transform",
    "fallback_landmarks",
    "load_report",
    "pick_face",
    "read_image_rgb",
    "reference_landmarks",
]
