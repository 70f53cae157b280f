"""Embedding images (with horizontal flips) and verifying pairs with them.

Flip modes (features per image, L2-normalised):
- ``concat`` (default, facenet's ``use_flipped_images``): ``[n(e) || n(e_flip)] / sqrt(2)`` where n()
  is L2 normalisation; each half is normalised first as in facenet, whose network outputs unit
  vectors, then the whole (so squared distances stay in [0, 4]).
- ``sum`` (insightface): ``n(e + e_flip)`` of the raw embeddings.
- ``concat_raw`` (SphereFace's evaluation.m): ``[e || e_flip]`` of the raw embeddings, not normalised
  (its protocol subtracts the training folds' mean first, evaluation/protocols.py).
- ``none``: ``n(e)``.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from evaluation.metrics import l2_normalize
from evaluation.pairs import PairSet
from evaluation.protocols import get_protocol

FLIP_MODES = ("concat", "sum", "concat_raw", "none")


def combine_flips(emb, emb_flip=None, flip="concat") -> np.ndarray:
    """Per-image features from embeddings [N, D] and those of the flipped images [N, D] (see module doc).

    Returns float32 [N, 2D] for concat and concat_raw, [N, D] otherwise; rows of unit norm but for concat_raw.
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"flip must be one of {FLIP_MODES}, got {flip!r}")
    emb = np.asarray(emb, dtype=np.float64)
    if flip == "none":
        return l2_normalize(emb).astype(np.float32)
    if emb_flip is None:
        raise ValueError(f"flip={flip!r} needs the embeddings of the flipped images")
    emb_flip = np.asarray(emb_flip, dtype=np.float64)
    if emb_flip.shape != emb.shape:
        raise ValueError(f"flipped embeddings {emb_flip.shape} differ in shape from embeddings {emb.shape}")
    if flip == "sum":
        return l2_normalize(emb + emb_flip).astype(np.float32)
    if flip == "concat_raw":
        return np.concatenate([emb, emb_flip], axis=1).astype(np.float32)
    return l2_normalize(np.concatenate([l2_normalize(emb), l2_normalize(emb_flip)], axis=1)).astype(np.float32)


def _embed_batch(embed_fn, images_uint8, flip):
    """One forward pass of the batch and (unless flip='none') its mirror images stacked together.

    Returns the raw embeddings (emb [B, D], emb_flip [B, D] or None)."""
    x = np.asarray(images_uint8).astype(np.float32)
    if flip != "none":
        x = np.concatenate([x, x[:, :, ::-1, :]], axis=0)  # [B, H, W, 3]: axis 2 is width
    out = np.asarray(embed_fn(x), dtype=np.float32)
    if out.ndim != 2 or len(out) != len(x):
        raise ValueError(f"the embedding model returned shape {out.shape} for a batch of {len(x)} images; expected [B, D]")
    if flip == "none":
        return out, None
    n = len(images_uint8)
    return out[:n], out[n:]


