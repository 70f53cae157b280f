"""Enroll people into a gallery from a folder per person; identify the people in photos.

    enroll_folder("staff.gallery", "PEOPLE/", model="runs/RUN")   # PEOPLE/<name>/<photos>
    results = search_photos("staff.gallery", ["door.jpg"])         # top-k names, or "unknown"
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fileio import DEFAULT_MAX_MEGAPIXELS, is_image_file
from inference.embedding import PhotoRecord, embed_photos
from inference.gallery import Gallery, GalleryError
from inference.thresholds import Threshold, model_threshold

UNKNOWN = "unknown"


@dataclass
class EnrollSummary:
    """added / replaced: names; kept: people already in the gallery and not in this folder (untouched);
    skipped: name -> why nobody was enrolled for it; failed: PhotoRecords of photos that failed;
    notes: alignment notes (several faces, centre fallback); gallery: the path written."""

    added: list = field(default_factory=list)
    replaced: list = field(default_factory=list)
    kept: int = 0
    skipped: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    photos: int = 0
    gallery: str = ""
    model: str = ""   # the model's description (EmbeddingModel.describe)


def people_in_folder(input_dir) -> tuple:
    """({name: [photo paths]} for every subfolder, sorted; [files directly in input_dir that are ignored]).

    Raises FileNotFoundError / ValueError with what to do when the folder is missing or holds no person.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--input-dir {root} is not a folder; expected one subfolder per person with their "
                                f"photos (PEOPLE/<name>/<photo>.jpg)")
    people, stray = {}, []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            people[entry.name] = sorted(str(Path(entry.path) / f) for f in os.listdir(entry.path)
                                        if is_image_file(f) and (Path(entry.path) / f).is_file())
        elif entry.is_file():
            stray.append(entry.path)
    if not people:
        raise ValueError(f"{root} has no subfolders; put each person's photos in PEOPLE/<name>/")
    return people, stray


def enroll_folder(gallery_path, input_dir, model=None, fallback="none", engine="auto", progress=False,
                  detector=None, max_megapixels=DEFAULT_MAX_MEGAPIXELS) -> EnrollSummary:
    """Enroll (or re-enroll) every person folder of ``input_dir`` into the gallery file.

    A person already in the gallery is replaced by the template of this folder's photos; everyone else
    in the gallery is kept as it is, without recomputing. model: as engines.load_model (None:
    the model of an existing gallery, else the newest run). A photo that cannot be aligned is named in
    the summary and left out; a person with no usable photo is not enrolled (and not removed).
    """
    from engines.loading import load_model

    gallery_path = Path(gallery_path)
    people, stray = people_in_folder(input_dir)
    gallery = Gallery.load(gallery_path) if gallery_path.exists() else None
    if model is None and gallery is not None:
        model = _gallery_model(gallery, gallery_path)
    model = load_model(model, engine)
    if gallery is None:
        gallery = Gallery.for_model(model)
    else:
        gallery.check_model(model, gallery_path)
        gallery.model_path = str(model.path)  # the same weights, perhaps moved: remember where they are now
    summary = EnrollSummary(gallery=str(gallery_path), model=model.describe())
    summary.skipped.update({Path(p).name: "not in a person folder (PEOPLE/<name>/<photo>)" for p in stray})
    paths = [p for photos in people.values() for p in photos]
    for name, photos in people.items():
        if not photos:
            summary.skipped[name] = "no image files (.jpg, .jpeg, .png, .bmp) in its folder"
    if paths:
        features, records = embed_photos(paths, model, fallback=fallback, progress=progress, detector=detector,
                                         max_megapixels=max_megapixels)
        summary.photos = len(paths)
        by_path = dict(zip(paths, zip(features, records)))
        for name, photos in people.items():
            usable = [(p, by_path[p][0]) for p in photos if by_path[p][1].ok]
            summary.failed += [by_path[p][1] for p in photos if not by_path[p][1].ok]
            summary.notes += [by_path[p][1].note() for p in photos if by_path[p][1].ok and by_path[p][1].note()]
            if photos and not usable:
                summary.skipped[name] = "none of its photos could be aligned (see the failures above)"
                continue
            if usable:
                result = gallery.enroll(name, np.stack([f for _, f in usable]), [p for p, _ in usable])
                (summary.added if result == "added" else summary.replaced).append(name)
    summary.kept = len(gallery) - len(summary.added) - len(summary.replaced)
    if summary.added or summary.replaced:
        gallery.save(gallery_path)
    return summary


