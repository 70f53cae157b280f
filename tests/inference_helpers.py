"""Models for the inference tests: backbones with inference statistics like a trained model's."""

import numpy as np

import models
from models.layers import with_stock_layers
from training.export import build_embedding_model


def randomize_inference_statistics(model, seed):
    """Inference statistics like a trained model's, far from their initial values (initial BN is the
    identity, initial PReLU slopes 0.25), so that folding them is not a no-op: BN moving statistics
    set to the statistics of a batch (one training-mode pass with momentum 0), then gammas, betas and
    PReLU slopes drawn at random around trained values (test_prelu_is_bitwise_the_keras_layer covers
    slopes below 0 and above 1)."""
    import keras

    rng = np.random.default_rng(seed)
    norms = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(rng.uniform(0, 255, (16, *model.input_shape[1:])).astype("float32"), training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.7, 1.3, channels).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, channels).astype("float32"))
        elif isinstance(layer, keras.layers.PReLU):
            layer.alpha.assign(rng.uniform(-0.1, 0.6, layer.alpha.shape).astype("float32"))


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def embedding_model(name="mobilefacenet", image_size=(112, 96), embedding_size=64, seed=0, **options):
    """An exported-style embedding model (input scaling + backbone) with random weights and
    randomize_inference_statistics applied: what a short training run would hand out, minus accuracy."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_embedding_model(models.build_backbone(name, image_size=image_size, embedding_size=embedding_size,
                                                        **options), image_size)
    randomize_inference_statistics(model, seed)
    # What an export holds: Keras' stock BatchNormalization/PReLU (training/export.py swaps out the fused ones).
    return with_stock_layers(model)
