"""IJB-B / IJB-C template evaluation (1:1 verification and 1:N identification), as insightface's
``arcface_torch/eval_ijbc.py`` and ``_evaluation_/ijb/ijb_1n.py`` do it.

1. Each crop of ``loose_crop/`` is aligned from its GIVEN five landmarks (no detection) by
   ``align.align_face`` (the same similarity transform and template as align/) at the model's input size,
   and embedded with its mirror image; raw embeddings are cached (``FeatureCache``).
2. Image features by the test modes (insightface's names and defaults, those papers report):
   F1 ``flip="sum"``: embedding + embedding of the mirror (F0 ``"none"``: the embedding alone; ``"concat"``
   [e || e_flip] is offered too); N1 ``norm="keep"``: the feature's norm is kept, so it weights the image in
   its template (N0 ``"unit"``: each image feature L2-normalised first); D1 ``detector="weight"``: the
   feature is multiplied by the detector score of the landmark file (D0 ``"ignore"``).
3. Templates: mean of the features within each media (a video's frames, or one still), sum over the
   template's media, then L2 normalisation. Scores are cosines (dot products of the template features).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.ijb_meta import IJBMeta
from evaluation.ijb_metrics import identification_1toN, mean_of_galleries, verification_1to1
from fileio import atomic_output, write_json_atomic

FLIPS = ("sum", "none", "concat")
NORMS = ("keep", "unit")
DETECTOR_MODES = ("weight", "ignore")
CACHE_CHUNK = 4096  # images per cache file while embedding: an interrupted run loses at most this many


def mode_name(flip="sum", norm="keep", detector="weight") -> str:
    """insightface's test-mode code, e.g. "F1N1D1" (flip concat is reported as "Fc")."""
    f = {"sum": "F1", "none": "F0", "concat": "Fc"}[flip]
    return f + ("N1" if norm == "keep" else "N0") + ("D1" if detector == "weight" else "D0")


def image_features(emb, emb_flip, detector_scores, flip="sum", norm="keep", detector="weight") -> np.ndarray:
    """Per-image features float64 [N, D] (concat: [N, 2D]) from raw embeddings [N, D] by the test modes
    (module doc); detector_scores [N]."""
    if flip not in FLIPS or norm not in NORMS or detector not in DETECTOR_MODES:
        raise ValueError(f"modes: flip in {FLIPS}, norm in {NORMS}, detector in {DETECTOR_MODES}; got "
                         f"{flip!r}, {norm!r}, {detector!r}")
    x = np.asarray(emb, np.float64)
    if flip == "sum":
        x = x + np.asarray(emb_flip, np.float64)
    elif flip == "concat":
        x = np.concatenate([x, np.asarray(emb_flip, np.float64)], axis=1)
    if norm == "unit":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if detector == "weight":
        x = x * np.asarray(detector_scores, np.float64)[:, None]
    return x


