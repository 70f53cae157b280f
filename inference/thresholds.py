"""Where a decision threshold comes from: the model's own evaluation, or the user.

``evaluate.py`` writes RUN/eval/<name>.json for each pairs file or .bin set it scores a model on; each
holds the 10-fold cross-validated threshold (squared L2 distance of the normalised features; the
cosine is 1 − d/2), the held-out false accept rate at it (``far_at_threshold``) and the fingerprint
of the model it scored. The commands decide "same" when cosine > that threshold (the evaluation's
strict d < t), and say which report it came from and its FAR there.

``--far 1e-3`` takes instead the report's threshold for that false accept rate (``far_thresholds``:
1e-2, 1e-3 and 1e-4, each with its TAR; evaluation.metrics.far_thresholds). A threshold that accepted
more than 1 % of impostors in its evaluation is flagged (``loose_threshold_warning``). The starter
model's report ships beside it (starter/report.json) and counts as one of its reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FAR_CHOICES = (1e-2, 1e-3, 1e-4)   # evaluation.metrics.FAR_TARGETS (kept here Keras/NumPy-free for --help)
LOOSE_FAR = 0.01   # verify.py warns above this false accept rate
EVALUATE_HINT = ("python evaluate.py --model {model} --lfw-pairs ../shared/data/lfw/pairsDevTest.txt "
                 "--lfw-dir data/lfw_aligned")


class ThresholdError(ValueError):
    """No usable threshold: the message says why and what to do."""


@dataclass
class Threshold:
    """cosine: decide "same" / "known" when similarity > cosine; source: "evaluation" or "--threshold";
    report: the evaluation report's path (None for --threshold); far: held-out false accept rate of
    the evaluation at this threshold (None if unknown); description: one line for the output."""

    cosine: float
    source: str
    report: Path | None
    far: float | None
    description: str
    far_target: float | None = None   # --far: the target this threshold was chosen for


def given_threshold(cosine: float) -> Threshold:
    """A threshold the user chose (--threshold), checked to be a cosine."""
    if not -1.0 <= cosine <= 1.0:
        raise ThresholdError(f"--threshold is a cosine similarity in [-1, 1], got {cosine}")
    return Threshold(float(cosine), "--threshold", None, None,
                     f"threshold {cosine:.3f} (cosine) from --threshold; its false accept rate is not known here")


def _read_report(path: Path) -> dict | None:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return report if isinstance(report, dict) and "threshold_cosine" in report and "num_pairs" in report else None


def _made_by(report: dict, model) -> bool:
    """True when the report scored this model: same fingerprint, or (reports written before fingerprints
    were recorded) the same model file."""
    if "model_fingerprint" in report:
        return report["model_fingerprint"] == model.fingerprint
    try:
        return Path(report.get("model", "")).resolve() == Path(model.path).resolve()
    except (OSError, ValueError):
        return False


def describe_report_threshold(report: dict, path: Path) -> Threshold:
    """The Threshold an evaluation report defines, with its one-line description."""
    what = Path(report.get("pairs") or report.get("bin") or path.name).name
    far = report.get("far_at_threshold")
    far_text = (f"false accept rate {100 * far:.2f} % there (held-out folds)" if far is not None else
                "false accept rate not in this report (written before evaluate.py recorded it; rerun evaluate.py)")
    description = (f"threshold {report['threshold_cosine']:.3f} (cosine) from the model's evaluation on {what} "
                   f"({report['num_pairs']} pairs, {report.get('num_folds', 10)}-fold accuracy "
                   f"{100 * report['accuracy_mean']:.2f} %; {path}); {far_text}")
    return Threshold(float(report["threshold_cosine"]), "evaluation", path, far, description)


def describe_far_threshold(report: dict, path: Path, far: float) -> Threshold:
    """The report's threshold for false accept rate ``far`` (its far_thresholds entry), described."""
    rows = [row for row in report.get("far_thresholds") or () if abs(row["far_target"] - far) <= 1e-9 * far]
    what = Path(report.get("pairs") or report.get("bin") or path.name).name
    if not rows:
        listed = ", ".join(f"{row['far_target']:g}" for row in report.get("far_thresholds") or ())
        raise ThresholdError(f"{path} has no threshold for FAR {far:g} ("
                             + (f"it has {listed}" if listed else "written before evaluate.py recorded them")
                             + "); rerun evaluate.py on the model, or pass --threshold")
    row = rows[0]
    caveat = ("" if row["resolvable"] else
              f"; caution: {row['num_different']} different pairs cannot measure a FAR of {far:g} (the threshold "
              f"is the strictest they give), evaluate on more pairs")
    description = (f"threshold {row['threshold_cosine']:.3f} (cosine) for FAR {far:g} from the model's evaluation on "
                   f"{what} ({report['num_pairs']} pairs; {path}): TAR {100 * row['tar']:.2f} % at FAR "
                   f"{100 * row['far']:.3f} % there, held-out folds TAR {100 * row['heldout_tar']:.2f} %, FAR "
                   f"{100 * row['heldout_far']:.3f} %{caveat}")
    return Threshold(float(row["threshold_cosine"]), "evaluation", path, float(row["heldout_far"]), description, far)


