"""One export function for every format (export.py and export_onnx.py are its command line).

    export_model("runs/RUN", "litert-int8", calibration_dir="data/lfw_aligned")
    # -> RUN/export/best.int8.tflite, checked against the Keras model

Formats (engines.base.EXPORT_FORMATS): onnx, onnx-int8 (engines.onnx_export), litert, litert-fp16,
litert-int8, litert-int8-mixed (engines.litert_export). The int8 formats are calibrated on aligned faces
(engines.calibration). Every file takes RGB 0..255 [B, H, W, 3] as float32 (the scaling inside),
returns the raw embedding [B, D] and carries the Keras model's fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.base import EXPORT_FORMATS, INT8_FORMATS, export_path_for
from engines.calibration import DEFAULT_CALIBRATION_COUNT


@dataclass
class ExportResult:
    """path: the file written; bytes: its size; check: how it compares with the Keras model (float32) on
    ``check_images`` ("calibration faces" or "random images"): max |difference| of raw embeddings and the
    smallest cosine between the two embeddings of an image."""

    path: Path
    export_format: str
    bytes: int
    check_images: str
    max_difference: float
    min_cosine: float


def check_output_path(keras_path, output, export_format) -> Path:
    output = Path(output) if output else export_path_for(keras_path, export_format)
    want = ".onnx" if export_format.startswith("onnx") else ".tflite"
    if output.resolve() == Path(keras_path).resolve() or output.suffix != want:
        raise ValueError(f"--output must be a {want} file other than the model for --format {export_format}, "
                         f"got {output}")
    return output


def export_model(model=None, export_format="onnx", output=None, runs_dir="runs", calibration_shards=None,
                 calibration_dir=None, calibration_count=DEFAULT_CALIBRATION_COUNT, opset=None,
                 log=None) -> ExportResult:
    """Export the .keras model (a file or run directory; None: the newest run) as ``export_format`` to
    ``output`` (default beside it, engines.base.export_path_for), then run the file with its engine beside
    the Keras model. Errors users can cause are FileNotFoundError/ValueError naming the file."""
    from engines.keras_engine import make_embed_fn
    from engines.loading import load_model
    from engines.model_file import load_embedding_model, resolve_model_path
    from engines.onnx_export import check_opset, float32_twin

    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {export_format!r}")
    check_opset(opset)
    keras_path = resolve_model_path(model, runs_dir)
    output = check_output_path(keras_path, output, export_format)
    keras_model, image_size = load_embedding_model(keras_path)
    faces = None
    if export_format in INT8_FORMATS:
        from engines.calibration import calibration_faces

        faces = calibration_faces(image_size, calibration_shards, calibration_dir, calibration_count)
    elif calibration_shards or calibration_dir:
        raise ValueError(f"--format {export_format} is not quantised: --calibration-shards/--calibration-dir are for "
                         f"{' and '.join(INT8_FORMATS)}")
    if log:
        log(f"exporting {keras_path} to {output} ({export_format}"
            + (f", calibrated on {len(faces)} aligned faces)" if faces is not None else ")") + " ...")
    if export_format.startswith("onnx"):
        from engines.onnx_export import export_onnx, export_onnx_int8

        if faces is None:
            export_onnx(keras_model, output, source=keras_path, opset=opset)
        else:
            export_onnx_int8(keras_model, output, faces, source=keras_path, opset=opset)
    else:
        from engines.litert_export import export_litert

        export_litert(keras_model, output, export_format, faces, source=keras_path)
    exported = load_model(output, export_format)
    if faces is not None:
        images, described = faces[:16].astype(np.float32), f"{min(16, len(faces))} calibration faces"
    else:
        images = np.random.default_rng(0).uniform(0, 255, (4, *image_size, 3)).astype(np.float32)
        described = "4 random images"
    want = make_embed_fn(float32_twin(keras_model))(images).astype(np.float64)
    got = exported.embed_fn(images).astype(np.float64)
    cosine = np.sum(want * got, axis=1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
    return ExportResult(output, export_format, output.stat().st_size, described, float(np.abs(want - got).max()),
                        float(cosine.min()))
