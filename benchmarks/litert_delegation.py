"""Which layers LiteRT's XNNPACK delegate runs, in float32 and in full-integer int8, and what each costs.

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.litert_delegation

Why litert-int8 is the slowest export on x86 (docs/using-a-model.md, "Export formats"): each layer kind
of MobileFaceNet is converted alone, at the size of the network's first stage ([1, 56, 48, 64]: the
112x96 crop after its stride-2 convolution), to float32 and to int8 by export.py's own converter
(engines.litert_export.convert_litert: TFLITE_BUILTINS_INT8, float input and output; calibrated here on
random inputs), and loaded in the ``ai-edge-litert`` interpreter. "Delegated" means the model has a DELEGATE node: XNNPACK took some of it,
perhaps only the int8 model's quantise and dequantise; the time says whether the layer itself ran fast.
Printed: per layer and precision, delegated or not, and the median time of one call (--runs calls,
--threads threads); for each --tflite file, its number of XNNPACK partitions (one per run of consecutive
ops XNNPACK took; more partitions mean more hand-overs to LiteRT's built-in kernels).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

SHAPE = (56, 48, 64)   # MobileFaceNet's first stage: 112x96 after the stride-2 convolution, 64 channels


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="timed calls per model (default 200)")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    parser.add_argument("--output", help="also write the table here (e.g. benchmarks/results/NAME/output.txt)")
    parser.add_argument("--tflite", nargs="*", default=[], metavar="FILE",
                        help="also list, for each exported .tflite file (export.py --format litert...), its XNNPACK "
                             "partitions (DELEGATE nodes) and the ops the file holds")
    return parser


def layers():
    """{name: () -> a fresh Keras layer} for the layer kinds MobileFaceNet is made of."""
    import keras

    return {
        "conv 1x1": lambda: keras.layers.Conv2D(SHAPE[-1], 1),
        "conv 3x3": lambda: keras.layers.Conv2D(SHAPE[-1], 3, padding="same"),
        "depthwise 3x3": lambda: keras.layers.DepthwiseConv2D(3, padding="same"),
        "prelu (per channel)": lambda: keras.layers.PReLU(shared_axes=[1, 2]),
        "relu": lambda: keras.layers.ReLU(),
    }


def convert(layer, int8: bool) -> bytes:
    """The .tflite bytes of ``layer`` alone at SHAPE, through the exporter itself (engines.litert_export);
    int8 calibrated on 20 uniform [-1, 1) inputs."""
    import keras
    import numpy as np

    from engines.litert_export import convert_litert

    inputs = keras.Input(SHAPE, batch_size=1)
    model = keras.Model(inputs, layer(inputs))
    if not int8:
        return convert_litert(model, "litert")
    return convert_litert(model, "litert-int8", calibration=np.random.default_rng(0).uniform(-1, 1, (20, *SHAPE)))


def measure(model: bytes, threads: int, runs: int) -> dict:
    """{"delegated": bool, "partitions": DELEGATE nodes, "ops": {op of the model (delegated or not): count},
    "ms": median ms of one call}."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=threads)
    interpreter.allocate_tensors()
    ops = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    partitions = ops.pop("DELEGATE", 0)
    return {"delegated": partitions > 0, "partitions": partitions, "ops": dict(ops),
            "ms": 1000 * float(np.median(times))}


def main(argv=None):
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from benchmarks.recordio_import import cpu_model
    from fileio import write_text_atomic

    lines = [f"LiteRT XNNPACK delegation per layer, input [1, {', '.join(map(str, SHAPE))}], {args.threads} threads, "
             f"median of {args.runs} calls; CPU: {cpu_model()}", "",
             "| layer | float32: delegated | float32 ms | int8: delegated | int8 ms | int8 / float32 |",
             "|---|---|---:|---|---:|---:|"]
    for name, make in layers().items():
        f32, i8 = (measure(convert(make(), int8), args.threads, args.runs) for int8 in (False, True))
        lines.append(f"| {name} | {'yes' if f32['delegated'] else 'no'} | {f32['ms']:.3f} | "
                     f"{'yes' if i8['delegated'] else 'no'} | {i8['ms']:.3f} | {i8['ms'] / f32['ms']:.2f}× |")
        print(lines[-1], flush=True)
    for path in args.tflite:
        found = measure(Path(path).read_bytes(), args.threads, args.runs)
        left = ", ".join(f"{op} {n}" for op, n in sorted(found["ops"].items(), key=lambda kv: -kv[1]))
        lines += ["", f"{path}: {found['partitions']} XNNPACK partitions; ops in the file: {left or 'none'}; "
                      f"{found['ms']:.2f} ms per call (its own batch size)"]
        print(lines[-1], flush=True)
    if args.output:
        write_text_atomic(args.output, "\n".join(lines) + "\n")
    print("\n".join(lines[:1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
