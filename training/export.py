"""The embedding model, trained and exported as one: uint8-range RGB images -> embedding, scaling inside.

Written as Keras (``.keras``, loads with ``safe_mode=True``: only built-in layers) and as a
TensorFlow SavedModel (serving signature) for TF Serving / TFLite users.
"""

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


def export_embedding_model(model, export_dir):
    """Write EXPORT/embedding.keras and EXPORT/saved_model/; returns their paths."""
    export_dir = Path(export_dir)
    model = with_stock_layers(model)   # once, for both files
    keras_path = save_keras_atomic(model, export_dir / "embedding.keras")
    saved = export_dir / "saved_model"
    with atomic_output(saved) as tmp:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
    return {"keras": str(keras_path), "saved_model": str(saved)}