def template_features(feature_rows, row_template, row_media, templates=None, chunk_rows=65536):
    """Pool image features into templates -> (template ids int64 [T] sorted, features float64 [T, D] unit rows).

    feature_rows(rows int64 [n]) -> float64 [n, D]: the image features of those face_tid_mid rows (called
    for chunks of whole templates, so memory stays at one chunk however many images there are).
    row_template, row_media int64 [N]. templates: only these (default: all). Within a template the
    features of a media are averaged, and the media means summed, then the sum L2-normalised.
    A template whose sum is zero (e.g. every detector score 0) is an error naming it.
    """
    row_template = np.asarray(row_template, np.int64)
    row_media = np.asarray(row_media, np.int64)
    rows = np.arange(len(row_template))
    if templates is not None:
        rows = rows[np.isin(row_template, templates)]
    order = rows[np.lexsort((row_media[rows], row_template[rows]))]
    t, m = row_template[order], row_media[order]
    group_start = np.flatnonzero(np.r_[True, (t[1:] != t[:-1]) | (m[1:] != m[:-1])])  # one group per (t, media)
    template_start = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    ids = t[template_start]
    out = None
    bounds = [0]  # chunks of whole templates, about chunk_rows rows each
    while bounds[-1] < len(ids):
        nxt = int(np.searchsorted(template_start, template_start[bounds[-1]] + chunk_rows, side="left"))
        bounds.append(min(len(ids), max(nxt, bounds[-1] + 1)))
    for first, last in itertools.pairwise(bounds):
        lo = template_start[first]
        hi = template_start[last] if last < len(template_start) else len(order)
        x = feature_rows(order[lo:hi])
        if out is None:
            out = np.zeros((len(ids), x.shape[1]), np.float64)
        g = group_start[(group_start >= lo) & (group_start < hi)] - lo
        counts = np.diff(np.r_[g, hi - lo])
        media_mean = np.add.reduceat(x, g, axis=0) / counts[:, None]
        group_template = t[lo:hi][g]
        tg = np.flatnonzero(np.r_[True, group_template[1:] != group_template[:-1]])
        out[first:last] = np.add.reduceat(media_mean, tg, axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if len(zero):
        raise ValueError(f"template {ids[zero[0]]} has a zero feature (all its images' detector scores are 0?); "
                         "evaluate it with --ijb-detector-score ignore")
    return ids, out / norms


def pair_scores(features, index1, index2, block=1024) -> np.ndarray:
    """Cosine scores float64 [P] of template pairs: rows index1 [P], index2 [P] of features [T, D] (unit rows).

    Pairs are grouped by their first template, `block` distinct first templates at a time; each block is
    one matrix product with the distinct second templates it meets, whose entries are then picked. That
    touches each template's feature once per block instead of twice per pair (15.7M pairs · 512-d gathered
    would be 64 GB of memory traffic).
    """
    index1 = np.asarray(index1, np.int64)
    index2 = np.asarray(index2, np.int64)
    order = np.argsort(index1, kind="stable")
    sorted1 = index1[order]
    starts = np.flatnonzero(np.r_[True, sorted1[1:] != sorted1[:-1]])
    scores = np.empty(len(index1), np.float64)
    for b in range(0, len(starts), block):
        lo = starts[b]
        hi = starts[b + block] if b + block < len(starts) else len(sorted1)
        rows, local_rows = np.unique(sorted1[lo:hi], return_inverse=True)
        cols, local_cols = np.unique(index2[order[lo:hi]], return_inverse=True)
        sim = features[rows] @ features[cols].T
        scores[order[lo:hi]] = sim[local_rows, local_cols]
    return scores


def score_pairs(template_ids, template_feats, t1, t2) -> np.ndarray:
    """Cosine scores [P] of template id pairs t1, t2 [P] (every id must be in template_ids, sorted)."""
    i1 = np.searchsorted(template_ids, t1)
    i2 = np.searchsorted(template_ids, t2)
    return pair_scores(template_feats, i1, i2)


# ---------------------------------------------------------------------------------------------- embedding


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FeatureCache:
    """Raw embeddings of an IJB set's crops for one model: ``DIR/features.npz`` (names [I], emb, emb_flip
    float32 [I, D], detector_scores [I]) beside ``DIR/cache.json`` (model fingerprint, input size, sha256 of
    the landmark file). While embedding, every CACHE_CHUNK images go to ``DIR/chunk_NNNNN.npz`` (written
    atomically), so an interrupted run resumes at the first missing chunk; features.npz replaces them.
    """

    def __init__(self, directory, fingerprint, image_size, landmark_file, num_images, chunk=CACHE_CHUNK):
        self.dir = Path(directory)
        self.chunk = int(chunk)
        self.key = {"model_fingerprint": fingerprint, "image_size": list(image_size),
                    "landmarks_sha256": _sha256(landmark_file), "num_images": int(num_images), "chunk": self.chunk}

    @property
    def features_file(self) -> Path:
        return self.dir / "features.npz"

    def _check_key(self):
        info = self.dir / "cache.json"
        if info.is_file():
            stored = json.loads(info.read_text())
            if stored != self.key:
                diff = [k for k in self.key if stored.get(k) != self.key[k]]
                raise ValueError(f"{info}: this feature cache is for another {', '.join(diff)}; pass another "
                                 f"--ijb-cache or delete {self.dir}")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(info, self.key)

    def load_or_embed(self, names, load_crop, embed_fn, batch_size=256, progress=True, detector_scores=None):
        """(emb, emb_flip) float32 [I, D] for names [I]: from the cache, else embedding what is missing.

        load_crop(name) -> aligned uint8 [H, W, 3]; embed_fn as engines.model_file.make_embed_fn;
        detector_scores [I] are stored beside them (for other tools; the landmark file stays the source).
        Returns also the number of images embedded now (0 when all came from the cache).
        """
        from evaluation.embed import embed_paths_raw

        self._check_key()
        if self.features_file.is_file():
            with np.load(self.features_file, allow_pickle=False) as data:
                if list(data["names"]) == list(names):
                    return data["emb"], data["emb_flip"], 0
            raise ValueError(f"{self.features_file}: its image list differs from the landmark file's; delete {self.dir}")
        starts = list(range(0, len(names), self.chunk))
        embedded = 0
        parts = []
        with tqdm(total=len(names), desc="embedding IJB crops", unit="img", disable=not progress) as bar:
            for k, start in enumerate(starts):
                part_file = self.dir / f"chunk_{k:05d}.npz"
                chunk_names = names[start:start + self.chunk]
                if part_file.is_file():
                    with np.load(part_file, allow_pickle=False) as data:
                        emb, emb_flip = data["emb"], data["emb_flip"]
                else:
                    emb, emb_flip = embed_paths_raw(embed_fn, chunk_names, load_crop, batch_size, "concat",
                                                    None, progress=False)
                    with atomic_output(part_file) as tmp:
                        np.savez(tmp, emb=emb, emb_flip=emb_flip)
                    embedded += len(chunk_names)
                parts.append((emb, emb_flip))
                bar.update(len(chunk_names))
        emb = np.concatenate([p[0] for p in parts])
        emb_flip = np.concatenate([p[1] for p in parts])
        with atomic_output(self.features_file) as tmp:
            extra = {} if detector_scores is None else {"detector_scores": np.asarray(detector_scores, np.float64)}
            np.savez(tmp, names=np.array(names), emb=emb, emb_flip=emb_flip, **extra)
        for k in range(len(starts)):
            (self.dir / f"chunk_{k:05d}.npz").unlink(missing_ok=True)
        return emb, emb_flip, embedded


def crop_loader(meta: IJBMeta, image_size):
    """name -> the crop aligned from its given landmarks, uint8 [H, W, 3] RGB (align.align_face)."""
    from align import align_face
    from evaluation.images import read_rgb

    position = {n: i for i, n in enumerate(meta.image_names)}

    def load(name):
        return align_face(read_rgb(meta.image_dir / name), meta.landmarks[position[name]], image_size)

    return load


# ---------------------------------------------------------------------------------------------- protocols


def evaluate_features(meta: IJBMeta, emb, emb_flip, flip="sum", norm="keep", detector="weight", one_to_n=True):
    """All metrics from the raw embeddings of meta.image_names -> (result dict, roc (fpr, tpr, thr)).

    Template features are pooled from the face_tid_mid rows (module doc); 1:1 on the pair file, 1:N on each
    gallery with the mixed probes."""
    start = time.perf_counter()
    scores_of_images = meta.detector_scores

    def feature_rows(rows):
        images = meta.row_image[rows]
        return image_features(emb[images], emb_flip[images], scores_of_images[images], flip, norm, detector)

    ids, feats = template_features(feature_rows, meta.row_template, meta.row_media)
    pooled = time.perf_counter()
    scores = score_pairs(ids, feats, meta.pair_t1, meta.pair_t2)
    one, roc = verification_1to1(scores, meta.pair_label)
    scored = time.perf_counter()
    result = {"target": meta.target, "mode": mode_name(flip, norm, detector), "flip": flip, "norm": norm,
              "detector": detector, "num_images": len(meta.image_names), "num_rows": len(meta.row_image),
              "num_templates": len(ids), "verification": one}
    if one_to_n and meta.galleries:
        galleries = {}
        probe_feats = feats[np.searchsorted(ids, meta.probe.templates)]
        for name, gallery in meta.galleries.items():
            galleries[name] = identification_1toN(probe_feats, meta.probe.subjects,
                                                  feats[np.searchsorted(ids, gallery.templates)], gallery.subjects)
        result["identification"] = {**galleries, "mean": mean_of_galleries(galleries)}
    result["seconds"] = {"pooling": pooled - start, "verification": scored - pooled,
                         "identification": time.perf_counter() - scored}
    return result, roc, scores


def evaluate_model_on_ijb(ijb_dir, target="IJBC", model=None, engine="auto", flip="sum", norm="keep",
                          detector="weight", cache_dir=None, batch_size=256, progress=True, one_to_n=True):
    """Read the protocol, embed (or load from the cache) every crop, and score -> (result, roc, scores).

    model: as engines.load_model (a run directory, .keras or .onnx file); cache_dir default:
    RUN/eval/<target>_features_<fingerprint[:12]>_<H>x<W>/.
    """
    from engines.loading import load_model
    from evaluation.ijb_meta import read_ijb

    meta = read_ijb(ijb_dir, target, need_1n=one_to_n)  # every file and image checked before the model loads
    loaded = load_model(model, engine)
    h, w = loaded.image_size
    fingerprint = loaded.fingerprint.split(":")[-1][:12]
    cache_dir = Path(cache_dir) if cache_dir else loaded.eval_dir / f"{target.lower()}_features_{fingerprint}_{h}x{w}"
    cache = FeatureCache(cache_dir, loaded.fingerprint, loaded.image_size, meta.files["landmarks"],
                         len(meta.image_names))
    start = time.perf_counter()
    emb, emb_flip, embedded = cache.load_or_embed(meta.image_names, crop_loader(meta, loaded.image_size),
                                                  loaded.embed_fn, batch_size, progress, meta.detector_scores)
    seconds = time.perf_counter() - start
    result, roc, scores = evaluate_features(meta, emb, emb_flip, flip, norm, detector, one_to_n)
    result.update(model=str(loaded.path), engine=loaded.engine, model_fingerprint=loaded.fingerprint,
                  image_size=[h, w], ijb_dir=str(ijb_dir), cache_dir=str(cache_dir), images_embedded=embedded,
                  embed_seconds=seconds)
    result["eval_dir"] = str(loaded.eval_dir)
    return result, roc, scores
