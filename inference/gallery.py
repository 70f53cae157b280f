"""The gallery file: one template per enrolled person, and exact search over them.

One ``.npz`` file (numpy's zip of arrays, read with ``allow_pickle=False``: no code in it), written
atomically (temporary name, then rename), holding:

- ``names`` [P] str and ``templates`` float32 [P, F]: a person's template is the L2-normalised mean
  of the features of their photos (features: inference.embedding, F = 2 × the embedding size);
- ``image_counts`` int [P]; ``sources`` [M] str and ``source_person`` int [M]: the photos enrolled
  and whose they are;
- ``model_fingerprint``, ``model_path``, ``image_size`` [2], ``flip`` and ``format``: the model that
  made the templates. Features of another model live in another space: searching with it is refused.

Search is exact: cosine = templates @ feature (unit vectors), top-k by argpartition. At 10^5
templates of 1,024 floats that is one 400 MB matrix-vector product per photo (benchmarks/
identification.py measures it against the per-photo alignment and embedding).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fileio import atomic_output

GALLERY_FORMAT = "faceid-gallery-1"


class GalleryError(ValueError):
    """A gallery that cannot be used as asked; the message names the file and what to do."""


@dataclass
class Gallery:
    """Enrolled people (see module doc). Rows of ``templates`` are unit vectors."""

    model_fingerprint: str
    model_path: str
    image_size: tuple
    flip: str = "concat"
    names: list = field(default_factory=list)
    templates: np.ndarray = None
    image_counts: list = field(default_factory=list)
    sources: list = field(default_factory=list)  # per person: the photo paths enrolled

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def for_model(cls, model) -> Gallery:
        """An empty gallery for an engines.EmbeddingModel."""
        return cls(model.fingerprint, str(model.path), tuple(model.image_size))

    def check_model(self, model, where) -> None:
        """GalleryError unless ``model`` is the model that made this gallery."""
        if model.fingerprint != self.model_fingerprint:
            raise GalleryError(
                f"{where} was enrolled with another model ({self.model_path}, fingerprint "
                f"{self.model_fingerprint[:19]}…); {model.path} has fingerprint {model.fingerprint[:19]}…. Features "
                f"of different models cannot be compared: search with --model {self.model_path}, or enroll the "
                f"people again into a new --gallery with this model")

    def enroll(self, name: str, features, sources) -> str:
        """Set ``name``'s template from their photos' features [K, F] (unit rows): "added" or "replaced"."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or len(features) == 0 or len(features) != len(sources):
            raise ValueError(f"{name}: need features [K, F] for K >= 1 photos and K sources, got {features.shape} "
                             f"and {len(sources)}")
        if not np.isfinite(features).all():
            raise ValueError(f"{name}: features contain NaN (a photo that failed to align?)")
        mean = features.mean(axis=0)
        template = (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)
        if self.templates is not None and self.templates.shape[1] != template.shape[0]:
            raise ValueError(f"{name}: features have {template.shape[0]} values, the gallery's {self.templates.shape[1]}")
        if name in self.names:
            row = self.names.index(name)
            self.templates[row] = template
            self.image_counts[row] = len(features)
            self.sources[row] = [str(s) for s in sources]
            return "replaced"
        self.names.append(name)
        self.templates = template[None] if self.templates is None else np.concatenate([self.templates, template[None]])
        self.image_counts.append(len(features))
        self.sources.append([str(s) for s in sources])
        return "added"

    def search(self, features, top_k: int = 5):
        """Exact cosine search of features [Q, F] (unit rows): (rows int [Q, k], cosines float32 [Q, k]),
        best first; k = min(top_k, number of people)."""
        if not len(self):
            raise GalleryError("the gallery is empty: enroll people first (python identify.py enroll ...)")
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.templates.shape[1]:
            raise ValueError(f"features must be [Q, {self.templates.shape[1]}], got {features.shape}")
        k = max(1, min(int(top_k), len(self)))
        scores = features @ self.templates.T  # [Q, P]
        if k < len(self):
            rows = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            rows = np.broadcast_to(np.arange(len(self)), scores.shape).copy()
        top = np.take_along_axis(scores, rows, axis=1)
        order = np.argsort(-top, axis=1, kind="stable")
        return np.take_along_axis(rows, order, axis=1), np.take_along_axis(top, order, axis=1)

    # ---- the file ------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the gallery to ``path`` atomically (any name; it is a .npz archive)."""
        if not len(self):
            raise GalleryError(f"nothing enrolled: {path} not written")
        person_of_source = np.concatenate([np.full(len(s), i, np.int64) for i, s in enumerate(self.sources)])
        arrays = {
            "format": np.array(GALLERY_FORMAT), "names": np.array(self.names, dtype=str),
            "templates": self.templates.astype(np.float32), "image_counts": np.array(self.image_counts, np.int64),
            "sources": np.array([s for person in self.sources for s in person], dtype=str),
            "source_person": person_of_source, "model_fingerprint": np.array(self.model_fingerprint),
            "model_path": np.array(self.model_path), "image_size": np.array(self.image_size, np.int64),
            "flip": np.array(self.flip),
        }
        # a file object: np.savez would append .npz to a name
        with atomic_output(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path) -> Gallery:
        """Read a gallery file; GalleryError naming the file when it is missing or not a gallery."""
        path = Path(path)
        if not path.is_file():
            raise GalleryError(f"gallery not found: {path}. Create it with python identify.py enroll --gallery {path} "
                               f"--input-dir PEOPLE/")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:   # truncated: BadZipFile
            raise GalleryError(f"{path} is not a gallery file ({type(error).__name__}: {error}); enroll the people "
                               "again into a new gallery, or restore the file") from error
        try:
            return cls._checked(path, arrays)
        except (IndexError, KeyError, TypeError, ValueError) as error:   # a hand-edited file: arrays of odd forms
            raise GalleryError(f"{path}: a damaged or hand-edited gallery ({type(error).__name__}: {error}); enroll "
                               "the people again into a new gallery, or restore the file") from error

    @classmethod
    def _checked(cls, path, arrays) -> Gallery:
        """The Gallery that ``arrays`` describe, after checking everything they claim (GalleryError otherwise)."""
        required = ("format", "names", "templates", "image_counts", "sources", "source_person", "model_fingerprint",
                    "model_path", "image_size", "flip")
        missing = [name for name in required if name not in arrays]
        if missing or str(arrays["format"]) != GALLERY_FORMAT:
            raise GalleryError(f"{path} is not a {GALLERY_FORMAT} gallery (missing {missing or 'the format tag'})")
        names = [str(n) for n in arrays["names"]]
        templates = arrays["templates"].astype(np.float32)
        if templates.ndim != 2 or len(templates) != len(names):
            raise GalleryError(f"{path}: templates {templates.shape} do not match {len(names)} names")
        # Scores are dot products of unit vectors: a template that is not finite or not unit length
        # (a hand edit, a bad write) would rank people by something else without a word.
        norms = np.linalg.norm(templates.astype(np.float64), axis=1) if len(templates) else np.zeros(0)
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-3))]
        if bad:
            raise GalleryError(f"{path}: the template(s) of {bad[:5]} are not finite unit vectors; the file is damaged: "
                               "enroll those people again (identify.py enroll --gallery ... re-enrolls a name)")
        counts = arrays["image_counts"]
        if len(counts) != len(names) or (len(counts) and counts.min() < 1) or len(arrays["image_size"]) != 2:
            raise GalleryError(f"{path}: image_counts or image_size do not describe its {len(names)} people")
        if len(set(names)) != len(names):
            raise GalleryError(f"{path}: a name is enrolled twice; the file was edited: enroll into a new gallery")
        person_of_source = arrays["source_person"]
        if len(person_of_source) != len(arrays["sources"]) or (len(person_of_source) and (
                person_of_source.min() < 0 or person_of_source.max() >= len(names))):
            raise GalleryError(f"{path}: source_person does not index its {len(names)} people")
        sources = [[] for _ in names]
        for source, person in zip(arrays["sources"], person_of_source):
            sources[int(person)].append(str(source))
        return cls(str(arrays["model_fingerprint"]), str(arrays["model_path"]), tuple(int(v) for v in arrays["image_size"]),
                   str(arrays["flip"]), names, templates, [int(c) for c in arrays["image_counts"]], sources)
