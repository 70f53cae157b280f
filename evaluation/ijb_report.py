"""IJB results as a printed table and a ROC plot (the JSON is written by evaluation.report.write_json)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.report import fit_title


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def format_ijb_report(result: dict) -> str:
    """1:1 TAR at each FAR (insightface's nearest-ROC-point rule) and AUC; 1:N rank-k and TPIR at FPIR per
    gallery and their mean; all in %."""
    one = result["verification"]
    lines = [(f"{result['target']} {result['mode']} (flip={result['flip']}, norm={result['norm']}, "
             f"detector={result['detector']}): {result['num_templates']} templates, {result['num_images']} images"),
             f"1:1 verification: {one['num_pairs']} pairs ({one['num_same']} same, {one['num_different']} different)"]
    header = "".join(f"{'FAR ' + format(r['far_target'], 'g'):>11}" for r in one["tar_at_far"])
    lines.append(f"{'':<10}{header}{'AUC':>9}")
    lines.append(f"{'TAR %':<10}" + "".join(f"{_pct(r['tar']):>11}" for r in one["tar_at_far"])
                 + f"{_pct(one['auc']):>9}")
    ident = result.get("identification")
    if ident:
        galleries = [name for name in ident if name != "mean"]
        first = ident[galleries[0]]
        ranks = [k for k in first if k.startswith("rank")]
        cols = [k.replace("rank", "rank-") for k in ranks] + [f"TPIR@{r['fpir_target']:g}" for r in first["tpir_at_fpir"]]
        lines.append(f"1:N identification, {first['num_probes']} mixed probes (%):")
        lines.append(f"{'':<10}" + "".join(f"{c:>12}" for c in cols))
        for name in [*galleries, "mean"]:
            row = ident[name]
            values = [row[k] for k in ranks] + [r["tpir"] for r in row["tpir_at_fpir"]]
            extra = (f"   ({row['num_gallery']} gallery, {row['num_mated']} mated / {row['num_non_mated']} non-mated "
                     "probes)") if name != "mean" else ""
            lines.append(f"{name:<10}" + "".join(f"{_pct(v):>12}" for v in values) + extra)
    if result.get("num_images") and "embed_seconds" in result:
        how = "from the cache" if not result.get("images_embedded") else (
            f"{result['images_embedded']} embedded in {result['embed_seconds']:.1f} s, {result.get('engine')} engine")
        lines.append(f"features: {how} ({result.get('cache_dir')})")
    return "\n".join(lines)


def roc_plot_path(json_path) -> Path:
    json_path = Path(json_path)
    return json_path.with_name(json_path.stem + "_roc.png")


def write_ijb_roc(result: dict, roc, json_path, title="") -> Path:
    """ROC (TAR vs FAR, log FAR axis, 1e-6..1) with the TAR@FAR points marked -> <stem>_roc.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc
    one = result["verification"]
    floor = 0.5 / max(one["num_different"], 1)  # FAR 0 drawn at half the smallest non-zero FAR
    path = roc_plot_path(json_path)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot(np.maximum(fpr, floor), tpr, lw=1.5, label=f"{result['mode']}, AUC {100 * one['auc']:.2f} %")
    points = one["tar_at_far"]
    ax.plot([max(r["far"], floor) for r in points], [r["tar"] for r in points], "o", ms=4,
            label="TAR @ FAR " + ", ".join(f"{100 * r['tar']:.1f}" for r in points))
    ax.set_xscale("log")
    ax.set_xlim(min(1e-6, floor), 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(fit_title(title or f"{result['target']} 1:1"), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
