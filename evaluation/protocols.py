"""Verification protocols: how each reference turned a model's embeddings into its published LFW number.

    python evaluate.py --lfw-pairs pairs.txt --protocol sphereface

Each protocol = how an image's features combine with its mirror image's (evaluation.embed flip modes)
+ how the 10-fold accuracy picks its threshold. VAL@FAR, AUC and EER are the same in every protocol:
``evaluation.metrics.verification_metrics`` on the protocol's features (AUC and EER from the pooled
exact ROC of all pairs, not facenet's fold-averaged ROC). docs/protocols.md compares them.

- ``facenet`` (what this project reports; facenet's ``lfw.py``): flip-concatenated unit halves,
  renormalised as a whole (facenet does not renormalise: its distances span [0, 8] where ours span
  [0, 4], so its 0.01 grid is our 0.005 grid on [0, 2]); squared L2 distance, thresholds
  ``np.arange(0, 4, 0.01)``, same when d < t, the first best training threshold.
- ``insightface`` (``recognition/.../verification.py``): the raw embedding and its flip's *summed*, then
  normalised; otherwise facenet's loop (insightface copied it).
- ``sphereface`` (``test/code/evaluation.m``): the raw embedding and its flip's concatenated; per fold,
  the training folds' mean feature (of both sides of their pairs) is subtracted, rows normalised, the
  score is the cosine; thresholds (−10000:10000) / 10000, same when score > t, different when
  score < t (a score equal to t is counted wrong), and the threshold is the mean of all the training
  thresholds tied at the best accuracy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from evaluation.metrics import _validate, l2_normalize, verification_metrics

SPHEREFACE_THRESHOLDS = np.arange(-10000, 10001) / 10000.0   # MATLAB (-thrNum:thrNum) / thrNum


def sphereface_accuracy(emb_a, emb_b, issame, folds) -> dict:
    """SphereFace evaluation.m's 10-fold accuracy of pairs of raw features [P, D] (see module doc).

    Returns accuracy_mean, accuracy_std (population), fold_accuracies and fold_thresholds (cosine of
    the mean-subtracted features, in [-1, 1]).
    """
    issame, folds, k = _validate(emb_a, emb_b, issame, folds)
    emb_a, emb_b = np.asarray(emb_a, np.float64), np.asarray(emb_b, np.float64)
    t = SPHEREFACE_THRESHOLDS
    fold_acc, fold_thr = np.zeros(k), np.zeros(k)
    for f in range(k):
        train, test = folds != f, folds == f
        mu = np.mean(np.concatenate([emb_a[train], emb_b[train]]), axis=0)
        scores = np.sum(l2_normalize(emb_a - mu) * l2_normalize(emb_b - mu), axis=1)
        same, diff = np.sort(scores[train & issame]), np.sort(scores[train & ~issame])
        # count of same scores > t and of different scores < t, for the whole grid at once
        correct = (len(same) - np.searchsorted(same, t, side="right")) + np.searchsorted(diff, t, side="left")
        fold_thr[f] = np.mean(t[correct == correct.max()])
        s, y = scores[test], issame[test]
        fold_acc[f] = (np.sum(s[y] > fold_thr[f]) + np.sum(s[~y] < fold_thr[f])) / len(s)
    return {"accuracy_mean": float(np.mean(fold_acc)), "accuracy_std": float(np.std(fold_acc)),
            "fold_accuracies": [float(x) for x in fold_acc], "fold_thresholds": [float(x) for x in fold_thr]}


def sphereface_metrics(emb_a, emb_b, issame, folds, far_target=1e-3) -> dict:
    """verification_metrics, with the accuracy replaced by SphereFace's (sphereface_accuracy).

    The threshold fields stay facenet's on the normalised features (what verify.py can apply to new
    pairs); ``sphereface_fold_thresholds`` holds evaluation.m's own (cosines after the mean subtraction).
    """
    result = verification_metrics(emb_a, emb_b, issame, folds, far_target)
    ours = sphereface_accuracy(emb_a, emb_b, issame, folds)
    result.update(accuracy_mean=ours["accuracy_mean"], accuracy_std=ours["accuracy_std"],
                  fold_accuracies=ours["fold_accuracies"], sphereface_fold_thresholds=ours["fold_thresholds"])
    return result


@dataclasses.dataclass(frozen=True)
class Protocol:
    flip: str        # evaluation.embed flip mode of the features
    metrics: object  # (emb_a, emb_b, issame, folds, far_target) -> result dict
    source: str      # the reference code it follows


PROTOCOLS = {
    "facenet": Protocol("concat", verification_metrics, "facenet src/lfw.py (halves renormalised as a whole)"),
    "insightface": Protocol("sum", verification_metrics, "insightface recognition eval/verification.py"),
    "sphereface": Protocol("concat_raw", sphereface_metrics, "SphereFace test/code/evaluation.m"),
}
DEFAULT_PROTOCOL = {"pairs": "facenet", "bin": "insightface"}   # what each input kind reports by default


def get_protocol(name):
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {name!r}")
    return PROTOCOLS[name]