def loose_threshold_warning(threshold: Threshold):
    """A warning line when the threshold accepted more than LOOSE_FAR of impostors in its evaluation, or None."""
    if threshold.far is None or threshold.far <= LOOSE_FAR:
        return None
    if threshold.far_target is not None:   # --far's threshold: the held-out folds accepted more than asked
        return (f"warning: this threshold accepted {100 * threshold.far:.1f} % of impostors (different people) in the "
                f"model's held-out folds, more than 1 %: pass a smaller --far for a stricter threshold")
    return (f"warning: this threshold accepted {100 * threshold.far:.1f} % of impostors (different people) in the "
            f"model's evaluation: it is the accuracy-optimal one, not a safe one; pass --far 1e-2 or --far 1e-3 for "
            f"a stricter threshold")


def model_threshold(model, threshold: float | None = None, report_path=None, far: float | None = None) -> Threshold:
    """The threshold to decide with: ``threshold`` if given, else the report at ``report_path``, else the
    best of the model's own evaluation reports in model.eval_dir and the report.json beside its file (its own
    engine's or a float32 one's before a quantised export's; then most pairs: View 2 beats View 1). ``far``:
    that report's threshold for this false accept rate instead of its accuracy-optimal one.

    model: an engines.EmbeddingModel. Raises ThresholdError when there is none, naming the
    command that makes one.
    """
    if threshold is not None:
        if far is not None:
            raise ThresholdError("give --threshold or --far, not both")
        return given_threshold(threshold)
    if far is not None and not 0.0 < far < 1.0:
        raise ThresholdError(f"--far is a false accept rate in (0, 1), e.g. 1e-3; got {far:g}")
    describe = describe_report_threshold if far is None else (lambda r, p: describe_far_threshold(r, p, far))
    if report_path is not None:
        path = Path(report_path)
        report = _read_report(path)
        if report is None:
            raise ThresholdError(f"{path} is not an evaluation report written by evaluate.py (no threshold_cosine)")
        if "model_fingerprint" in report and report["model_fingerprint"] != model.fingerprint:
            raise ThresholdError(f"{path} evaluated another model ({report.get('model')}), not {model.path}; "
                                 f"evaluate this one or pass --threshold")
        return describe(report, path)
    from engines.registry import FLOAT32_ENGINES
    from engines.starter import is_starter, starter_report_path

    candidates = []
    eval_dir = Path(model.eval_dir)
    paths = sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []
    if is_starter(model.path) and starter_report_path(model.path).is_file():   # the starter's report ships beside it
        paths.append(starter_report_path(model.path))
    for path in paths:
        report = _read_report(path)
        if report is not None and _made_by(report, model):
            # Preferred: the engine's own report (a quantised export's: evaluate.py --engine litert-int8, same
            # fingerprint), where a float32 engine's counts for every float32 engine (FLOAT32_ENGINES: the same
            # function); then a float32 report; another quantised engine's last.
            engine = report.get("engine", "keras")
            float32 = engine in FLOAT32_ENGINES
            rank = 2 if engine == model.engine or (float32 and model.engine in FLOAT32_ENGINES) else int(float32)
            candidates.append((rank, report["num_pairs"], path.name, report, path))
    if not candidates:
        raise ThresholdError(
            f"no evaluation report for {model.path} in {eval_dir}, so no threshold to decide with: evaluate the model "
            f"first ({EVALUATE_HINT.format(model=model.path)}), or pass --eval-report R.json or --threshold COSINE")
    *_, report, path = max(candidates, key=lambda c: (c[0], c[1], c[2]))
    return describe(report, path)
