"""The ``onnx`` and ``onnx-int8`` engines: an ONNX export under ONNX Runtime (no TensorFlow needed).

``onnx`` is the float32 export (engines.onnx_export), ``onnx-int8`` its statically quantised QDQ
twin (int8 weights and activations, float32 input and output). Both take RGB 0..255 [B, H, W, 3]
(the scaling is inside) and return the raw embedding [B, D].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.base import (
    FINGERPRINT_KEY,
    FORMAT_KEY,
    SOURCE_SHA256_KEY,
    EmbeddingModel,
    check_image_input,
    eval_dir_of,
    micro_batched,
)

# Images per ONNX Runtime call, whatever batch the caller hands over: smaller batches stay in cache.
# Measured on MobileFaceNet 112x96, 2-core EPYC shared with other jobs (forward images/s):
# batch 256: 94; 64: 122; 16: 175; 8: 203; 4: 220.
ONNX_MICRO_BATCH = 8


def open_session(path, threads=None):
    """An ONNX Runtime CPU session for ``path``; ValueError naming the file when it cannot be loaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ValueError("the onnx engines need onnxruntime: pip install -r requirements.txt") from error
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about initializers it drops are not the user's business
    # ORT's threads busy-wait after each run by default. Beside TensorFlow in the same process (the face
    # detector) that spinning steals the cores TF needs: measured, it halved the keras engine's speed in
    # benchmarks/inference_speed.py. Sleeping threads cost ORT itself little at these batch sizes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for a bad file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"cannot load ONNX model {path} ({type(error).__name__}: {first_line}); export it again "
                         "with python export.py --format onnx (or onnx-int8) --model RUN") from None


def load_onnx_file(path, threads=None, engine=None) -> EmbeddingModel:
    """An EmbeddingModel for an .onnx export. engine: the engine asked for ("onnx" or "onnx-int8"; None:
    whatever the file is); a file of the other kind is a ValueError naming it."""
    path = Path(path)
    session = open_session(path, threads)
    inputs = session.get_inputs()
    image_size = check_image_input(path, inputs[0].shape if len(inputs) == 1 else None,
                                   [(i.name, i.shape) for i in inputs])
    metadata = session.get_modelmeta().custom_metadata_map
    kind = metadata.get(FORMAT_KEY) or ("onnx-int8" if _is_quantised(session, path) else "onnx")
    if engine is not None and engine != kind:
        raise ValueError(f"{path} is a {kind} export, not {engine}: pass --engine {kind} (or the {engine} file)")
    fingerprint = metadata.get(FINGERPRINT_KEY)
    if fingerprint is None:  # not written by export.py: the file itself is all we can identify
        from fileio import sha256_of_file

        fingerprint = "sha256-file:" + sha256_of_file(path)
    input_name = inputs[0].name

    def run(images):
        return session.run(None, {input_name: np.asarray(images, np.float32)})[0]

    return EmbeddingModel(path=path, engine=kind, image_size=image_size, fingerprint=fingerprint,
                          embed_fn=micro_batched(run, ONNX_MICRO_BATCH), eval_dir=eval_dir_of(path),
                          source_sha256=metadata.get(SOURCE_SHA256_KEY))


def _is_quantised(session, path) -> bool:
    """A foreign .onnx without our metadata: quantised when its graph holds QuantizeLinear nodes."""
    try:
        import onnx

        return any(node.op_type == "QuantizeLinear" for node in onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # unreadable by onnx while ORT read it: call it float
        return False


def load_onnx(source, threads=None) -> EmbeddingModel:
    """The onnx engine (float32 export)."""
    return load_onnx_file(source, threads, "onnx")


def load_onnx_int8(source, threads=None) -> EmbeddingModel:
    """The onnx-int8 engine (QDQ int8 export)."""
    return load_onnx_file(source, threads, "onnx-int8")
