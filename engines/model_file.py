"""Finding and loading the exported embedding model (``RUN/export/best.keras`` or ``embedding.keras``).

The exported model takes float32 [B, H, W, 3] RGB in [0, 255] (scaling is its first layer) and returns
[B, D]. It is loaded with ``keras.saving.load_model(..., safe_mode=True)``: Keras refuses to
deserialise Python lambdas from a file, so a model file cannot run code of its author's choosing.

The engines that run it are engines.keras_engine (keras) and engines.fast_graph (fast); its exports
(ONNX, LiteRT) carry model_fingerprint in their metadata.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

MODEL_NAMES = ("best.keras", "embedding.keras")
TRAIN_HINT = "train one first (python train.py ...) or pass --model FILE.keras or --model RUN_DIR"


def _model_in(directory: Path):
    for name in MODEL_NAMES:
        for candidate in (directory / "export" / name, directory / name):
            if candidate.is_file():
                return candidate
    return None


def find_default_model(runs_dir="runs") -> Path:
    """The newest run's model: of runs/*/export/{best,embedding}.keras (best preferred within a run),
    the one most recently written."""
    runs_dir = Path(runs_dir)
    found = [m for m in (_model_in(run) for run in sorted(runs_dir.glob("*")) if run.is_dir()) if m is not None]
    if not found:
        raise FileNotFoundError(f"no exported model found under {runs_dir}/*/export/ ({' or '.join(MODEL_NAMES)}): {TRAIN_HINT}")
    return max(found, key=lambda p: p.stat().st_mtime)


EXPORT_FILE_SUFFIXES = (".onnx", ".tflite")  # exports a command may be given in place of the .keras


def resolve_model_path(model=None, runs_dir="runs", exports=False, starter_fallback=False) -> Path:
    """--model value -> the .keras file: None = newest run (with ``starter_fallback``: the starter model when
    there is no run); "starter" = the starter model (engines.starter); a run (or export) directory = its
    best/embedding model. exports: an .onnx or .tflite file is accepted as well (returned as it is)."""
    from engines.starter import STARTER, starter_model_path

    if model is None:
        if starter_fallback:
            try:
                return find_default_model(runs_dir)
            except FileNotFoundError as no_run:
                if not starter_model_path(must_exist=False).is_file():
                    raise FileNotFoundError(f"{no_run}; or install the starter model (docs/using-a-model.md)") from None
                return starter_model_path()
        return find_default_model(runs_dir)
    if str(model) == STARTER:
        return starter_model_path()
    path = Path(model)
    if path.is_dir():
        found = _model_in(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no export/{' or export/'.join(MODEL_NAMES)} in this directory; {TRAIN_HINT}")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}; {TRAIN_HINT}")
    if exports and path.suffix in EXPORT_FILE_SUFFIXES:
        return path
    if path.suffix != ".keras":
        also = ", an .onnx or a .tflite export" if exports else ""
        raise ValueError(f"{path}: expected a Keras 3 .keras file (the exported embedding model){also}")
    return path


def run_dir_of(model_path) -> Path:
    """RUN for RUN/export/x.keras, else the model's folder (where eval/ results go)."""
    model_path = Path(model_path)
    return model_path.parent.parent if model_path.parent.name == "export" else model_path.parent


def _check_keras_archive(path) -> None:
    """A .keras file is a zip archive: a truncated or damaged one is named here with the fix, not left to
    Keras (whose error for it is "File not found")."""
    import zipfile

    run_dir = run_dir_of(path)
    fix = (f"export it again (`python train.py --resume --output-dir {run_dir}` re-exports a finished run) "
           "or copy it again" if Path(path).parent.name == "export" else "copy or export it again")
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a complete .keras file (truncated or damaged: {e}); {fix}") from None
    if bad_member is not None:
        raise ValueError(f"{path} is damaged ({bad_member} fails its checksum); {fix}")


def load_embedding_model(path):
    """Load an exported embedding model with safe_mode=True -> (model, (H, W)); errors name the file."""
    import keras

    _check_keras_archive(path)
    try:
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:
        raise ValueError(f"cannot load model {path} ({type(e).__name__}: {e})") from e
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or len(shape) != 4 or shape[-1] != 3 or shape[1] is None or shape[2] is None:
        raise ValueError(f"{path}: expected one image input [B, H, W, 3] with fixed H, W; got {model.input_shape}")
    return model, (int(shape[1]), int(shape[2]))


def model_fingerprint(model) -> str:
    """Identity of what a model computes: "sha256:" + hex digest of its input shape and every weight
    (shape, dtype and values, in the model's order). Unchanged by saving, copying or renaming the file
    (unlike the file's own checksum) and by the runtime (Keras, the fast graph, ONNX Runtime).
    """
    digest = hashlib.sha256(repr(tuple(model.input_shape)).encode())
    for weight in model.weights:
        values = np.ascontiguousarray(np.asarray(weight))
        digest.update(f"{values.shape}{values.dtype.str}".encode())
        digest.update(values.tobytes())
    return "sha256:" + digest.hexdigest()