def _images_per_pass(batch_size, flip):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return batch_size if flip == "none" else max(1, batch_size // 2)


def embed_images(embed_fn: Callable, images_uint8, batch_size: int = 256, flip: str = "concat", progress: bool = False,
                 return_norms: bool = False):
    """Features of images_uint8 [N, H, W, 3] (RGB, 0..255) -> float32 [N, D'] (unit rows, see module doc).

    embed_fn maps a float32 batch [B, H, W, 3] in [0, 255] to [B, D] (the exported model). batch_size
    counts images per forward pass, flips included (an image and its mirror are two). With
    ``return_norms``: (features, norms float32 [N]), the L2 norm of each image's raw embedding (not its
    mirror's): the face-quality score of MagFace and AdaFace models.
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"flip must be one of {FLIP_MODES}, got {flip!r}")
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3], got {images_uint8.shape}")
    step = _images_per_pass(batch_size, flip)
    chunks, norms = [], []
    for start in tqdm(range(0, len(images_uint8), step), desc="embedding", unit="batch", disable=not progress):
        emb, emb_flip = _embed_batch(embed_fn, images_uint8[start : start + step], flip)
        chunks.append(combine_flips(emb, emb_flip, flip))
        norms.append(np.linalg.norm(emb.astype(np.float64), axis=1).astype(np.float32))
    if not chunks:
        raise ValueError("no images to embed")
    features = np.concatenate(chunks, axis=0)
    return (features, np.concatenate(norms)) if return_norms else features


def _loader(images_by_path):
    if callable(images_by_path):
        return images_by_path

    def load(path):
        try:
            return images_by_path[path]
        except KeyError:
            raise KeyError(f"no image for pair path {path!r}") from None

    return load


def _load_chunk(load, paths, image_size):
    images = []
    for path in paths:
        image = np.asarray(load(path))
        if image.ndim != 3 or image.shape[-1] != 3 or (image_size and tuple(image.shape[:2]) != tuple(image_size)):
            want = f"{image_size[0]}x{image_size[1]}x3" if image_size else "HxWx3"
            raise ValueError(f"image {path!r} has shape {image.shape}, the model needs {want} (H x W x RGB)")
        if images and image.shape != images[0].shape:
            raise ValueError(f"image {path!r} has shape {image.shape}, unlike {paths[0]!r} with {images[0].shape}")
        images.append(image)
    return np.stack(images)


def embed_paths_raw(embed_fn, paths, images_by_path, batch_size=256, flip="concat", image_size=None, progress=True):
    """Raw model outputs for each path (in order): (emb float32 [N, D], emb_flip [N, D] or None for flip='none').

    images_by_path: dict path -> uint8 [H, W, 3], or a callable doing that lookup (e.g. reading a file).
    image_size: (H, W) the model needs; an image of another size is an error naming it.
    Decoding of the next batch (a worker thread) overlaps the forward pass of the current one.
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"flip must be one of {FLIP_MODES}, got {flip!r}")
    if not len(paths):
        raise ValueError("no images to embed")
    load = _loader(images_by_path)
    step = _images_per_pass(batch_size, flip)
    starts = list(range(0, len(paths), step))
    emb = emb_flip = None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool, tqdm(
        total=len(paths), desc="embedding", unit="img", disable=not progress
    ) as bar:
        pending = pool.submit(_load_chunk, load, paths[0:step], image_size)
        for i, start in enumerate(starts):
            chunk = pending.result()
            if i + 1 < len(starts):
                nxt = starts[i + 1]
                pending = pool.submit(_load_chunk, load, paths[nxt : nxt + step], image_size)
            out, out_flip = _embed_batch(embed_fn, chunk, flip)
            if emb is None:
                emb = np.empty((len(paths), out.shape[1]), dtype=np.float32)
                emb_flip = None if out_flip is None else np.empty_like(emb)
            emb[start : start + len(out)] = out
            if out_flip is not None:
                emb_flip[start : start + len(out)] = out_flip
            bar.update(len(out))
    return emb, emb_flip


def embed_paths(embed_fn, paths, images_by_path, batch_size=256, flip="concat", image_size=None, progress=True):
    """Features of each path (in order): float32 [N, D'] (unit rows; see embed_paths_raw and combine_flips)."""
    emb, emb_flip = embed_paths_raw(embed_fn, paths, images_by_path, batch_size, flip, image_size, progress)
    return combine_flips(emb, emb_flip, flip)


def gather_pairs(features, paths, pairs: PairSet):
    """Rows of features [N, D] (one per path, same order) -> (emb_a, emb_b) [P, D] for the pairs."""
    index = {p: i for i, p in enumerate(paths)}
    missing = [p for p in pairs.unique_paths() if p not in index]
    if missing:
        raise KeyError(f"{len(missing)} pair path(s) have no features, e.g. {missing[:3]}")
    ia = np.fromiter((index[p] for p in pairs.paths_a), dtype=np.int64, count=len(pairs))
    ib = np.fromiter((index[p] for p in pairs.paths_b), dtype=np.int64, count=len(pairs))
    return features[ia], features[ib]


def evaluate_pairs(
    embed_fn: Callable,
    pairs: PairSet,
    images_by_path,
    batch_size: int = 256,
    flip: str | None = None,
    far_target: float = 1e-3,
    image_size=None,
    progress: bool = True,
    protocol: str = "facenet",
) -> dict:
    """Embed each distinct image of ``pairs`` once (plus its flip) and return the metrics of ``protocol``
    (evaluation.protocols: facenet's verification_metrics by default; flip=None: the protocol's flip mode).

    images_by_path: dict path -> uint8 [H, W, 3] or callable(path) -> that array; keys are the PairSet's
    paths. The result also holds flip, num_images, embed_seconds and images_per_second (distinct images).
    """
    flip = flip or get_protocol(protocol).flip
    paths = pairs.unique_paths()
    start = time.perf_counter()
    features = embed_paths(embed_fn, paths, images_by_path, batch_size, flip, image_size, progress)
    seconds = time.perf_counter() - start
    emb_a, emb_b = gather_pairs(features, paths, pairs)
    result = get_protocol(protocol).metrics(emb_a, emb_b, pairs.issame, pairs.folds, far_target)
    result.update(
        protocol=protocol,
        flip=flip,
        num_images=len(paths),
        embed_seconds=seconds,
        images_per_second=len(paths) / seconds if seconds > 0 else float("inf"),
    )
    return result
