"""embed_images / evaluate_pairs with a plain numpy embedding function."""

import numpy as np
import pytest

from evaluation import PairSet, combine_flips, embed_images, evaluate_pairs, verification_metrics
from evaluation.pairs import contiguous_folds

H, W = 4, 3
rng = np.random.default_rng(0)
KERNEL = rng.normal(size=(H * W * 3, 5))


def linear_embed(x):
    """float32 [B, H, W, 3] in [0, 255] -> [B, 5]; records the batch sizes it saw."""
    assert x.dtype == np.float32 and x.shape[1:] == (H, W, 3)
    linear_embed.batches.append(len(x))
    return (x.reshape(len(x), -1) / 255.0 - 0.5) @ KERNEL


linear_embed.batches = []


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flip_modes_and_batching():
    images = rng.integers(0, 256, size=(7, H, W, 3), dtype=np.uint8)
    emb = linear_embed(images.astype(np.float32))
    emb_flip = linear_embed(images[:, :, ::-1].astype(np.float32))
    want = {
        "concat": unit(np.concatenate([unit(emb), unit(emb_flip)], 1)),
        "sum": unit(emb + emb_flip),
        "none": unit(emb),
    }
    for flip, expected in want.items():
        for batch_size in (1, 4, 256):
            linear_embed.batches = []
            got = embed_images(linear_embed, images, batch_size=batch_size, flip=flip)
            np.testing.assert_allclose(got, expected, atol=1e-6)
            assert max(linear_embed.batches) <= max(batch_size, 2)
    concat = embed_images(linear_embed, images, flip="concat")
    np.testing.assert_allclose(np.sum(concat**2, 1), 1.0, atol=1e-6)  # squared distances stay in [0, 4]
    with pytest.raises(ValueError, match="flip"):
        embed_images(linear_embed, images, flip="mean")
    with pytest.raises(ValueError, match="embeddings_flip|flipped"):
        combine_flips(emb, None, "sum")


def make_pairs(n_ids=10):
    paths_a, paths_b, issame = [], [], []
    for i in range(n_ids):
        paths_a += [f"id{i}/1", f"id{i}/1"]
        paths_b += [f"id{i}/2", f"id{(i + 1) % n_ids}/2"]
        issame += [True, False]
    return PairSet(paths_a, paths_b, issame, contiguous_folds(2 * n_ids, 10))


def test_evaluate_pairs_dict_and_callable_agree_with_direct_metrics():
    pairs = make_pairs()
    base = {i: rng.integers(0, 256, size=(H, W, 3)) for i in range(10)}
    images = {p: np.clip(base[int(p[2:].split("/")[0])] + rng.integers(-20, 21, size=(H, W, 3)), 0, 255).astype(np.uint8)
              for p in pairs.unique_paths()}
    linear_embed.batches = []
    result = evaluate_pairs(linear_embed, pairs, images, batch_size=6, progress=False)
    assert sum(linear_embed.batches) == 2 * 20  # each distinct image (and its flip) embedded exactly once
    feats = {p: f for p, f in zip(images, embed_images(linear_embed, np.stack(list(images.values()))))}
    want = verification_metrics(np.stack([feats[p] for p in pairs.paths_a]), np.stack([feats[p] for p in pairs.paths_b]),
                                pairs.issame, pairs.folds)
    assert result["fold_accuracies"] == pytest.approx(want["fold_accuracies"], abs=1e-9)
    assert result["auc"] == pytest.approx(want["auc"], abs=1e-6)
    assert result["num_images"] == 20 and result["flip"] == "concat"
    via_callable = evaluate_pairs(linear_embed, pairs, images.__getitem__, batch_size=6, progress=False)
    assert via_callable["fold_accuracies"] == result["fold_accuracies"]


def test_evaluate_pairs_errors_name_the_image():
    pairs = make_pairs()
    images = {p: np.zeros((H, W, 3), np.uint8) for p in pairs.unique_paths()}
    images["id4/2"] = np.zeros((H + 1, W, 3), np.uint8)
    with pytest.raises(ValueError, match="id4/2"):
        evaluate_pairs(linear_embed, pairs, images, image_size=(H, W), progress=False)
    del images["id4/2"]
    with pytest.raises(KeyError, match="id4/2"):
        evaluate_pairs(linear_embed, pairs, images, progress=False)
