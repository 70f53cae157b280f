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
