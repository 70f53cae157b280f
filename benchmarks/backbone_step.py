"""Time train.py's own training step per backbone (benchmarks/real_step.py), fp32.

Each backbone is built by training.state.build_training_state as train.py builds it (its default
training options, e.g. ResFace with batch norm; --published for the papers' networks) with a
512-d embedding, AM-Softmax over --num-classes classes and SGD (momentum 0.9), and stepped by
training.trainer.make_train_step on one fixed random batch (the data pipeline is not timed). After --warmup steps (tracing / XLA compilation), --steps steps
are timed one by one; the table gives the median ms/step, images/s and the achieved GFLOP/s,
counting a training step as 3 x the backbone's forward FLOPs (forward + two backward convs).

Run it alone on the machine:
    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.backbone_step --xla both
"""

import argparse
import os
import platform
import statistics
import sys
import time

from fileio.images import parse_image_size


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="mobilefacenet,resface20,resface36,lresnet50e_ir",
                        help="comma-separated names (default: all four)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--image-size", default="112x96", help="HEIGHTxWIDTH (default 112x96)")
    parser.add_argument("--embedding-size", type=int, default=512, help="default 512")
    parser.add_argument("--num-classes", type=int, default=1000, help="AM-Softmax classes (default 1000)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per backbone (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--xla", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                        help="XLA jit_compile: off (default), on (bare --xla), or both side by side")
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


def time_backbone(name, args, jit_compile):
    import numpy as np
    from tqdm import tqdm

    import models
    from benchmarks.real_step import make_real_step

    step = make_real_step(name, args.batch_size, args.image_size, args.num_classes, xla=jit_compile,
                          backbone_options={} if args.published else None, seed=args.seed)
    times, loss = [], None
    label = f"{name} xla={'on' if jit_compile else 'off'}"
    for i in tqdm(range(args.warmup + args.steps), desc=label, file=sys.stderr, leave=False):
        start = time.perf_counter()
        loss = step.run()  # a Python float: synchronised
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if not np.isfinite(loss):
        raise RuntimeError(f"{label}: loss became {loss}")
    ms = 1000 * statistics.median(times)
    backbone = step.state.backbone
    flops = models.count_forward_flops(backbone)
    return {
        "backbone": name, "xla": "on" if jit_compile else "off", "params_m": backbone.count_params() / 1e6,
        "gflop_fwd": flops / 1e9, "ms": ms, "ms_min": 1000 * min(times), "ms_max": 1000 * max(times),
        "img_s": args.batch_size / (ms / 1000), "gflop_s": 3 * flops * args.batch_size / (ms / 1000) / 1e9,
    }


def main(argv=None):
    args = parse_args(argv)
    import keras

    modes = {"off": [False], "on": [True], "both": [False, True]}[args.xla]
    h, w = args.image_size
    print(f"# backbone training step: batch {args.batch_size}, {h}x{w}, fp32, {args.embedding_size}-d, "
          f"AM-Softmax {args.num_classes} classes, SGD momentum 0.9, "
          f"{'published networks' if args.published else 'train.py default options'}; {args.warmup} warm-up + "
          f"{args.steps} timed steps")
    print(f"# keras {keras.__version__} backend {keras.backend.backend()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# command: python -m benchmarks.backbone_step {' '.join(sys.argv[1:])}")
    rows = []
    for name in args.backbones:
        for jit in modes:
            rows.append(time_backbone(name, args, jit))
            keras.backend.clear_session()
    print("| backbone | XLA | params (M) | fwd GFLOP/img | ms/step (median) | min-max ms | images/s | GFLOP/s (3x fwd) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backbone']} | {r['xla']} | {r['params_m']:.2f} | {r['gflop_fwd']:.2f} | {r['ms']:.0f} | "
              f"{r['ms_min']:.0f}-{r['ms_max']:.0f} | {r['img_s']:.1f} | {r['gflop_s']:.1f} |")
    if len(modes) == 2:
        for name in args.backbones:
            off, on = (next(r for r in rows if r["backbone"] == name and r["xla"] == x) for x in ("off", "on"))
            print(f"# {name}: XLA speed-up {off['ms'] / on['ms']:.2f}x")


if __name__ == "__main__":
    main()
