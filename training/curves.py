"""Learning curves: the TensorBoard scalars of one or more runs rendered to a PNG.

    python -m training.curves RUN [RUN ...] [--label NAME ...] --output curves.png

``train.py`` renders RUN/learning_curves.png at the end of every run.
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

# (tag prefix or tag, panel title); validation tags are val/<set name>/<metric>.
PANELS = (("train/loss", "training loss"), ("train/accuracy", "training accuracy (no margin)"),
          ("train/lr", "learning rate"), ("val/*/accuracy_mean", "validation accuracy (10-fold)"))


def read_scalars(log_dir):
    """All scalars in the event files under ``log_dir``: {tag: [(step, value), ...]} sorted by step.

    A step logged twice (a resumed run that repeated steps after its last checkpoint) keeps the
    value written last.
    """
    import tensorflow as tf

    files = sorted(Path(log_dir).glob("**/events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {log_dir}")
    by_tag = defaultdict(dict)
    for path in files:
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = float(value.simple_value)
                else:
                    continue
                by_tag[value.tag][int(event.step)] = number
    return {tag: sorted(points.items()) for tag, points in by_tag.items()}


def _matching(scalars, pattern):
    if "*" not in pattern:
        return [pattern] if pattern in scalars else []
    head, tail = pattern.split("*")
    return sorted(t for t in scalars if t.startswith(head) and t.endswith(tail))


def plot_learning_curves(runs, output):
    """Draw loss, training accuracy, lr and validation accuracy against step for each run.

    ``runs``: {label: run_dir}. Writes ``output`` (PNG) and returns its path.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = {label: read_scalars(Path(run_dir) / "logs") for label, run_dir in runs.items()}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (pattern, title) in zip(axes.flat, PANELS):
        drawn = False
        for label, tags in scalars.items():
            for tag in _matching(tags, pattern):
                steps, values = zip(*tags[tag])
                name = label if pattern == tag else f"{label} ({tag.split('/')[1]})"
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def main(argv=None):
    p = argparse.ArgumentParser(description="Render runs' TensorBoard scalars (loss, accuracy, lr, validation) to a PNG.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (each has logs/)")
    p.add_argument("--label", action="append", help="legend name per run, in order (default: the folder name)")
    p.add_argument("--output", required=True, help="PNG to write")
    args = p.parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()
    labels = args.label or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"{len(labels)} --label for {len(args.runs)} runs")
    try:
        print(plot_learning_curves(dict(zip(labels, args.runs)), args.output))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
