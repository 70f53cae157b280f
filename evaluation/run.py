"""What ``evaluate.py`` does for each input kind: pairs + aligned folder, insightface .bin, or precomputed
embeddings (.npz). Each returns (result dict, emb_a, emb_b, issame) for the report writers."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from evaluation.binset import bin_image_loader, bin_pairset, load_bin
from evaluation.embed import combine_flips, embed_paths, embed_paths_raw, gather_pairs
from evaluation.images import read_rgb, resolve_image_files
from evaluation.pairs import read_pairs, strip_image_extension
from evaluation.protocols import get_protocol
from fileio import atomic_output


def _metrics(features, paths, pairs, far_target, protocol):
    emb_a, emb_b = gather_pairs(features, paths, pairs)
    start = time.perf_counter()
    result = get_protocol(protocol).metrics(emb_a, emb_b, pairs.issame, pairs.folds, far_target)
    result["metrics_seconds"] = time.perf_counter() - start
    result["protocol"] = protocol
    return result, emb_a, emb_b


def load_embeddings_npz(npz_path, flip=None, default_flip="concat"):
    """Read E.npz (paths [N] str, embeddings [N, D], optional embeddings_flip [N, D]) -> (keys, features, flip).

    keys are the paths without image extension. flip=None picks ``default_flip`` when embeddings_flip is
    present, else 'none'; asking for a flip mode without embeddings_flip is an error.
    """
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise FileNotFoundError(f"embeddings file not found: {npz_path}")
    with np.load(npz_path, allow_pickle=False) as data:  # no pickles: object arrays are refused
        missing = [k for k in ("paths", "embeddings") if k not in data.files]
        if missing:
            raise ValueError(f"{npz_path}: missing array(s) {missing}; it needs 'paths' and 'embeddings' (optional 'embeddings_flip')")
        paths = data["paths"]
        emb = np.asarray(data["embeddings"], dtype=np.float64)
        emb_flip = np.asarray(data["embeddings_flip"], dtype=np.float64) if "embeddings_flip" in data.files else None
    if paths.dtype.kind not in "US" or paths.ndim != 1:
        raise ValueError(f"{npz_path}: 'paths' must be a 1-D string array, got {paths.dtype} {paths.shape}")
    if emb.ndim != 2 or len(emb) != len(paths):
        raise ValueError(f"{npz_path}: 'embeddings' must be [N={len(paths)}, D], got {emb.shape}")
    if flip is None:
        flip = default_flip if emb_flip is not None else "none"
    if flip != "none" and emb_flip is None:
        raise ValueError(f"{npz_path}: --flip {flip} needs an 'embeddings_flip' array; use --flip none")
    keys = [strip_image_extension(p.decode() if isinstance(p, bytes) else str(p)) for p in paths]
    if len(set(keys)) != len(keys):
        dup = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise ValueError(f"{npz_path}: image {dup!r} appears more than once in 'paths'")
    return keys, combine_flips(emb, emb_flip, flip), flip


def evaluate_embeddings(pairs_path, npz_path, flip=None, far_target=1e-3, protocol="facenet"):
    """Metrics of a pairs file from precomputed embeddings (paths matched regardless of extension) under
    ``protocol`` (evaluation.protocols; flip=None: the protocol's flip mode, or none without flips)."""
    pairs = read_pairs(pairs_path)
    keys, features, flip = load_embeddings_npz(npz_path, flip, get_protocol(protocol).flip)
    index = {k: i for i, k in enumerate(keys)}
    wanted = pairs.unique_paths()
    missing = [p for p in wanted if strip_image_extension(p) not in index]
    if missing:
        raise KeyError(f"{npz_path}: no embedding for {len(missing)} image(s) of {pairs_path}, e.g. {missing[:3]}")
    features = features[[index[strip_image_extension(p)] for p in wanted]]
    result, emb_a, emb_b = _metrics(features, wanted, pairs, far_target, protocol)
    result.update(flip=flip, pairs=str(pairs_path), embeddings=str(npz_path), pairs_kind=pairs.kind)
    return result, emb_a, emb_b, pairs.issame


def save_embeddings_npz(path, paths, emb, emb_flip=None):
    """Write E.npz (paths, embeddings, optional embeddings_flip): the input of evaluate.py --embeddings."""
    path = Path(path)
    arrays = {"paths": np.array([str(p) for p in paths]), "embeddings": emb}
    if emb_flip is not None:
        arrays["embeddings_flip"] = emb_flip
    with atomic_output(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def _load_for_embedding(model_path, engine):
    """(EmbeddingModel, image_size, embed_fn, fields for the result: engine and model_fingerprint)."""
    from engines import load_model

    # use_exports=False: "auto" runs the .keras itself (fast/keras), not the ONNX file beside it
    model = load_model(model_path, engine or "auto", use_exports=False)
    return model, model.image_size, model.embed_fn, {"engine": model.engine, "model_fingerprint": model.fingerprint}


def evaluate_model_on_pairs(model_path, pairs_path, image_dir, flip=None, batch_size=256, far_target=1e-3,
                            progress=True, save_embeddings=None, engine=None, protocol="facenet"):
    """Embed the aligned crops a pairs file names (each once, plus flips) with the model; metrics under
    ``protocol`` (evaluation.protocols; flip=None: the protocol's flip mode).

    save_embeddings: optional E.npz path for the raw embeddings (paths relative to image_dir, with extension).
    engine: a name of engines.ENGINES (an export engine runs that export beside the .keras, or model_path
    itself when it is an .onnx/.tflite file); None: the file's own engine (fast or keras for a .keras).
    """
    flip = flip or get_protocol(protocol).flip
    pairs = read_pairs(pairs_path)
    paths = pairs.unique_paths()
    files = resolve_image_files(image_dir, paths)  # checks every file exists before the model is even loaded
    _model, image_size, embed_fn, model_fields = _load_for_embedding(model_path, engine)
    start = time.perf_counter()
    emb, emb_flip = embed_paths_raw(embed_fn, paths, lambda p: read_rgb(files[p]), batch_size, flip,
                                    image_size, progress)
    seconds = time.perf_counter() - start
    features = combine_flips(emb, emb_flip, flip)
    if save_embeddings:
        root = Path(image_dir)
        save_embeddings_npz(save_embeddings, [files[p].relative_to(root).as_posix() for p in paths], emb, emb_flip)
    result, emb_a, emb_b = _metrics(features, paths, pairs, far_target, protocol)
    result.update(
        flip=flip, model=str(model_path), pairs=str(pairs_path), image_dir=str(image_dir), pairs_kind=pairs.kind,
        image_size=list(image_size), num_images=len(paths), embed_seconds=seconds, images_per_second=len(paths) / seconds,
        **model_fields,
    )
    return result, emb_a, emb_b, pairs.issame


def evaluate_model_on_bin(model_path, bin_path, flip=None, batch_size=256, far_target=1e-3, center_crop=False, progress=True,
                          engine=None, protocol="insightface"):
    """Embed an insightface .bin set with the model; metrics over its 10 contiguous folds under ``protocol``
    (default insightface's own: flips summed; flip=None: the protocol's flip mode)."""
    flip = flip or get_protocol(protocol).flip
    bins, issame = load_bin(bin_path)
    pairs = bin_pairset(bin_path, issame)
    _model, image_size, embed_fn, model_fields = _load_for_embedding(model_path, engine)
    load = bin_image_loader(bin_path, bins, image_size, center_crop)
    first = load("0")
    if first.shape[:2] != tuple(image_size):
        hint = " (add --center-crop: published bins are 112x112, whose centre 112x96 is our alignment)" if (
            first.shape[0] == image_size[0] and first.shape[1] > image_size[1]) else ""
        raise ValueError(f"{bin_path}: images are {first.shape[0]}x{first.shape[1]}, the model {model_path} needs "
                         f"{image_size[0]}x{image_size[1]}{hint}")
    paths = pairs.unique_paths()
    start = time.perf_counter()
    features = embed_paths(embed_fn, paths, load, batch_size, flip, image_size, progress)
    seconds = time.perf_counter() - start
    result, emb_a, emb_b = _metrics(features, paths, pairs, far_target, protocol)
    result.update(
        flip=flip, model=str(model_path), bin=str(bin_path), pairs_kind="bin", center_crop=bool(center_crop),
        image_size=list(image_size), num_images=len(paths), embed_seconds=seconds, images_per_second=len(paths) / seconds,
        **model_fields,
    )
    return result, emb_a, emb_b, issame
