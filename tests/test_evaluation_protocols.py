"""evaluation.protocols: each protocol against a plain transcription of its reference's code."""

import numpy as np
import pytest

from evaluation import combine_flips
from evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS, get_protocol, sphereface_accuracy
from evaluation.run import evaluate_embeddings, save_embeddings_npz


def _raw_pairs(seed=0, pairs_per_fold=24, dim=8):
    """Raw embeddings [N, D] and their flips' of 10 folds of pairs (half same), with a common offset
    and uneven norms, so the mean subtraction and the normalisations all matter."""
    rng = np.random.default_rng(seed)
    n = 10 * pairs_per_fold
    ids = rng.normal(size=(n, dim))
    offset = rng.normal(size=dim) * 1.5
    same = np.arange(n) % 2 == 0
    a = ids + 0.6 * rng.normal(size=(n, dim))
    b = np.where(same[:, None], ids, rng.normal(size=(n, dim))) + 0.6 * rng.normal(size=(n, dim))
    raw = np.concatenate([a, b]) * rng.uniform(0.5, 3.0, size=(2 * n, 1)) + offset
    flip = raw + 0.3 * rng.normal(size=raw.shape)
    folds = np.repeat(np.arange(10), pairs_per_fold)
    return raw, flip, same, folds, n


def _facenet_accuracy(emb1, emb2, issame, folds):
    """facenet src/lfw.py calculate_roc's accuracy loop (distance_metric 0), transcribed."""
    thresholds = np.arange(0, 4, 0.01)
    dist = np.sum(np.square(emb1 - emb2), 1)

    def calculate_accuracy(threshold, dist, actual_issame):
        predict_issame = np.less(dist, threshold)
        tp = np.sum(np.logical_and(predict_issame, actual_issame))
        tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
        return float(tp + tn) / dist.size

    accuracy, best_thresholds = [], []
    for fold in range(10):
        train, test = folds != fold, folds == fold
        acc_train = [calculate_accuracy(t, dist[train], issame[train]) for t in thresholds]
        best = int(np.argmax(acc_train))
        accuracy.append(calculate_accuracy(thresholds[best], dist[test], issame[test]))
        best_thresholds.append(thresholds[best])
    return np.array(accuracy), np.array(best_thresholds)


def _sphereface_accuracy(feature_l, feature_r, flags, folds, subtract_mean=True):
    """SphereFace test/code/evaluation.m, transcribed (features are rows here, columns there)."""
    thresholds = np.arange(-10000, 10001) / 10000

    def get_accuracy(scores, flags, threshold):
        threshold = np.atleast_1d(threshold)
        return ((scores[flags][:, None] > threshold).sum(0) + (scores[~flags][:, None] < threshold).sum(0)) / len(scores)

    accs, thrs = [], []
    for i in range(10):
        val_fold, test_fold = folds != i, folds == i
        mu = np.mean(np.concatenate([feature_l[val_fold], feature_r[val_fold]]), axis=0) * subtract_mean
        fl, fr = feature_l - mu, feature_r - mu
        fl = fl / np.sqrt(np.sum(fl ** 2, axis=1, keepdims=True))
        fr = fr / np.sqrt(np.sum(fr ** 2, axis=1, keepdims=True))
        scores = np.sum(fl * fr, axis=1)
        accuracys = get_accuracy(scores[val_fold], flags[val_fold], thresholds)
        thrs.append(np.mean(thresholds[accuracys == np.max(accuracys)]))
        accs.append(get_accuracy(scores[test_fold], flags[test_fold], thrs[-1])[0])
    return np.array(accs), np.array(thrs)


def _protocol_result(name, raw, flip, same, folds, n):
    protocol = get_protocol(name)
    features = combine_flips(raw, flip, protocol.flip)
    return protocol.metrics(features[:n], features[n:], same, folds)


