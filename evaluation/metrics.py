"""10-fold verification metrics: the facenet / insightface LFW procedure, vectorised.

Protocol (as in facenet ``lfw.evaluate`` and insightface ``verification.evaluate``):
- features are L2-normalised; the score of a pair is the squared L2 distance
  ``d = sum((a - b)^2)`` in [0, 4] (``d = 2 - 2 cos``). With flip-concatenated features the
  concatenated vector is normalised as a whole, so d stays in [0, 4] and the published grids apply
  unchanged (facenet concatenated two unit vectors without renormalising, range [0, 8]).
- a pair is predicted "same" when ``d < threshold`` (strict).
- accuracy: for each fold, the threshold in ``np.arange(0, 4, 0.01)`` with the highest accuracy
  on the other folds (the first such threshold on ties, i.e. ``np.argmax``) is applied to the fold.
  Mean and population std (ddof=0) over folds.
- VAL@FAR: on the training folds, FAR(t) for t in ``np.arange(0, 4, 0.001)``; if max FAR >= target
  the threshold is interpolated linearly between the largest grid threshold whose FAR < target and
  the smallest whose FAR >= target (``t = t_lo + (target - far_lo) * (t_hi - t_lo) / (far_hi - far_lo)``),
  else it is 0. This is exactly what ``scipy.interpolate.interp1d(far, thresholds, kind='linear',
  assume_sorted=True)(target)`` returns; it replaces the reference's ``kind='slinear'``, which
  SciPy >= 1.9 rejects because FAR(t) repeats values. VAL and FAR of the fold at that threshold;
  mean over folds (and std of VAL).
- AUC and EER use all pairs at once (no folds): the exact ROC of the score -d (ties grouped),
  AUC by the trapezoid rule (= sklearn ``roc_auc_score``), EER where the ROC polyline crosses
  FPR = 1 - TPR.

Counting is done by sorting each fold's distances once and ``np.searchsorted`` against the grid
(count of d < t = ``searchsorted(sorted_d, t, side='left')``), so 6,000 pairs x 10 folds cost a few ms.
"""

from __future__ import annotations

import numpy as np

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
# The false accept rates a report gives a threshold for (verify.py / identify.py --far).
FAR_TARGETS = (1e-2, 1e-3, 1e-4)


def l2_normalize(x) -> np.ndarray:
    """Rows scaled to unit L2 norm, float64 [N, D]; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.sqrt(np.sum(np.square(x), axis=1, keepdims=True))
    return x / np.maximum(norm, 1e-12)


def squared_distances(emb_a, emb_b) -> np.ndarray:
    """Squared L2 distance of the L2-normalised rows, float64 [P], in [0, 4]."""
    diff = l2_normalize(emb_a) - l2_normalize(emb_b)
    return np.sum(np.square(diff), axis=1)


def pair_distances_and_cosines(emb_a, emb_b, chunk=256):
    """Squared L2 distance and cosine similarity of the L2-normalised rows, float64 [P] each.

    Computed in row chunks so float64 copies of wide features (e.g. 6,000 x 3,750) stay small and in cache;
    the arithmetic per row is that of ``squared_distances``.
    """
    n = len(emb_a)
    dist, cosine = np.empty(n), np.empty(n)
    for start in range(0, n, chunk):
        a = l2_normalize(emb_a[start : start + chunk])
        b = l2_normalize(emb_b[start : start + chunk])
        dist[start : start + chunk] = np.sum(np.square(a - b), axis=1)
        cosine[start : start + chunk] = np.sum(a * b, axis=1)
    return dist, cosine


def roc_points(dist, issame):
    """Exact ROC of predicting "same" when d <= t, over every distinct distance.

    Returns (fpr, tpr, thresholds): fpr/tpr float64 [K+1] starting at (0, 0), thresholds [K] (distances).
    """
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    order = np.argsort(dist, kind="stable")
    d, s = dist[order], issame[order]
    last_of_tie = np.r_[d[1:] != d[:-1], True]
    tp = np.cumsum(s)[last_of_tie]
    fp = np.cumsum(~s)[last_of_tie]
    tpr = np.r_[0.0, tp / max(int(s.sum()), 1)]
    fpr = np.r_[0.0, fp / max(int((~s).sum()), 1)]
    return fpr, tpr, d[last_of_tie]


def auc_from_roc(fpr, tpr) -> float:
    """Area under the ROC polyline (trapezoid rule)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def eer_from_roc(fpr, tpr) -> float:
    """Equal error rate: the FPR where the ROC polyline meets FPR = 1 - TPR (linear between points)."""
    fnr = 1.0 - tpr
    i = int(np.argmax(fpr >= fnr))  # first point at or past the crossing (fpr rises, fnr falls)
    if i == 0:
        return float(fpr[0])
    gap_lo = fnr[i - 1] - fpr[i - 1]  # > 0
    gap_hi = fnr[i] - fpr[i]  # <= 0
    u = gap_lo / (gap_lo - gap_hi)
    return float(fpr[i - 1] + u * (fpr[i] - fpr[i - 1]))


