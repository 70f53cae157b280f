"""verification_metrics against a straightforward loop implementation of the facenet/insightface procedure."""

import numpy as np
import pytest
from scipy import interpolate
from sklearn.metrics import roc_auc_score

from evaluation import verification_metrics
from evaluation.metrics import auc_from_roc, eer_from_roc, roc_points
from evaluation.pairs import contiguous_folds, stratified_contiguous_folds


# ---- independent reference: facenet lfw.py / insightface verification.py, one threshold at a time ----
def ref_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    return float(tp + tn) / dist.size


def ref_val_far(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
    false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    return float(true_accept) / float(np.sum(actual_issame)), float(false_accept) / float(np.sum(~actual_issame))


def reference_metrics(emb_a, emb_b, issame, folds, far_target=1e-3):
    emb_a = emb_a / np.linalg.norm(emb_a, axis=1, keepdims=True)
    emb_b = emb_b / np.linalg.norm(emb_b, axis=1, keepdims=True)
    dist = np.sum(np.square(np.subtract(emb_a, emb_b)), 1)
    accuracies, best_thresholds, vals, fars, thr_tars, thr_fars = [], [], [], [], [], []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        thresholds = np.arange(0, 4, 0.01)
        acc_train = np.array([ref_accuracy(t, dist[train], issame[train]) for t in thresholds])
        best = np.argmax(acc_train)
        best_thresholds.append(thresholds[best])
        accuracies.append(ref_accuracy(thresholds[best], dist[test], issame[test]))
        tar, far = ref_val_far(thresholds[best], dist[test], issame[test])  # what deciding at it means
        thr_tars.append(tar)
        thr_fars.append(far)
        thresholds = np.arange(0, 4, 0.001)
        far_train = np.array([ref_val_far(t, dist[train], issame[train])[1] for t in thresholds])
        if np.max(far_train) >= far_target:
            # kind='linear' (not the reference's 'slinear', which SciPy >= 1.9 rejects on repeated FARs)
            threshold = float(interpolate.interp1d(far_train, thresholds, kind="linear", assume_sorted=True)(far_target))
        else:
            threshold = 0.0
        val, far = ref_val_far(threshold, dist[test], issame[test])
        vals.append(val)
        fars.append(far)
    return {"fold_accuracies": accuracies, "fold_thresholds": best_thresholds, "vals": vals, "fars": fars,
                "tars_at_threshold": thr_tars, "fars_at_threshold": thr_fars}


def view2_layout(num_folds, per_fold):
    """issame and folds laid out like LFW pairs.txt: per fold, per_fold same then per_fold different."""
    issame = np.tile(np.r_[np.ones(per_fold, bool), np.zeros(per_fold, bool)], num_folds)
    return issame, contiguous_folds(len(issame), num_folds)


def noisy_pairs(issame, dim, noise, rng, quantize=False):
    emb_a = rng.normal(size=(len(issame), dim))
    emb_b = np.where(issame[:, None], emb_a + noise * rng.normal(size=emb_a.shape), rng.normal(size=emb_a.shape))
    if quantize:  # small integer vectors: many exactly tied distances, some on grid values
        emb_a, emb_b = np.round(emb_a), np.round(emb_b)
        emb_a[np.all(emb_a == 0, 1), 0] = 1
        emb_b[np.all(emb_b == 0, 1), 0] = 1
    return emb_a, emb_b


def assert_matches_reference(emb_a, emb_b, issame, folds, far_target=1e-3):
    ours = verification_metrics(emb_a, emb_b, issame, folds, far_target)
    ref = reference_metrics(emb_a, emb_b, issame, folds, far_target)
    np.testing.assert_allclose(ours["fold_accuracies"], ref["fold_accuracies"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours["fold_thresholds"], ref["fold_thresholds"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours["fold_vals"], ref["vals"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours["fold_fars"], ref["fars"], rtol=0, atol=1e-9)
    assert ours["accuracy_mean"] == pytest.approx(np.mean(ref["fold_accuracies"]), abs=1e-12)
    assert ours["accuracy_std"] == pytest.approx(np.std(ref["fold_accuracies"]), abs=1e-12)
    assert ours["val"] == pytest.approx(np.mean(ref["vals"]), abs=1e-12)
    assert ours["val_std"] == pytest.approx(np.std(ref["vals"]), abs=1e-12)
    assert ours["far"] == pytest.approx(np.mean(ref["fars"]), abs=1e-12)
    assert ours["far_at_threshold"] == pytest.approx(np.mean(ref["fars_at_threshold"]), abs=1e-12)
    assert ours["tar_at_threshold"] == pytest.approx(np.mean(ref["tars_at_threshold"]), abs=1e-12)
    return ours


@pytest.mark.parametrize("noise", [0.6, 1.2])
def test_view2_matches_reference(noise):
    rng = np.random.default_rng(0)
    issame, folds = view2_layout(10, 40)
    emb_a, emb_b = noisy_pairs(issame, 16, noise, rng)
    ours = assert_matches_reference(emb_a, emb_b, issame, folds)
    assert 0.6 < ours["accuracy_mean"] < 1.0  # a case where thresholds matter


def test_ties_and_grid_values_match_reference():
    rng = np.random.default_rng(1)
    issame, folds = view2_layout(10, 30)
    emb_a, emb_b = noisy_pairs(issame, 3, 0.7, rng, quantize=True)
    dist = np.sum(np.square(emb_a / np.linalg.norm(emb_a, axis=1, keepdims=True)
                            - emb_b / np.linalg.norm(emb_b, axis=1, keepdims=True)), 1)
    assert len(np.unique(dist)) < len(dist) / 4  # really tied
    assert_matches_reference(emb_a, emb_b, issame, folds)


def test_view1_folds_and_larger_far_target_match_reference():
    rng = np.random.default_rng(2)
    issame = np.r_[np.ones(110, bool), np.zeros(110, bool)]  # View 1 file order: same block then different block
    folds = stratified_contiguous_folds(issame, 10)
    emb_a, emb_b = noisy_pairs(issame, 8, 0.9, rng)
    ours = assert_matches_reference(emb_a, emb_b, issame, folds, far_target=0.05)
    assert ours["far"] == pytest.approx(0.05, abs=0.06)
    # the same as interleaving s, d, s, d, ... and cutting 10 contiguous folds (sklearn KFold)
    order = np.ravel(np.column_stack([np.arange(110), 110 + np.arange(110)]))
    interleaved = verification_metrics(emb_a[order], emb_b[order], issame[order], contiguous_folds(220, 10))
    assert interleaved["fold_accuracies"] == ours["fold_accuracies"]


def test_separable_is_perfect_and_random_is_chance():
    rng = np.random.default_rng(3)
    issame, folds = view2_layout(10, 300)
    emb_a = rng.normal(size=(6000, 64))
    emb_b = np.where(issame[:, None], emb_a + 0.05 * rng.normal(size=emb_a.shape), rng.normal(size=emb_a.shape))
    perfect = verification_metrics(emb_a, emb_b, issame, folds)
    assert perfect["accuracy_mean"] == 1.0 and perfect["accuracy_std"] == 0.0
    assert perfect["val"] == 1.0 and perfect["auc"] == 1.0 and perfect["eer"] == 0.0
    assert perfect["same_similarity_mean"] > 0.99 and abs(perfect["different_similarity_mean"]) < 0.05

    chance = verification_metrics(rng.normal(size=(6000, 64)), rng.normal(size=(6000, 64)), issame, folds)
    assert 0.45 < chance["accuracy_mean"] < 0.55
    assert 0.45 < chance["auc"] < 0.55 and 0.45 < chance["eer"] < 0.55
    assert chance["val"] < 0.02


def test_result_fields_and_threshold_units():
    rng = np.random.default_rng(4)
    issame, folds = view2_layout(10, 20)
    out = verification_metrics(*noisy_pairs(issame, 8, 0.8, rng), issame, folds)
    for key in ("accuracy_mean", "accuracy_std", "fold_accuracies", "val", "val_std", "far", "auc", "eer",
                "threshold", "threshold_cosine", "num_pairs"):
        assert key in out
    assert len(out["fold_accuracies"]) == 10 and out["num_pairs"] == 400
    assert out["threshold"] == pytest.approx(np.mean(out["fold_thresholds"]))
    assert out["threshold_cosine"] == pytest.approx(1 - out["threshold"] / 2)  # |a-b|^2 = 2 - 2cos for unit vectors


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(5)
    issame = rng.random(500) < 0.5
    dist = np.round(rng.random(500) * 4 - issame, 1)  # coarse: many ties across classes
    fpr, tpr, _ = roc_points(dist, issame)
    assert auc_from_roc(fpr, tpr) == pytest.approx(roc_auc_score(issame, -dist), abs=1e-12)


@pytest.mark.parametrize(
    "same, diff, eer",
    [([0.1, 0.2, 0.3, 0.6], [0.4, 0.5, 0.7, 0.8], 0.25),  # crossing at a ROC vertex
     ([0.1, 0.3], [0.3, 0.5], 0.25)],  # crossing inside a tied (diagonal) segment: 0.5 + x = 1 - x
)
def test_eer_by_hand(same, diff, eer):
    dist = np.array(same + diff)
    issame = np.r_[np.ones(len(same), bool), np.zeros(len(diff), bool)]
    fpr, tpr, _ = roc_points(dist, issame)
    assert eer_from_roc(fpr, tpr) == pytest.approx(eer)


def test_invalid_inputs_are_refused():
    issame, folds = view2_layout(10, 3)
    emb = np.ones((60, 4))
    with pytest.raises(ValueError, match="fold 9"):
        bad = issame.copy()
        bad[folds == 9] = True
        verification_metrics(emb, emb, bad, folds)
    with pytest.raises(ValueError, match="NaN"):
        nan = emb.copy()
        nan[0, 0] = np.nan
        verification_metrics(nan, emb, issame, folds)
    with pytest.raises(ValueError, match="2 folds"):
        verification_metrics(emb, emb, issame, np.zeros(60, int))
    with pytest.raises(ValueError, match=r"\[P, D\]"):
        verification_metrics(emb, emb[:, :3], issame, folds)


def test_far_thresholds_accept_at_most_the_target_share_of_impostors():
    """200 different and 200 same pairs of known cosines: the FAR 1e-2 threshold lets 2 impostors through
    (k = floor(0.01 x 200)); 1e-3 and 1e-4 lie at the closest impostor and say they are not measurable."""
    from evaluation.metrics import verification_metrics

    rng = np.random.default_rng(0)
    cos_diff, cos_same = rng.uniform(-0.5, 0.6, 200), rng.uniform(0.2, 0.99, 200)
    cosines = np.r_[cos_same, cos_diff]
    emb_a = np.tile([1.0, 0.0], (400, 1))
    emb_b = np.c_[cosines, np.sqrt(1 - cosines ** 2)]
    issame = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    folds = np.r_[np.arange(200) % 10, np.arange(200) % 10]
    rows = {r["far_target"]: r for r in verification_metrics(emb_a, emb_b, issame, folds)["far_thresholds"]}
    assert sorted(rows) == [1e-4, 1e-3, 1e-2]
    third_highest = np.sort(cos_diff)[-3]   # d < t <=> cosine > 1 - t/2: the two highest impostors pass
    assert rows[1e-2]["threshold_cosine"] == pytest.approx(third_highest)
    assert rows[1e-2]["far"] == pytest.approx(2 / 200) and rows[1e-2]["resolvable"]
    assert rows[1e-2]["tar"] == pytest.approx(np.mean(cos_same > third_highest))
    for target in (1e-3, 1e-4):
        assert rows[target]["far"] == 0 and not rows[target]["resolvable"]
        assert rows[target]["threshold_cosine"] == pytest.approx(cos_diff.max())
    assert 0 <= rows[1e-2]["heldout_far"] <= 0.05 and rows[1e-2]["num_different"] == 200
