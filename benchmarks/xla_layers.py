"""Why XLA slows CPU training: one layer's forward + backward, TF graph vs XLA, side by side.

MobileFaceNet trained ~10x slower with --xla on CPU. This times single layers at a MobileFaceNet
stage-2 shape (batch 64, 28x24, 128 channels), alternating graph and XLA calls, so the culprit
shows: XLA's CPU backend has no fast depthwise convolution (TF's graph mode runs oneDNN's), and
its dense convolutions are slower too, so no split (compiling all but the depthwise layers) wins.
PReLU is the other way round: TensorFlow's autodiff of it is a chain of element-wise passes, which
XLA fuses; the PReLU rows show what models/layers.py's FastPReLU gains in training (its forward and
backward are XLA kernels inside the graph step) against the stock layer and the plain select.

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.xla_layers
"""

import argparse
import statistics
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6, help="timed calls per variant (default 6)")
    args = parser.parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    from models.layers import FastPReLU
    from training.hardware import cpu_description

    x = tf.constant(np.random.default_rng(0).normal(size=(args.batch_size, 28, 24, 128)).astype("float32"))
    def prelu(cls):
        return cls(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2])

    # name -> (layer, training flag of its call)
    layers = {"depthwise 3x3, 128 ch": (keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False), None),
              "pointwise 1x1, 128 -> 128": (keras.layers.Conv2D(128, 1, use_bias=False), None),
              "dense 3x3, 128 -> 128": (keras.layers.Conv2D(128, 3, padding="same", use_bias=False), None),
              "PReLU, stock Keras (relu(x) - a relu(-x))": (prelu(keras.layers.PReLU), None),
              "PReLU, one select (FastPReLU, inference)": (prelu(FastPReLU), False),
              "PReLU, FastPReLU in training (XLA kernels)": (prelu(FastPReLU), True)}
    print(f"# one layer, forward + backward, input [{args.batch_size}, 28, 24, 128] fp32, median of {args.rounds}; "
          f"CPU: {cpu_description()}")
    print("| layer | TF graph ms | XLA ms | XLA time / graph time |")
    print("|---|---:|---:|---:|")
    for name, (layer, training) in layers.items():
        layer.build(x.shape)

        def forward_backward(x, layer=layer, training=training):
            with tf.GradientTape() as tape:
                tape.watch(x)
                objective = tf.reduce_sum(tf.square(layer(x, training=training)))
            return tape.gradient(objective, [x] + layer.trainable_variables)

        variants = {"graph": tf.function(forward_backward), "xla": tf.function(forward_backward, jit_compile=True)}
        for fn in variants.values():   # trace / compile
            fn(x)
        times = {k: [] for k in variants}
        for _ in range(args.rounds):
            for k, fn in variants.items():
                start = time.perf_counter()
                [g.numpy() for g in fn(x)]
                times[k].append(time.perf_counter() - start)
        graph_ms, xla_ms = (1e3 * statistics.median(times[k]) for k in ("graph", "xla"))
        print(f"| {name} | {graph_ms:.1f} | {xla_ms:.1f} | {xla_ms / graph_ms:.2f}x |")


if __name__ == "__main__":
    main()