class NonFiniteEmbeddings(ValueError):
    """A model's embeddings hold NaN or Inf (a diverged model): no metric can be computed from them."""


def _validate(emb_a, emb_b, issame, folds):
    emb_a = np.asarray(emb_a)
    emb_b = np.asarray(emb_b)
    issame = np.asarray(issame)
    folds = np.asarray(folds)
    if emb_a.ndim != 2 or emb_a.shape != emb_b.shape:
        raise ValueError(f"emb_a and emb_b must both be [P, D]; got {emb_a.shape} and {emb_b.shape}")
    if issame.shape != (len(emb_a),) or folds.shape != (len(emb_a),):
        raise ValueError(f"issame {issame.shape} and folds {folds.shape} must be [{len(emb_a)}]")
    if not (np.all(np.isfinite(emb_a)) and np.all(np.isfinite(emb_b))):
        raise NonFiniteEmbeddings("embeddings contain NaN or Inf (did the model diverge?)")
    if not np.issubdtype(folds.dtype, np.integer) or (len(folds) and folds.min() < 0):
        raise ValueError("folds must be non-negative integers")
    issame = issame.astype(bool)
    k = int(folds.max()) + 1 if len(folds) else 0
    if k < 2:
        raise ValueError(f"need at least 2 folds to cross-validate the threshold, got {k}")
    for f in range(k):
        n_same = int(np.sum(issame[folds == f]))
        n_diff = int(np.sum(~issame[folds == f]))
        if n_same == 0 or n_diff == 0:
            raise ValueError(f"fold {f} has {n_same} same and {n_diff} different pairs; every fold needs both")
    return issame, folds.astype(np.int64), k


def _val_threshold(far_train, thresholds, far_target):
    """Threshold for FAR = far_target by linear interpolation of the monotone FAR(t) curve (see module doc)."""
    if far_train[-1] < far_target:  # FAR(t) is non-decreasing, so the last value is the maximum
        return 0.0
    hi = int(np.searchsorted(far_train, far_target, side="left"))  # first t with FAR >= target (>= 1: FAR(0)=0)
    lo = hi - 1
    slope = (thresholds[hi] - thresholds[lo]) / (far_train[hi] - far_train[lo])
    return float(slope * (far_target - far_train[lo]) + thresholds[lo])


def threshold_at_far(sorted_different, far_target) -> float:
    """The largest squared-L2 threshold t ("same" when d < t) that accepts at most far_target of these
    different-pair distances (sorted ascending): t = the k-th smallest, k = floor(far_target x N), so fewer
    than k + 1 of them lie below it; 4 (every pair) when k >= N. With k = 0 (N < 1 / far_target) it is the
    smallest different-pair distance: no impostor of this set is accepted, and the FAR itself is unmeasured."""
    n = len(sorted_different)
    k = int(np.floor(far_target * n + 1e-9))
    return 4.0 if k >= n else float(sorted_different[k])


def far_thresholds(dist, issame, folds, targets=FAR_TARGETS) -> list:
    """For each target FAR: the threshold on all pairs (threshold_at_far) with the FAR and TAR it achieves
    there, and the same rule cross-validated (each fold's threshold from the other folds' different pairs,
    FAR and TAR measured on the fold; means). ``resolvable``: N different pairs >= 1 / target (else the
    threshold is the strictest the data can give, and its FAR is an upper guess of 1 / N at best)."""
    same_sorted, diff_sorted = np.sort(dist[issame]), np.sort(dist[~issame])
    k = int(folds.max()) + 1
    rows = []
    for target in targets:
        t = threshold_at_far(diff_sorted, target)
        held_far, held_tar = [], []
        for f in range(k):
            train_diff = np.sort(dist[(folds != f) & ~issame])
            t_f = threshold_at_far(train_diff, target)
            held_far.append(np.mean(dist[(folds == f) & ~issame] < t_f))
            held_tar.append(np.mean(dist[(folds == f) & issame] < t_f))
        rows.append({"far_target": float(target), "threshold": t, "threshold_cosine": 1.0 - t / 2.0,
                     "far": float(np.searchsorted(diff_sorted, t, side="left") / len(diff_sorted)),
                     "tar": float(np.searchsorted(same_sorted, t, side="left") / len(same_sorted)),
                     "heldout_far": float(np.mean(held_far)), "heldout_tar": float(np.mean(held_tar)),
                     "num_different": len(diff_sorted), "resolvable": bool(len(diff_sorted) * target >= 1.0)})
    return rows


def auc_standard_error(auc, num_same, num_different):
    """Standard error of a ROC AUC measured on ``num_same`` positive and ``num_different`` negative
    pairs (Hanley & McNeil 1982, eq. 2): 0.003-0.005 for AUC 0.98-0.99 on 500 + 500 pairs."""
    if num_same < 1 or num_different < 1:
        return 0.0
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    variance = (auc * (1.0 - auc) + (num_same - 1) * (q1 - auc * auc)
                + (num_different - 1) * (q2 - auc * auc)) / (num_same * num_different)
    return float(np.sqrt(max(variance, 0.0)))


