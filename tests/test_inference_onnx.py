"""ONNX export: ONNX Runtime on real aligned LFW faces matches Keras (max |difference| <= 1e-4) and
makes the same verification decisions."""

import itertools

import numpy as np
import pytest

from inference_helpers import embedding_model

# Two photos each of four people, aligned by MTCNN as training's crops are.
PHOTOS = [f"{name}/{name}_{i:04d}.jpg" for name in ("Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Amelie_Mauresmo")
          for i in (1, 2)]


@pytest.fixture(scope="module")
def aligned_faces(lfw_dir):
    """uint8 [8, 112, 96, 3]: real faces through the alignment of training."""
    from inference.embedding import align_photo, default_detector

    crops = []
    for rel in PHOTOS:
        record, crop = align_photo(lfw_dir / "images" / rel, (112, 96), default_detector())
        assert record.status == "aligned", record
        crops.append(crop)
    return np.stack(crops)


@pytest.mark.real_data
def test_onnx_runtime_matches_keras_on_aligned_faces(aligned_faces, tmp_path):
    from engines.keras_engine import make_embed_fn
    from engines.loading import load_model
    from engines.model_file import model_fingerprint
    from engines.onnx_export import export_onnx
    from evaluation import combine_flips

    model = embedding_model("mobilefacenet", (112, 96), 128, seed=3)
    path = export_onnx(model, tmp_path / "model.onnx", source="test")
    onnx_model = load_model(path)
    assert onnx_model.engine == "onnx" and onnx_model.image_size == (112, 96)
    assert onnx_model.fingerprint == model_fingerprint(model)  # galleries and reports carry over

    x = aligned_faces.astype(np.float32)
    keras_fn = make_embed_fn(model)
    for batch in (x, x[:1]):  # the batch size is free
        want, got = keras_fn(batch), onnx_model.embed_fn(batch)
        assert got.shape == want.shape == (len(batch), 128)
        assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()

    # Verification decisions on every pair of the eight faces, at a threshold inside the range of their
    # similarities (an untrained model's threshold would be arbitrary; the median splits the pairs).
    features = {name: combine_flips(fn(x), fn(x[:, :, ::-1])) for name, fn in
                (("keras", keras_fn), ("onnx", onnx_model.embed_fn))}
    pairs = np.array(list(itertools.combinations(range(len(x)), 2)))
    cosines = {name: np.sum(f[pairs[:, 0]] * f[pairs[:, 1]], axis=1) for name, f in features.items()}
    threshold = float(np.median(cosines["keras"]))
    assert np.abs(cosines["onnx"] - cosines["keras"]).max() <= 1e-5
    margin = np.abs(cosines["keras"] - threshold).min()
    assert margin > 1e-5, "a pair sits on the threshold: the comparison would be luck"
    np.testing.assert_array_equal(cosines["onnx"] > threshold, cosines["keras"] > threshold)
