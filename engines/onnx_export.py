"""ONNX export of the embedding model (Keras 3 ``model.export(format="onnx")``, through tf2onnx).

The ONNX graph takes what the Keras export takes, RGB float32 [B, H, W, 3] in [0, 255] (the input
scaling is inside), and returns the raw embedding [B, D] as output ``embedding``; the batch size is
free. A model trained under mixed precision is exported as float32: its layers are rebuilt with the
float32 policy around the same (float32) weights, so ONNX Runtime computes what the Keras model
would compute in float32. The file's metadata records the fingerprint of the Keras model
(``faceid_model_fingerprint``), so galleries and evaluation reports made with the Keras model are
recognised as made by this one.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

from engines.base import FINGERPRINT_KEY, FORMAT_KEY, SOURCE_KEY, SOURCE_SHA256_KEY
from fileio import atomic_output, sha256_of_file

OUTPUT_NAME = "embedding"
# The opsets --opset accepts: tf2onnx 1.17 knows opsets up to 18 (its OPSET_TO_IR_VERSION table) and
# converts these backbones from 13 on (opset 1 ends in a traceback deep inside the converter).
MIN_OPSET, MAX_OPSET = 13, 18


def check_opset(opset):
    """``opset`` (None: tf2onnx's default) if in MIN_OPSET..MAX_OPSET, else ValueError naming the range."""
    if opset is not None and not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ValueError(f"--opset {opset} is not supported: give an ONNX opset from {MIN_OPSET} to {MAX_OPSET} "
                         "(or leave --opset out for tf2onnx's default)")
    return opset


def _float32_config(config):
    """A copy of a Keras config with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and \
                str(config.get("config", {}).get("name", "")).startswith("mixed_"):
            replaced = copy.deepcopy(config)
            replaced["config"]["name"] = "float32"
            return replaced
        return {key: _float32_config(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    return config


def float32_twin(model):
    """The model itself if every layer computes in float32, else the same architecture rebuilt with
    float32 layers and the same weights (a mixed-precision model's variables are float32 already)."""
    import keras

    from engines.fast_graph import computes_in_float32

    if computes_in_float32(model):
        return model
    twin = keras.Model.from_config(_float32_config(model.get_config()))
    twin.set_weights(model.get_weights())
    return twin


def export_onnx(model, path, fingerprint=None, source=None, opset=None) -> Path:
    """Write the Keras embedding model to ``path`` as ONNX (atomically); returns the path.

    fingerprint: the model's engines.model_file.model_fingerprint (computed when None); source: the
    .keras file it came from (its name and sha256 go into the metadata: load_model(engine="auto") then
    runs this export in place of that file) or another name.
    """
    check_opset(opset)
    import numpy as np
    import onnx

    from engines.model_file import model_fingerprint

    fingerprint = fingerprint or model_fingerprint(model)
    twin = float32_twin(model)
    # Keras refuses to export a model that has never been called (a freshly loaded one has not).
    twin(np.zeros((1, *twin.input_shape[1:]), np.float32))
    with tempfile.TemporaryDirectory(prefix="faceid-onnx-") as tmp:
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():
            # Keras' numpy-2 shim for tf2onnx probes hasattr(np, "object"), which numpy answers with a
            # FutureWarning about itself: noise to whoever exports, nothing they can act on.
            warnings.filterwarnings("ignore", message=r".*`np\.object` will be defined", category=FutureWarning)
            twin.export(str(raw), format="onnx", verbose=False, opset_version=opset)
        graph_model = onnx.load(str(raw))
    (output,) = graph_model.graph.output
    _rename_output(graph_model, output.name, OUTPUT_NAME)
    metadata = [(FINGERPRINT_KEY, fingerprint), (SOURCE_KEY, str(source or model.name)), (FORMAT_KEY, "onnx"),
                ("faceid_input", "RGB float32 [B, H, W, 3] in [0, 255]; input scaling inside"),
                ("faceid_output", "raw (not normalised) embedding [B, D]")]
    if source is not None and Path(source).is_file():
        metadata.append((SOURCE_SHA256_KEY, sha256_of_file(source)))
    for key, value in metadata:
        entry = graph_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(graph_model)
    with atomic_output(path) as tmp_path:
        onnx.save(graph_model, str(tmp_path))
    return Path(path)


def _rename_output(graph_model, old, new):
    """tf2onnx names the output after the TF tensor ("Identity:0"); give it the embedding's name."""
    for node in graph_model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    graph_model.graph.output[0].name = new


def export_onnx_int8(model, path, calibration, fingerprint=None, source=None, opset=None) -> Path:
    """Write ``model`` to ``path`` as ONNX with static int8 quantisation (QDQ; atomically); returns the path.

    The float32 export (export_onnx) quantised by onnxruntime.quantization.quantize_static: int8 weights per
    output channel, uint8 activations whose ranges are the min/max seen on ``calibration`` (uint8
    [N, H, W, 3] aligned faces, engines.calibration). The input stays float32 RGB 0..255 and the output the
    float32 raw embedding: the graph quantises and dequantises at its ends.
    """
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration is None or not len(calibration):
        raise ValueError("onnx-int8 needs calibration faces (--calibration-shards or --calibration-dir)")
    faces = np.asarray(calibration, np.float32)

    class Faces(CalibrationDataReader):
        def __init__(self, input_name):
            self.batches = iter([{input_name: faces[i:i + 1]} for i in range(len(faces))])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="faceid-onnx-int8-") as tmp:
        float_path, prepared, quantised = (Path(tmp) / name for name in ("f.onnx", "p.onnx", "q.onnx"))
        export_onnx(model, float_path, fingerprint, source, opset)
        metadata = {entry.key: entry.value for entry in onnx.load(str(float_path)).metadata_props}
        # shape inference + graph clean-up, as ORT advises (the shapes are static: no symbolic inference needed)
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        input_name = onnx.load(str(prepared)).graph.input[0].name
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(prepared), str(quantised), Faces(input_name), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        graph_model = onnx.load(str(quantised))
    metadata[FORMAT_KEY] = "onnx-int8"
    metadata["faceid_calibration_images"] = str(len(faces))
    del graph_model.metadata_props[:]
    for key, value in metadata.items():
        entry = graph_model.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_output(path) as tmp_path:
        onnx.save(graph_model, str(tmp_path))
    return Path(path)
