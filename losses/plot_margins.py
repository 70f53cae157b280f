"""Show what each head does: train a 2-d embedding of scikit-learn's bundled digits with every head in
the registry and draw the classes on the unit circle, side by side.

    python -m losses.plot_margins --output docs/margins.png

Offline (the digits ship with scikit-learn), a minute on a CPU, any Keras backend. With only two
dimensions the ten classes share one circle, so the margins are smaller than the published ones
(which are meant for 128–512 dimensions); the defaults are printed on the figure.
"""

import argparse
import sys
from pathlib import Path

# The heads in the order drawn, with margins that fit ten classes on a circle (2π / 10 = 0.63 rad each).
PLOT_HEADS = {
    "softmax": {},
    "am_softmax": {"s": 10.0, "m": 0.2},
    "arcface": {"s": 10.0, "m": 0.2},
    "sphereface": {"s": 10.0, "m": 2},
    "combined": {"s": 10.0, "m1": 1.0, "m2": 0.1, "m3": 0.1},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="docs/margins.png", help="PNG to write (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=60, help="per head (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def train_embedding(head_name, options, x, y, epochs, seed):
    """Train MLP(64 -> 128 -> 2) + head on (x [N, 64], y [N]); returns 2-d embeddings [N, 2] and
    the class-centre directions [10, 2] (None for softmax: its classes are half-planes)."""
    import keras

    from losses.heads import build_head

    keras.utils.set_random_seed(seed)
    images = keras.Input(shape=(x.shape[1],), name="pixels")
    labels = keras.Input(shape=(), dtype="int32", name="labels")
    h = keras.layers.Dense(128, activation="relu")(images)
    h = keras.layers.Dense(128, activation="relu")(h)
    embeddings = keras.layers.Dense(2, name="embedding")(h)
    head = build_head(head_name, 10, **options)
    logits = head(embeddings, labels)
    model = keras.Model([images, labels], logits)
    model.compile(optimizer=keras.optimizers.Adam(0.003),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit([x, y], y, batch_size=64, epochs=epochs, verbose=0)
    embed = keras.Model(images, embeddings)
    emb = keras.ops.convert_to_numpy(embed.predict(x, verbose=0))
    centres = None if head_name == "softmax" else keras.ops.convert_to_numpy(head.kernel).T
    return emb, centres


def draw_panels(panels, y):
    """The figure: one panel per head of ``panels`` {name: (options, embeddings [N, 2], centres [10, 2] or
    None)}, the points at their directions on the unit circle (jittered just inside), a line along
    each class centre out to radius 1.15. Returns the matplotlib figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (name, (options, emb, centres)) in zip(axes[0], panels.items()):
        unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        # Points just inside the circle, jittered inward so dense clusters stay visible.
        radius = 1.0 - 0.12 * np.random.default_rng(0).random(len(unit))[:, None]
        for k in range(10):
            pts = unit[y == k] * radius[y == k]
            ax.scatter(pts[:, 0], pts[:, 1], s=3, color=colours(k), alpha=0.6)
        if centres is not None:
            for k, c in enumerate(centres / np.linalg.norm(centres, axis=1, keepdims=True)):
                ax.plot([0, 1.15 * c[0]], [0, 1.15 * c[1]], color=colours(k), linewidth=1)
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.7", linewidth=0.5))
        ax.set_xlim(-1.2, 1.2), ax.set_ylim(-1.2, 1.2), ax.set_aspect("equal"), ax.axis("off")
        label = ", ".join(f"{k}={v:g}" for k, v in options.items()) or "no margin"
        ax.set_title(f"{name}\n{label}", fontsize=9)
    fig.suptitle("2-d embeddings of the 1,797 scikit-learn digits, L2-normalised (lines: class centres)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.9))   # room for the title above the panels
    return fig


def main(argv=None):
    args = parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    panels = {}
    for name, options in PLOT_HEADS.items():
        emb, centres = train_embedding(name, options, x, y, args.epochs, args.seed)
        panels[name] = (options, emb, centres)
        print(f"{name}: done", flush=True)
    fig = draw_panels(panels, y)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
