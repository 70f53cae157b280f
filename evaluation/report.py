"""Writing evaluation results: the JSON, a ROC plot, a similarity histogram, and a compact text table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from evaluation.metrics import roc_points, squared_distances
from fileio import write_text_atomic


def write_json(result: dict, path) -> Path:
    """Write result as indented JSON (temp file + rename, so no half-written file is left)."""
    return write_text_atomic(path, json.dumps(result, indent=2) + "\n")


def plot_paths(json_path):
    """<stem>_roc.png and <stem>_hist.png beside the JSON."""
    json_path = Path(json_path)
    return json_path.with_name(json_path.stem + "_roc.png"), json_path.with_name(json_path.stem + "_hist.png")


def fit_title(text: str, width: int = 56) -> str:
    """``text`` broken into lines of at most ``width`` characters, at spaces or after a ``/`` (a model
    path has no spaces), so a plot's title is never cut off at the figure's edge."""
    lines, line = [], ""
    for token in re.split(r"(?<=/)|(?= )", text):
        if line.strip() and len(line) + len(token) > width:
            lines.append(line.rstrip())
            line = token.lstrip()
        else:
            line += token
        while len(line) > width:                   # one name longer than a line: cut it
            lines.append(line[:width])
            line = line[width:]
    lines.append(line.rstrip())
    return "\n".join(x for x in lines if x)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def roc_figure(result: dict, dist, issame, title=""):
    """The ROC (TPR against FAR on a log axis) of squared distances ``dist`` [N] as a matplotlib figure."""
    issame = np.asarray(issame, dtype=bool)
    fpr, tpr, _ = roc_points(dist, issame)
    fig, ax = _plt().subplots(figsize=(5, 4.5))
    floor = 0.5 / max(int((~issame).sum()), 1)  # FAR 0 drawn at half the smallest non-zero FAR on the log axis
    ax.plot(np.maximum(fpr, floor), tpr, lw=1.5, label=f"AUC {result['auc']:.4f}, EER {result['eer']:.4f}")
    ax.plot([result["far"]], [result["val"]], "o", label=f"VAL {result['val']:.4f} @ FAR {result['far']:.2g}")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(fit_title(title or "ROC"), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def similarity_figure(result: dict, cosine, issame, title=""):
    """Histograms of the cosine similarities ``cosine`` [N] of same and different pairs, with the threshold."""
    issame = np.asarray(issame, dtype=bool)
    fig, ax = _plt().subplots(figsize=(5, 3.5))
    bins = np.linspace(-1.0, 1.0, 101)
    ax.hist(cosine[issame], bins=bins, alpha=0.6, label=f"same ({issame.sum()})")
    ax.hist(cosine[~issame], bins=bins, alpha=0.6, label=f"different ({(~issame).sum()})")
    ax.axvline(result["threshold_cosine"], color="k", ls="--", lw=1, label=f"threshold {result['threshold_cosine']:.3f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("pairs")
    ax.set_title(fit_title(title or "similarities"), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_plots(result: dict, emb_a, emb_b, issame, json_path, title=""):
    """ROC and similarity-histogram PNGs (``plot_paths``) of the pairs' embeddings ``emb_a``, ``emb_b`` [N, D]."""
    plt = _plt()
    dist = squared_distances(emb_a, emb_b)
    roc_png, hist_png = plot_paths(json_path)
    for fig, png in ((roc_figure(result, dist, issame, title), roc_png),
                     (similarity_figure(result, 1.0 - dist / 2.0, issame, title), hist_png)):
        fig.savefig(png, dpi=120)
        plt.close(fig)
    return roc_png, hist_png


def format_report(result: dict) -> str:
    """Compact table of the headline numbers."""
    rows = [
        ("pairs", f"{result['num_pairs']} ({result['num_same']} same, {result['num_different']} different), {result['num_folds']} folds"),
        ("accuracy", f"{100 * result['accuracy_mean']:.2f} +- {100 * result['accuracy_std']:.2f} %"),
        ("VAL @ FAR", f"{100 * result['val']:.2f} +- {100 * result['val_std']:.2f} % @ {result['far']:.5f} (target {result['far_target']:g})"),
        ("AUC", f"{result['auc']:.4f}"),
        ("EER", f"{100 * result['eer']:.2f} %"),
        ("threshold", f"squared L2 {result['threshold']:.3f} +- {result['threshold_std']:.3f} = cosine {result['threshold_cosine']:.3f}"
                      + (f" (held-out FAR {100 * result['far_at_threshold']:.2f} %, TAR {100 * result['tar_at_threshold']:.2f} %)"
                         if "far_at_threshold" in result else "")),
        *[(f"at FAR {row['far_target']:g}", f"cosine {row['threshold_cosine']:.3f}: TAR {100 * row['tar']:.2f} % at FAR "
           f"{100 * row['far']:.3f} % (held-out folds: TAR {100 * row['heldout_tar']:.2f} %, FAR "
           f"{100 * row['heldout_far']:.3f} %)" + ("" if row["resolvable"] else
                                                   f"; {row['num_different']} different pairs cannot measure it"))
          for row in result.get("far_thresholds", ())],
        ("similarity", f"same {result['same_similarity_mean']:.3f} +- {result['same_similarity_std']:.3f}, "
                       f"different {result['different_similarity_mean']:.3f} +- {result['different_similarity_std']:.3f}"),
    ]
    if "flip" in result:
        rows.append(("features", f"flip={result['flip']}"
                     + (f", protocol {result['protocol']}" if "protocol" in result else "")))
    if result.get("num_images"):
        engine = f", {result['engine']} engine" if "engine" in result else ""
        rows.append(("embedding", f"{result['num_images']} images in {result['embed_seconds']:.1f} s "
                                  f"({result['images_per_second']:.1f} img/s{engine})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
