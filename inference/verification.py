"""Are two photos the same person? Cosine of their features against the model's threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fileio import DEFAULT_MAX_MEGAPIXELS
from inference.embedding import PhotoError, PhotoRecord, embed_photos
from inference.thresholds import Threshold, loose_threshold_warning, model_threshold


@dataclass
class Verification:
    """cosine: similarity of the two features in [-1, 1]; same: cosine > threshold.cosine; threshold:
    where the threshold came from; photos: the two PhotoRecords (alignment notes); model: description."""

    cosine: float
    same: bool
    threshold: Threshold
    photos: list
    model: str

    def lines(self) -> list:
        """What verify.py prints: the decision, the threshold's origin and FAR, alignment notes."""
        verdict = "same person" if self.same else "different people"
        relation = ">" if self.same else "<="
        out = [f"{verdict}: cosine similarity {self.cosine:.4f} {relation} threshold {self.threshold.cosine:.4f}",
               self.threshold.description, f"model: {self.model}",
               "face quality (feature norm; MagFace/AdaFace models): "
               + ", ".join(f"{record.path} {record.quality:.2f}" for record in self.photos)]
        out += [note for note in (record.note() for record in self.photos) if note]
        warning = loose_threshold_warning(self.threshold)
        return out + ([warning] if warning else [])


def verify_photos(photo_a, photo_b, model=None, threshold=None, report_path=None, fallback="none", engine="auto",
                  detector=None, progress=False, min_quality=None, far=None,
                  max_megapixels=DEFAULT_MAX_MEGAPIXELS) -> Verification:
    """Compare two raw photos. model: as engines.load_model; threshold: a cosine (else the model's
    evaluation report, or report_path; far: that report's threshold for this false accept rate, e.g. 1e-3,
    instead of its accuracy-optimal one); fallback: "none" or "center" for photos without a face;
    min_quality: a photo whose quality (its feature norm, PhotoRecord.quality) is below it is refused;
    max_megapixels: a photo whose header says more pixels is refused before it is decoded.

    Raises PhotoError naming every photo that could not be aligned or read (and the fix), ThresholdError
    when no threshold is known.
    """
    from engines.loading import load_model

    model = load_model(model, engine)
    decision = model_threshold(model, threshold, report_path, far)  # before the slow part: fail fast
    features, records = embed_photos([photo_a, photo_b], model, fallback=fallback, detector=detector,
                                     progress=progress, min_quality=min_quality, max_megapixels=max_megapixels)
    failed = [record for record in records if not record.ok]
    if failed:
        raise PhotoError("; ".join(record.note() for record in failed))
    cosine = float(np.clip(np.dot(features[0].astype(np.float64), features[1].astype(np.float64)), -1.0, 1.0))
    return Verification(cosine, cosine > decision.cosine, decision, records, model.describe())


__all__ = ["PhotoRecord", "Verification", "verify_photos"]
