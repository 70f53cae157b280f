"""IJB metrics from template scores: 1:1 ROC with TAR at FAR (insightface's operating-point rule) and 1:N
closed-set rank-k and open-set TPIR at FPIR. numpy only; sized for IJB-C (15.7M pairs, 19.6k probes).

Operating-point rule (``arcface_torch/eval_ijbc.py``): the ROC is sklearn's ``roc_curve(label, score)``
(one point per distinct score, collinear points dropped, a (0, 0) point first); TAR at a target FAR is
the TPR of the ROC point whose FPR is nearest the target, ties going to the larger FPR. ``roc_curve``
here computes the same points by one sort, without sklearn.
"""

from __future__ import annotations

import numpy as np

FAR_TARGETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FPIR_TARGETS = (1e-2, 1e-1)
RANKS = (1, 5, 10)


def roc_curve(labels, scores):
    """(fpr, tpr, thresholds) float64 [K] as sklearn.metrics.roc_curve(labels, scores) gives them
    (drop_intermediate=True): points by decreasing threshold, starting at (0, 0) with threshold +inf.

    labels [P] 0/1, scores [P] float (higher = more alike). Needs both classes.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        raise ValueError(f"the ROC needs same and different pairs; got {positives} same of {len(labels)}")
    order = np.argsort(-scores, kind="mergesort")  # sklearn's sort (stable, by decreasing score)
    sorted_scores = scores[order]
    tps_all = np.cumsum(labels[order], dtype=np.int64)
    del order
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]  # last index of each distinct score
    tps = tps_all[last]
    del tps_all
    fps = 1 + last - tps
    thresholds = sorted_scores[last]
    if len(tps) > 2:  # drop the points on a straight line between their neighbours (sklearn's drop_intermediate)
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / fps[-1], tps / tps[-1], thresholds


def tar_at_far(fpr, tpr, thresholds, far_targets=FAR_TARGETS) -> list:
    """[{far_target, tar, far, threshold}] by insightface's rule: the ROC point with FPR nearest each target
    (on a tie the one listed first after reversing the ROC, i.e. the larger FPR / TPR)."""
    fpr_r, tpr_r, thr_r = fpr[::-1], tpr[::-1], thresholds[::-1]
    rows = []
    for target in far_targets:
        k = int(np.argmin(np.abs(fpr_r - target)))  # argmin returns the first of equal values, as min(zip(...))
        rows.append({"far_target": float(target), "tar": float(tpr_r[k]), "far": float(fpr_r[k]),
                     "threshold": float(thr_r[k])})
    return rows


def auc(fpr, tpr) -> float:
    """Area under the ROC by the trapezoid rule (sklearn.metrics.auc)."""
    return float(np.trapezoid(tpr, fpr))


def verification_1to1(scores, labels, far_targets=FAR_TARGETS):
    """1:1 summary of template-pair scores -> (result dict, (fpr, tpr, thresholds))."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    labels = np.asarray(labels).astype(bool)
    return {
        "num_pairs": len(labels), "num_same": int(labels.sum()), "num_different": int((~labels).sum()),
        "tar_at_far": tar_at_far(fpr, tpr, thresholds, far_targets), "auc": auc(fpr, tpr),
        "roc_points": len(fpr),
    }, (fpr, tpr, thresholds)


def identification_1toN(probe_feats, probe_subjects, gallery_feats, gallery_subjects, ranks=RANKS,
                        fpir_targets=FPIR_TARGETS, chunk=4096) -> dict:
    """1:N search of probe templates [Q, D] in a gallery [G, D] (unit rows, one template per subject).

    Closed set, over mated probes (subject in the gallery): rank-k = fraction whose mate scores among the
    k best (rank = 1 + gallery templates scoring strictly above the mate). Open set: the threshold at FPIR
    f is the k-th highest of the non-mated probes' top scores, k = floor(f · non-mated) (0-based, so at
    most f of them score above it); TPIR = fraction of mated probes whose mate is rank 1 and scores
    strictly above it. None where there are no mated or no non-mated probes.
    """
    probe_subjects = np.asarray(probe_subjects)
    gallery_subjects = np.asarray(gallery_subjects)
    position = {int(s): g for g, s in enumerate(gallery_subjects)}
    mate = np.array([position.get(int(s), -1) for s in probe_subjects], np.int64)
    mated = mate >= 0
    rank = np.zeros(len(probe_subjects), np.int64)
    mate_score = np.full(len(probe_subjects), np.nan)
    top_score = np.empty(len(probe_subjects))
    for start in range(0, len(probe_subjects), chunk):
        sim = np.asarray(probe_feats[start:start + chunk], np.float64) @ np.asarray(gallery_feats, np.float64).T
        top_score[start:start + chunk] = sim.max(axis=1)
        rows = np.flatnonzero(mated[start:start + chunk])
        m = sim[rows, mate[start + rows]]
        mate_score[start + rows] = m
        rank[start + rows] = 1 + (sim[rows] > m[:, None]).sum(axis=1)
    result = {"num_probes": len(probe_subjects), "num_mated": int(mated.sum()),
              "num_non_mated": int((~mated).sum()), "num_gallery": len(gallery_subjects)}
    n_mated = int(mated.sum())
    for k in ranks:
        result[f"rank{k}"] = float((rank[mated] <= k).mean()) if n_mated else None
    non_mated_top = np.sort(top_score[~mated])[::-1]
    tpir = []
    for f in fpir_targets:
        if not n_mated or not len(non_mated_top):
            tpir.append({"fpir_target": float(f), "tpir": None, "fpir": None, "threshold": None})
            continue
        k = int(np.floor(f * len(non_mated_top)))
        threshold = float(non_mated_top[k]) if k < len(non_mated_top) else -np.inf
        hit = mated & (rank == 1) & (mate_score > threshold)
        tpir.append({"fpir_target": float(f), "tpir": float(hit.sum() / n_mated),
                     "fpir": float((non_mated_top > threshold).mean()), "threshold": threshold})
    result["tpir_at_fpir"] = tpir
    return result


def mean_of_galleries(results: dict) -> dict:
    """Mean over galleries (G1, G2) of rank-k and TPIR at each FPIR (None if any gallery has None)."""
    def mean(values):
        return None if any(v is None for v in values) else float(np.mean(values))

    first = next(iter(results.values()))
    out = {key: mean([r[key] for r in results.values()]) for key in first if key.startswith("rank")}
    out["tpir_at_fpir"] = [
        {"fpir_target": row["fpir_target"], "tpir": mean([r["tpir_at_fpir"][i]["tpir"] for r in results.values()])}
        for i, row in enumerate(first["tpir_at_fpir"])]
    return out
