"""The embedding model the commands use: which file, which engine runs it, and its fingerprint.

    model = load_model("runs/RUN")                       # export/best.keras (else embedding.keras), fast engine
    model = load_model("runs/RUN", engine="litert-int8") # export/best.int8.tflite beside it, LiteRT
    model = load_model("model.onnx")                     # an export on its own: its engine from the file
    raw = model.embed_fn(images)                         # [B, H, W, 3] RGB 0..255 -> float32 [B, D]

Engines (engines.registry.ENGINES): ``fast``, ``keras`` (a .keras file under TensorFlow), ``onnx``,
``onnx-int8`` (ONNX Runtime), ``litert``, ``litert-fp16``, ``litert-int8``, ``litert-int8-mixed`` (the
LiteRT interpreter).
An export engine given a run directory or .keras runs the file of its format beside the .keras
(engines.base.export_path_for: best.int8.tflite, ...); given an export file, the engine must be the
one the file is (its metadata says), else one line names the file and the right engine. The
fingerprint (engines.model_file.model_fingerprint: the weights, not the file) is the Keras model's for
every export, so a gallery enrolled with one engine is searched with another.
"""

from __future__ import annotations

from pathlib import Path

from engines.base import EXPORT_SUFFIXES, EmbeddingModel, export_path_for, formats_with_extension
from engines.registry import ENGINE_NAMES, ENGINES, EXPORT_ENGINES

# File extension -> the export formats written with it.
FILE_FAMILIES = {extension: formats_with_extension(extension) for extension in (".onnx", ".tflite")}


def onnx_path_for(keras_path) -> Path:
    """The ONNX export beside a .keras export: RUN/export/best.keras -> RUN/export/best.onnx."""
    return export_path_for(keras_path, "onnx")


def load_model(model=None, engine: str = "auto", runs_dir="runs", threads: int | None = None,
               use_exports: bool = True) -> EmbeddingModel:
    """Resolve and load an embedding model.

    model: None (the newest run under runs_dir; the starter model when there is none), "starter" (the
    starter model, engines.starter), a run directory, a .keras, .onnx or .tflite file, a Keras
    model object, or an EmbeddingModel (returned as is). engine: "auto" or a name of ENGINES. auto: for an
    export file, the engine it is; for a .keras, its float32 ONNX export beside it when that was exported
    from exactly this file (ONNX Runtime embeds one photo in 7.8 ms against the fast graph's 10.1 ms,
    benchmarks/identification.py; use_exports=False skips this), else fast for a float32 model and
    keras for a mixed-precision one. threads: ONNX Runtime / LiteRT intra-op threads (default: one per core).
    Errors (FileNotFoundError, ValueError) name the file and what to do.
    """
    if isinstance(model, EmbeddingModel):
        return model
    if engine not in ("auto", *ENGINE_NAMES):
        raise ValueError(f"engine must be one of auto, {', '.join(ENGINE_NAMES)}; got {engine!r}")
    if model is not None and not isinstance(model, (str, Path)):
        if engine in EXPORT_ENGINES:
            raise ValueError(f"the {engine} engine runs an exported file (python export.py --format {engine} "
                             "--model RUN), not a Keras model")
        return _keras_auto(model, None) if engine == "auto" else ENGINES[engine](model, threads)
    from engines.model_file import resolve_model_path

    path = Path(model) if model is not None else None
    if path is not None and path.suffix in FILE_FAMILIES:
        return _load_export_file(path, engine, threads)
    keras_path = resolve_model_path(model, runs_dir, starter_fallback=True)
    if engine == "auto":
        exported = _onnx_export_of(keras_path, threads) if use_exports else None
        return exported if exported is not None else _keras_auto(keras_path, keras_path)
    if engine in EXPORT_ENGINES:
        export_file = export_path_for(keras_path, engine)
        if not export_file.is_file():
            raise FileNotFoundError(f"no {engine} export beside {keras_path} (looked for {export_file}); write it "
                                    f"with python export.py --format {engine} --model {keras_path}")
        return ENGINES[engine](export_file, threads)
    return ENGINES[engine](keras_path, threads)


def _keras_auto(source, path):
    from engines.keras_engine import from_keras_model

    if isinstance(source, Path):
        from engines.model_file import load_embedding_model

        source, _ = load_embedding_model(source)
    return from_keras_model(source, path, "auto")


def _load_export_file(path, engine, threads):
    family = FILE_FAMILIES[path.suffix]
    if engine == "auto":
        from engines.litert_engine import load_litert_file
        from engines.onnx_engine import load_onnx_file

        return (load_onnx_file if path.suffix == ".onnx" else load_litert_file)(path, threads, None)
    if engine not in family:
        runtime = "an ONNX" if path.suffix == ".onnx" else "a LiteRT"
        raise ValueError(f"{path} is {runtime} export: it runs with --engine {' or '.join(family)} (or auto), not "
                         f"--engine {engine}")
    return ENGINES[engine](path, threads)


def _onnx_export_of(keras_path, threads=None):
    """The ONNX export beside keras_path if it was exported from exactly this file (its metadata holds the
    file's sha256), loaded; else None. Anything else there (an older export, a foreign file) is left alone."""
    from fileio import sha256_of_file

    onnx_file = onnx_path_for(keras_path)
    if not onnx_file.is_file():
        return None
    try:
        exported = ENGINES["onnx"](onnx_file, threads)
    except ValueError:  # onnxruntime missing or an unreadable file: the Keras model still works
        return None
    return exported if exported.source_sha256 == sha256_of_file(keras_path) else None


__all__ = ["EXPORT_SUFFIXES", "EmbeddingModel", "load_model", "onnx_path_for"]
