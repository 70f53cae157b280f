"""The embedding model, trained and exported as one: uint8-range RGB images -> embedding, scaling inside.

Written as Keras (``.keras``, loads with ``safe_mode=True``: only built-in layers), as a
TensorFlow SavedModel (serving signature) for TF Serving / TFLite users, and as ONNX
(``embedding.onnx``, engines.onnx_export: float32 even after mixed-precision training) for
runtimes without TensorFlow.
"""

import shutil
import sys
import time
from pathlib import Path

import keras

from fileio import atomic_output
from models.layers import with_stock_layers
from models.scaling import input_scaling_layer


def build_embedding_model(backbone, image_size):
    """float32 [B, H, W, 3] RGB in [0, 255] -> float32 [B, D] (not normalised), sharing backbone's weights."""
    images = keras.Input(shape=(*image_size, 3), name="images")
    x = input_scaling_layer()(images)
    x = backbone(x)
    # Under mixed precision the backbone emits float16/bfloat16: always hand out float32.
    embeddings = keras.layers.Activation("linear", dtype="float32", name="embedding")(x)
    return keras.Model(images, embeddings, name="embedding_model")


def save_keras_atomic(model, path):
    """model.save to ``path`` via a temporary name, so a kill never leaves a half-written file.

    The file holds the stock Keras layers (models.layers.with_stock_layers), weights unchanged."""
    with atomic_output(path) as tmp:
        with_stock_layers(model).save(tmp)
    return Path(path)


def export_embedding_model(model, export_dir, formats=("keras", "saved_model", "onnx"), log=None):
    """Write EXPORT/embedding.keras and, as ``formats`` asks (train.py --exports), EXPORT/saved_model/
    and EXPORT/embedding.onnx; returns their paths.

    An ONNX conversion that fails does not fail the run (its Keras and SavedModel exports are written
    by then): the error is printed with the command that retries it, and returned as "onnx_error".
    A SavedModel or ONNX file from an earlier invocation that this one does not write again is removed
    (listed under "removed"): it holds older weights than embedding.keras.
    ``log``: where to say what is being written and how long each took (the SavedModel and ONNX
    conversions take a minute or more on a CPU); None says nothing.
    """
    from engines.onnx_export import export_onnx

    export_dir = Path(export_dir)
    targets = {"saved_model": export_dir / "saved_model", "onnx": export_dir / "embedding.onnx"}
    say = log or (lambda *_: None)
    model = with_stock_layers(model)   # once, for every file below
    started = time.perf_counter()
    keras_path = save_keras_atomic(model, export_dir / "embedding.keras")
    say(f"export: {keras_path} ({time.perf_counter() - started:.1f} s)")
    paths, removed = {"keras": str(keras_path)}, []
    for name, target in targets.items():
        if name not in formats:
            _remove_stale(target, removed, f"--exports {','.join(formats)} leaves it out now")
    if "saved_model" in formats:
        say(f"export: writing the TensorFlow SavedModel {targets['saved_model']}/ (traces the model; often a minute "
            "on a CPU; --exports keras skips it) ...")
        started = time.perf_counter()
        with atomic_output(targets["saved_model"]) as tmp:
            model.export(str(tmp), format="tf_saved_model", verbose=False)
        paths["saved_model"] = str(targets["saved_model"])
        say(f"export: {targets['saved_model']}/ ({time.perf_counter() - started:.1f} s)")
    if "onnx" in formats:
        say(f"export: converting to ONNX {targets['onnx']} (tf2onnx; often a minute on a CPU) ...")
        started = time.perf_counter()
        try:
            paths["onnx"] = str(export_onnx(model, targets["onnx"], source=keras_path))
            say(f"export: {targets['onnx']} ({time.perf_counter() - started:.1f} s)")
        except Exception as error:  # tf2onnx/onnx raise many types; the run's other exports stand regardless
            failure = f"{type(error).__name__}: {error}"
            print(f"warning: ONNX export failed ({failure}); {', '.join(paths.values())} written. "
                  f"Retry with: python export_onnx.py --model {keras_path} --output {targets['onnx']}",
                  file=sys.stderr)
            paths["onnx_error"] = failure
            _remove_stale(targets["onnx"], removed, "this invocation's ONNX conversion failed")
    if removed:
        paths["removed"] = removed
    return paths


def _remove_stale(path, removed, why):
    """Remove ``path`` (a file or folder an earlier invocation exported), if there, saying why and
    appending it to ``removed``: it holds older weights than the embedding.keras just written."""
    if not path.exists():
        return
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    removed.append(str(path))
    print(f"removed {path}: an earlier invocation wrote it from older weights, and {why}", file=sys.stderr)