def verification_metrics(emb_a, emb_b, issame, folds, far_target=1e-3) -> dict:
    """K-fold verification metrics of pairs (emb_a[i], emb_b[i]).

    emb_a, emb_b: [P, D] features (L2-normalised here); issame: bool [P]; folds: int [P] in 0..K-1
    (every fold needs a same and a different pair). Returns a JSON-serialisable dict: accuracy_mean,
    accuracy_std, fold_accuracies, fold_thresholds, threshold (mean fold threshold, squared L2),
    threshold_std, threshold_cosine (= 1 - threshold / 2), far_at_threshold and tar_at_threshold (mean over
    folds of the held-out false / true accept rate at that fold's threshold), far_thresholds (far_thresholds:
    a threshold per FAR_TARGETS with its TAR and achieved FAR), val, val_std, far, fold_vals, fold_fars,
    far_target, auc, eer, num_pairs, num_same, num_different, num_folds, and the mean/std of the
    cosine similarity of same and of different pairs.
    """
    issame, folds, k = _validate(emb_a, emb_b, issame, folds)
    dist, cosine = pair_distances_and_cosines(emb_a, emb_b)

    # Per fold and class: distances sorted once; "count of d < t" for a whole grid is one searchsorted.
    sorted_same = [np.sort(dist[(folds == f) & issame]) for f in range(k)]
    sorted_diff = [np.sort(dist[(folds == f) & ~issame]) for f in range(k)]
    n_same = np.array([len(x) for x in sorted_same], dtype=np.int64)
    n_diff = np.array([len(x) for x in sorted_diff], dtype=np.int64)

    def below(sorted_lists, thresholds):  # int64 [K, T]
        return np.stack([np.searchsorted(x, thresholds, side="left") for x in sorted_lists])

    # Accuracy: best training threshold (first on ties), applied to the held-out fold.
    t_acc = ACCURACY_THRESHOLDS
    tp, fp = below(sorted_same, t_acc), below(sorted_diff, t_acc)
    train_tp = tp.sum(0)[None, :] - tp
    train_tn = (n_diff.sum() - n_diff)[:, None] - (fp.sum(0)[None, :] - fp)
    best = np.argmax(train_tp + train_tn, axis=1)
    rows = np.arange(k)
    fold_acc = (tp[rows, best] + n_diff - fp[rows, best]) / (n_same + n_diff)
    fold_thr = t_acc[best]
    # What deciding at that threshold means on the held-out fold: the false accept rate (different
    # pairs called same) and true accept rate. Commands that decide with this threshold quote them.
    fold_far_thr = fp[rows, best] / n_diff
    fold_tar_thr = tp[rows, best] / n_same

    # VAL@FAR: threshold interpolated on the training folds' FAR curve, measured on the held-out fold.
    t_val = VAL_THRESHOLDS
    fa = below(sorted_diff, t_val)
    train_far = (fa.sum(0)[None, :] - fa) / (n_diff.sum() - n_diff)[:, None]
    fold_val, fold_far = np.zeros(k), np.zeros(k)
    for f in range(k):
        thr = _val_threshold(train_far[f], t_val, far_target)
        fold_val[f] = np.searchsorted(sorted_same[f], thr, side="left") / n_same[f]
        fold_far[f] = np.searchsorted(sorted_diff[f], thr, side="left") / n_diff[f]

    fpr, tpr, _ = roc_points(dist, issame)
    threshold = float(np.mean(fold_thr))
    return {
        "accuracy_mean": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "fold_accuracies": [float(x) for x in fold_acc],
        "threshold": threshold,
        "threshold_std": float(np.std(fold_thr)),
        "threshold_cosine": 1.0 - threshold / 2.0,
        "fold_thresholds": [float(x) for x in fold_thr],
        "far_at_threshold": float(np.mean(fold_far_thr)),
        "tar_at_threshold": float(np.mean(fold_tar_thr)),
        "far_thresholds": far_thresholds(dist, issame, folds),
        "val": float(np.mean(fold_val)),
        "val_std": float(np.std(fold_val)),
        "far": float(np.mean(fold_far)),
        "far_target": float(far_target),
        "fold_vals": [float(x) for x in fold_val],
        "fold_fars": [float(x) for x in fold_far],
        "auc": auc_from_roc(fpr, tpr),
        "eer": eer_from_roc(fpr, tpr),
        "same_similarity_mean": float(np.mean(cosine[issame])),
        "same_similarity_std": float(np.std(cosine[issame])),
        "different_similarity_mean": float(np.mean(cosine[~issame])),
        "different_similarity_std": float(np.std(cosine[~issame])),
        "num_pairs": len(dist),
        "num_same": int(issame.sum()),
        "num_different": int((~issame).sum()),
        "num_folds": k,
    }
