"""Time train.py's own training step per backbone (benchmarks/real_step.py), variants side by side.

Each backbone is built by training.state.build_training_state as train.py builds it (its default
training options, e.g. ResFace with batch norm; --published for the papers' networks) with a
512-d embedding, AM-Softmax over --num-classes classes and SGD (momentum 0.9), and stepped by
training.trainer.make_train_step on one fixed random batch (the data pipeline is not timed).

Variants per backbone: XLA off/on (--xla), precisions (--precisions off,bfloat16) and, with
--stock-layers, Keras' own BatchNormalization/PReLU instead of models/layers.py's fused ones, and with
--autodiff-prelu, PReLU trained through the select's autodiff instead of its XLA kernels. All
variants of a backbone are built first, warmed up (tracing / XLA compilation, not timed), then
timed round-robin one step at a time, so machine drift hits every variant alike. The table gives
the median ms/step, images/s, the achieved GFLOP/s (a training step = 3 x the backbone's forward
FLOPs) and each variant's speed relative to the first one (fp32, fused layers, no XLA).

Run it alone on the machine:
    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.backbone_step --batch-size 64 \\
        --xla both --precisions off,bfloat16 --stock-layers
"""

import argparse
import itertools
import statistics
import sys
import time

from fileio.images import parse_image_size

PRECISIONS = ("off", "float16", "bfloat16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="mobilefacenet,resface20,resface36,lresnet50e_ir",
                        help="comma-separated names (default: all four)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--image-size", default="112x96", help="HEIGHTxWIDTH (default 112x96)")
    parser.add_argument("--embedding-size", type=int, default=512, help="default 512")
    parser.add_argument("--num-classes", type=int, default=1000, help="AM-Softmax classes (default 1000)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--xla", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                        help="XLA jit_compile: off (default), on (bare --xla), or both side by side")
    parser.add_argument("--precisions", default="off",
                        help="comma-separated --mixed-precision values to compare: off, float16, bfloat16 "
                             "(default off = fp32)")
    parser.add_argument("--stock-layers", action="store_true",
                        help="add a variant with Keras' own BatchNormalization and PReLU (fp32, no XLA)")
    parser.add_argument("--autodiff-prelu", action="store_true",
                        help="add a variant whose PReLU trains through the select's autodiff, without "
                             "models/layers.py's XLA kernels (fp32, no XLA)")
    parser.add_argument("--published", action="store_true",
                        help="the papers' networks (backbone options {}), not train.py's defaults")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()   # before TensorFlow loads (models imports Keras): keeps its C++ lines out of the table
    import models

    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    unknown = [n for n in names if n not in models.BACKBONES]
    if unknown or not names:
        parser.error(f"--backbones: unknown {unknown}; valid: {', '.join(models.list_backbones())}")
    args.backbones = names
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not args.precisions or any(p not in PRECISIONS for p in args.precisions):
        parser.error(f"--precisions {args.precisions}: choose from {', '.join(PRECISIONS)}")
    try:
        args.image_size = parse_image_size(args.image_size)
    except ValueError as error:
        parser.error(f"--image-size: {error}")
    for flag in ("batch_size", "steps", "embedding_size", "num_classes"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step traces and compiles)")
    return args


def variants(args):
    """[(label, make_real_step keywords)]: fp32 fused without XLA first (the reference)."""
    xla_modes = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    rows = []
    for precision, xla in itertools.product(args.precisions, xla_modes):
        rows.append((f"{'fp32' if precision == 'off' else precision}{' +XLA' if xla else ''}",
                     {"mixed_precision": precision, "xla": xla}))
    if args.stock_layers:
        rows.append(("fp32, stock BN/PReLU", {"mixed_precision": "off", "xla": False, "stock_layers": True}))
    if args.autodiff_prelu:
        rows.append(("fp32, PReLU by autodiff", {"mixed_precision": "off", "xla": False, "autodiff_prelu": True}))
    return rows


def time_backbone(name, args):
    """Build every variant of `name`, warm each up, time them round-robin. -> [row dict]."""
    import numpy as np
    from tqdm import tqdm

    import models
    from benchmarks.real_step import make_real_step

    steps, rows = {}, variants(args)
    for label, options in rows:
        steps[label] = make_real_step(name, args.batch_size, args.image_size, args.num_classes,
                                      backbone_options={} if args.published else None, seed=args.seed, **options)
        for _ in range(args.warmup):
            steps[label].run()
    times = {label: [] for label, _ in rows}
    losses = {}
    for _ in tqdm(range(args.steps), desc=name, file=sys.stderr, leave=False):
        for label, _ in rows:
            start = time.perf_counter()
            losses[label] = steps[label].run()  # a Python float: synchronised
            times[label].append(time.perf_counter() - start)
    backbone = steps[rows[0][0]].state.backbone
    flops = models.count_forward_flops(backbone)
    reference_ms = 1000 * statistics.median(times[rows[0][0]])
    out = []
    for label, _ in rows:
        if not np.isfinite(losses[label]):
            raise RuntimeError(f"{name} {label}: loss became {losses[label]}")
        ms = 1000 * statistics.median(times[label])
        out.append({"backbone": name, "variant": label, "params_m": backbone.count_params() / 1e6,
                    "gflop_fwd": flops / 1e9, "ms": ms, "ms_min": 1000 * min(times[label]),
                    "ms_max": 1000 * max(times[label]), "img_s": args.batch_size / (ms / 1000),
                    "gflop_s": 3 * flops * args.batch_size / (ms / 1000) / 1e9, "relative": reference_ms / ms})
    return out


def main(argv=None):
    args = parse_args(argv)
    import keras

    from training.hardware import cpu_description

    h, w = args.image_size
    print(f"# backbone training step: batch {args.batch_size}, {h}x{w}, {args.embedding_size}-d, "
          f"AM-Softmax {args.num_classes} classes, SGD momentum 0.9, "
          f"{'published networks' if args.published else 'train.py default options'}; {args.warmup} warm-up + "
          f"{args.steps} timed steps per variant, round-robin")
    print(f"# CPU: {cpu_description()}; keras {keras.__version__} backend {keras.backend.backend()}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# command: python -m benchmarks.backbone_step {' '.join(sys.argv[1:] if argv is None else argv)}")
    rows = []
    for name in args.backbones:
        rows += time_backbone(name, args)
        keras.backend.clear_session()
    print("| backbone | variant | params (M) | fwd GFLOP/img | ms/step (median) | min-max ms | images/s | "
          "GFLOP/s (3x fwd) | vs first |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backbone']} | {r['variant']} | {r['params_m']:.2f} | {r['gflop_fwd']:.2f} | {r['ms']:.0f} | "
              f"{r['ms_min']:.0f}-{r['ms_max']:.0f} | {r['img_s']:.1f} | {r['gflop_s']:.1f} | {r['relative']:.2f}x |")


if __name__ == "__main__":
    main()