def _gallery_model(gallery, gallery_path):
    if not Path(gallery.model_path).is_file():
        raise GalleryError(f"{gallery_path} was enrolled with {gallery.model_path}, which is not there any more: pass "
                           f"--model (the same model; another is refused)")
    return gallery.model_path


def open_set_note(threshold: Threshold, gallery_size: int):
    """A warning when a pairwise verification threshold is used to reject strangers, or None.

    The evaluation's FAR is per comparison; a stranger is compared with every enrolled person, and is
    taken for someone when any of them passes: about 1 − (1 − FAR)^N of strangers. Measured on the
    LFW DevTest gallery of 496 people (benchmarks/identification.py): at MobileFaceNet's verification
    threshold (FAR 11.4 % per pair) every stranger matched someone.
    """
    if threshold.far is None or gallery_size < 2:
        return None
    strangers = 1.0 - (1.0 - threshold.far) ** gallery_size
    if strangers < 2 * threshold.far:
        return None
    return (f"note: this is a verification threshold (FAR {100 * threshold.far:.2f} % per comparison); with "
            f"{gallery_size} people enrolled, about {100 * strangers:.0f} % of strangers will match someone above "
            f"it. For open-set use pass a stricter --threshold (benchmarks/identification.py measures the one "
            f"for FAR 1 % of strangers)")


@dataclass
class Identification:
    """One photo's answer: candidates [(name, cosine)] best first (top-k); name: the best candidate if its
    cosine > threshold.cosine, else "unknown" (None when the photo failed); record: its PhotoRecord."""

    photo: str
    record: PhotoRecord
    candidates: list
    name: str | None


def search_photos(gallery_path, photos, model=None, top_k=5, threshold=None, report_path=None, fallback="none",
                  engine="auto", progress=False, detector=None, min_quality=None, far=None,
                  max_megapixels=DEFAULT_MAX_MEGAPIXELS):
    """Identify the person in each photo: (list of Identification, Threshold used, model description,
    note: open_set_note for this gallery, or None).

    model: None = the model recorded in the gallery; another model is refused (GalleryError).
    threshold: open-set threshold as a cosine (else the model's evaluation report, or report_path; far: that
    report's threshold for this false accept rate per comparison, e.g. 1e-4, instead of its accuracy-optimal one).
    min_quality: a probe whose quality (feature norm, PhotoRecord.quality) is below it is not searched;
    its record says why.
    """
    from engines.loading import load_model

    gallery_path = Path(gallery_path)
    gallery = Gallery.load(gallery_path)
    model = load_model(_gallery_model(gallery, gallery_path) if model is None else model, engine)
    gallery.check_model(model, gallery_path)
    decision: Threshold = model_threshold(model, threshold, report_path, far)
    features, records = embed_photos(photos, model, fallback=fallback, progress=progress, detector=detector,
                                     min_quality=min_quality, max_megapixels=max_megapixels)
    ok = [i for i, record in enumerate(records) if record.ok]
    results = [Identification(str(p), r, [], None) for p, r in zip(photos, records)]
    if ok:
        rows, cosines = gallery.search(features[ok], top_k)
        for i, row, cos in zip(ok, rows, cosines):
            candidates = [(gallery.names[r], float(c)) for r, c in zip(row, cos)]
            results[i].candidates = candidates
            results[i].name = candidates[0][0] if candidates[0][1] > decision.cosine else UNKNOWN
    return results, decision, model.describe(), open_set_note(decision, len(gallery))
