"""Using a trained model: features of photos, verification, a gallery to identify people, ONNX export.

    from inference import embed_photos, embed_aligned, verify_photos, enroll_folder, search_photos
    features, report = embed_photos(["a.jpg", "b.jpg"], "runs/RUN")   # raw photos -> float32 [N, 2D]
    result = verify_photos("a.jpg", "b.jpg", "runs/RUN")               # cosine, same/different, threshold origin

Photos go through the alignment of training (align.photo: MTCNN, the largest face near the centre,
5-point similarity) and become evaluation's flip-concatenated features; decisions use the threshold
of the model's own evaluation report (inference.thresholds) or one you give. Models load through
engines.load_model (run directory, .keras or .onnx; engines fast, keras, onnx).
The command lines verify.py, identify.py and export_onnx.py are thin wrappers over these functions.
TensorFlow is imported only when a model or the face detector is loaded.
"""

from fileio.quiet_tensorflow import quiet_tensorflow_for_api

quiet_tensorflow_for_api()   # before any TensorFlow import below: its C++ start-up lines stay out of the terminal

from engines import EmbeddingModel, load_model
from inference.embedding import PhotoError, PhotoRecord, embed_aligned, embed_photos
from inference.gallery import Gallery, GalleryError
from inference.identification import UNKNOWN, EnrollSummary, Identification, enroll_folder, search_photos
from inference.thresholds import Threshold, ThresholdError, model_threshold
from inference.verification import Verification, verify_photos

__all__ = [
    "UNKNOWN",
    "EmbeddingModel",
    "EnrollSummary",
    "Gallery",
    "GalleryError",
    "Identification",
    "PhotoError",
    "PhotoRecord",
    "Threshold",
    "ThresholdError",
    "Verification",
    "embed_aligned",
    "embed_photos",
    "enroll_folder",
    "load_model",
    "model_threshold",
    "search_photos",
    "verify_photos",
]