def test_facenet_protocol_is_facenets_loop_on_renormalised_concatenation():
    raw, flip, same, folds, n = _raw_pairs()
    result = _protocol_result("facenet", raw, flip, same, folds, n)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    features = unit(np.concatenate([unit(raw), unit(flip)], axis=1))   # facenet's halves, renormalised
    accuracy, thresholds = _facenet_accuracy(features[:n], features[n:], same, folds)
    np.testing.assert_allclose(result["fold_accuracies"], accuracy, atol=1e-12)
    np.testing.assert_allclose(result["fold_thresholds"], thresholds, atol=1e-12)
    assert result["accuracy_mean"] == pytest.approx(np.mean(accuracy), abs=1e-12)


def test_insightface_protocol_sums_the_flips():
    raw, flip, same, folds, n = _raw_pairs(seed=1)
    result = _protocol_result("insightface", raw, flip, same, folds, n)
    summed = raw + flip
    summed = summed / np.linalg.norm(summed, axis=1, keepdims=True)   # sklearn.preprocessing.normalize
    accuracy, thresholds = _facenet_accuracy(summed[:n], summed[n:], same, folds)
    np.testing.assert_allclose(result["fold_accuracies"], accuracy, atol=1e-12)
    np.testing.assert_allclose(result["fold_thresholds"], thresholds, atol=1e-12)


@pytest.mark.parametrize("seed", [2, 3])
def test_sphereface_protocol_is_evaluation_m(seed):
    raw, flip, same, folds, n = _raw_pairs(seed=seed)
    result = _protocol_result("sphereface", raw, flip, same, folds, n)
    feature = np.concatenate([raw, flip], axis=1)   # [res{1}; res_{1}]: raw, not normalised
    accuracy, thresholds = _sphereface_accuracy(feature[:n], feature[n:], same, folds)
    np.testing.assert_allclose(result["fold_accuracies"], accuracy, atol=1e-12)
    np.testing.assert_allclose(result["sphereface_fold_thresholds"], thresholds, atol=1e-12)
    assert result["accuracy_mean"] == pytest.approx(np.mean(accuracy), abs=1e-12)
    assert result["accuracy_std"] == pytest.approx(np.std(accuracy), abs=1e-12)
    # the data can tell: without the mean subtraction, or with the first tied threshold, the numbers move
    _, uncentred = _sphereface_accuracy(feature[:n], feature[n:], same, folds, subtract_mean=False)
    assert np.abs(uncentred - thresholds).max() > 1e-3
    assert np.abs(sphereface_accuracy(feature[:n], feature[n:], same, folds)["fold_thresholds"] - thresholds).max() < 1e-12
    assert np.any(np.abs(thresholds * 10000 - np.round(thresholds * 10000)) > 1e-6)   # a mean of several tied grid points, not one grid point


def test_defaults_and_registry(tmp_path):
    assert DEFAULT_PROTOCOL == {"pairs": "facenet", "bin": "insightface"}
    assert {name: p.flip for name, p in PROTOCOLS.items()} == {
        "facenet": "concat", "insightface": "sum", "sphereface": "concat_raw"}
    with pytest.raises(ValueError, match="--protocol"):
        get_protocol("lfw")
    # evaluate_embeddings: the protocol chooses the flip mode unless --flip does
    raw, flip, same, _, n = _raw_pairs(seed=4, pairs_per_fold=6)
    names = [f"p{i}/p{i}_0001.jpg" for i in range(2 * n)]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# generic pairs\n" + "".join(f"{names[i]}\t{names[n + i]}\t{int(same[i])}\n"
                                                   for i in range(n)))
    save_embeddings_npz(tmp_path / "e.npz", names, raw.astype("float32"), flip.astype("float32"))
    for name, want in (("facenet", "concat"), ("insightface", "sum"), ("sphereface", "concat_raw")):
        result, *_ = evaluate_embeddings(pairs, tmp_path / "e.npz", protocol=name)
        assert (result["protocol"], result["flip"]) == (name, want)
