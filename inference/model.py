"""The embedding model the commands use: which file, which engine runs it, and its fingerprint.

    model = load_model("runs/RUN")                  # export/best.keras (else embedding.keras), fast engine
    model = load_model("runs/RUN", engine="onnx")   # export/best.onnx beside it, ONNX Runtime
    model = load_model("model.onnx")                # an ONNX export on its own
    raw = model.embed_fn(images_float32)            # [B, H, W, 3] in [0, 255] -> [B, D]

Engines: ``fast`` (the inference graph with batch norm folded, evaluation.fast_graph), ``keras`` (the
model's own graph), ``onnx`` (the ONNX export under ONNX Runtime; no TensorFlow needed to run it).
All three compute the same function up to float rounding; the fingerprint (evaluation.model_io.
model_fingerprint: the weights, not the file) is the same for all three, so a gallery enrolled with
one engine is searched with another, and the ONNX file carries the fingerprint of the Keras model it
was exported from in its metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENGINES = ("fast", "keras", "onnx")
# Images per ONNX Runtime call, whatever batch the caller hands over: smaller batches stay in cache.
# Measured on MobileFaceNet 112x96, 2-core EPYC shared with other jobs (forward images/s):
# batch 256: 94; 64: 122; 16: 175; 8: 203; 4: 220.
ONNX_MICRO_BATCH = 8
ONNX_FINGERPRINT_KEY = "faceid_model_fingerprint"
ONNX_SOURCE_KEY = "faceid_source_model"
ONNX_SOURCE_SHA256_KEY = "faceid_source_sha256"  # sha256 of the .keras file it was exported from


@dataclass
class EmbeddingModel:
    """A loaded embedding model.

    path: the .keras or .onnx file; engine: "fast", "keras" or "onnx"; image_size: (H, W) of the
    aligned crops it takes; fingerprint: "sha256:..." of its weights; embed_fn: float32 [B, H, W, 3]
    RGB in [0, 255] -> float32 [B, D] raw embeddings; eval_dir: where evaluate.py writes this model's
    reports (RUN/eval); keras_model: the Keras model (None for ONNX).
    """

    path: Path
    engine: str
    image_size: tuple
    fingerprint: str
    embed_fn: Callable
    eval_dir: Path
    keras_model: object = None
    source_sha256: str | None = None  # ONNX: sha256 of the .keras file it was exported from

    def describe(self) -> str:
        from evaluation.starter import is_starter

        starter = "the starter model (trained on LFW DevTrain people; docs/using-a-model.md) " if is_starter(
            self.path) else ""
        return f"{starter}{self.path} ({self.engine} engine)"


def onnx_path_for(keras_path) -> Path:
    """The ONNX export beside a .keras export: RUN/export/best.keras -> RUN/export/best.onnx."""
    return Path(keras_path).with_suffix(".onnx")


def load_model(model=None, engine: str = "auto", runs_dir="runs", threads: int | None = None) -> EmbeddingModel:
    """Resolve and load an embedding model.

    model: None (the newest run under runs_dir; the starter model when there is none), "starter" (the
    starter model, evaluation.starter), a run directory, a .keras or .onnx file, a Keras model
    object, or an EmbeddingModel (returned as is). engine: "auto" (fast for a float32 model, keras for a
    mixed-precision one; onnx for an .onnx file, and for a .keras whose own ONNX export lies beside it:
    ONNX Runtime embeds one photo in 7.8 ms against the fast graph's 10.1 ms, benchmarks/
    identification.py), "fast", "keras" or "onnx" (the .onnx beside the .keras).
    threads: ONNX Runtime intra-op threads (default: its own choice, one per core).
    Errors (FileNotFoundError, ValueError) name the file and what to do.
    """
    if isinstance(model, EmbeddingModel):
        return model
    if engine not in ("auto", *ENGINES):
        raise ValueError(f"engine must be one of auto, {', '.join(ENGINES)}; got {engine!r}")
    if model is not None and not isinstance(model, (str, Path)):
        return from_keras_model(model, None, engine)
    from evaluation.model_io import resolve_model_path

    path = Path(model) if model is not None else None
    if path is not None and path.suffix == ".onnx":
        if engine not in ("auto", "onnx"):
            raise ValueError(f"{path} is an ONNX export: it runs with the onnx engine only (got --engine {engine})")
        return _from_onnx(path, threads)
    keras_path = resolve_model_path(model, runs_dir, starter_fallback=True)
    if engine == "auto":
        exported = _onnx_export_of(keras_path, threads)
        if exported is not None:
            return exported
    if engine == "onnx":
        onnx_file = onnx_path_for(keras_path)
        if not onnx_file.is_file():
            raise FileNotFoundError(f"no ONNX export beside {keras_path} (looked for {onnx_file}); write it with "
                                    f"python export_onnx.py --model {keras_path}")
        return _from_onnx(onnx_file, threads)
    from evaluation.model_io import load_embedding_model

    keras_model, _ = load_embedding_model(keras_path)
    return from_keras_model(keras_model, keras_path, engine)


def _onnx_export_of(keras_path, threads=None):
    """The ONNX export beside keras_path if it was exported from exactly this file (its metadata holds the
    file's sha256), loaded; else None. Anything else there (an older export, a foreign file) is left alone."""
    from fileio import sha256_of_file

    onnx_file = onnx_path_for(keras_path)
    if not onnx_file.is_file():
        return None
    try:
        exported = _from_onnx(onnx_file, threads)
    except ValueError:  # onnxruntime missing or an unreadable file: the Keras model still works
        return None
    return exported if exported.source_sha256 == sha256_of_file(keras_path) else None


def _eval_dir(path) -> Path:
    from evaluation.model_io import run_dir_of

    return run_dir_of(path) / "eval"


def from_keras_model(keras_model, path=None, engine="auto") -> EmbeddingModel:
    """An EmbeddingModel around a loaded Keras model (path: the file it came from, for reports and messages)."""
    from evaluation.model_io import default_engine, make_embed_fn, model_fingerprint

    shape = tuple(keras_model.input_shape)
    engine = default_engine(keras_model) if engine == "auto" else engine
    if engine == "onnx":
        raise ValueError("the onnx engine needs an .onnx file (python export_onnx.py --model RUN), not a Keras model")
    return EmbeddingModel(path=Path(path) if path else Path("<in memory>"), engine=engine,
                          image_size=(int(shape[1]), int(shape[2])), fingerprint=model_fingerprint(keras_model),
                          embed_fn=make_embed_fn(keras_model, engine),
                          eval_dir=_eval_dir(path) if path else Path("eval"), keras_model=keras_model)


def _from_onnx(path: Path, threads=None) -> EmbeddingModel:
    import numpy as np

    from evaluation.fast_graph import micro_batched

    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ValueError("the onnx engine needs onnxruntime: pip install -r requirements.txt") from error
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about initializers it drops are not the user's business
    # ORT's threads busy-wait after each run by default. Beside TensorFlow in the same process (the face
    # detector) that spinning steals the cores TF needs: measured, it halved the keras engine's speed in
    # benchmarks/inference_speed.py. Sleeping threads cost ORT itself little at these batch sizes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for a bad file
        raise ValueError(f"cannot load ONNX model {path} ({type(error).__name__}: {error})") from error
    inputs = session.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    if shape is None or len(shape) != 4 or shape[3] != 3 or not all(isinstance(v, int) for v in shape[1:3]):
        raise ValueError(f"{path}: expected one image input [B, H, W, 3] with fixed H, W; got "
                         f"{[(i.name, i.shape) for i in inputs]}")
    metadata = session.get_modelmeta().custom_metadata_map
    fingerprint = metadata.get(ONNX_FINGERPRINT_KEY)
    if fingerprint is None:  # not written by export_onnx.py: the file itself is all we can identify
        from fileio import sha256_of_file

        fingerprint = "sha256-file:" + sha256_of_file(path)
    input_name = inputs[0].name

    def run(images):
        return session.run(None, {input_name: np.asarray(images, np.float32)})[0]

    embed_fn = micro_batched(run, ONNX_MICRO_BATCH)

    return EmbeddingModel(path=path, engine="onnx", image_size=(int(shape[1]), int(shape[2])),
                          fingerprint=fingerprint, embed_fn=embed_fn, eval_dir=_eval_dir(path),
                          source_sha256=metadata.get(ONNX_SOURCE_SHA256_KEY))
