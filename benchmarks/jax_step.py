"""Training images/s of each backbone on Keras' JAX backend: the figures for a GPU machine.

Why JAX: the GPU machines this project borrows have JAX and PyTorch but no TensorFlow, and
``models/`` and ``losses/`` are pure Keras 3, so the same backbone and head train there unchanged
(docs/DESIGN.md). The model, head, SGD and weight decay are train.py's own
(``training.state.build_training_state`` from a ``TrainConfig``; its optimizer adds the weight
decay, ``training.state.ReferenceSGD``); only the step around them is JAX's: ``stateless_call`` for
the forward pass, ``jax.value_and_grad``, ``optimizer.stateless_apply``, all in one ``jax.jit``.

One fixed random batch stays on the device (the input pipeline is not timed). Every variant
(backbone x precision x batch size) is built and compiled first (the compile time is printed),
then timed in rounds, round-robin, so drift hits every variant alike: each round runs --steps
steps back to back (dispatch is asynchronous, as in training) and waits for the last one. The
table gives the median round's ms/step and images/s, the achieved TFLOP/s (a training step = 3 x
the backbone's forward FLOPs, ``models.count_forward_flops``) and each row's first and last loss.
"fp32" means float32 variables and activations at JAX's default matmul precision, which on an
NVIDIA GPU since Ampere lets XLA run convolutions on TF32 tensor cores (the H200's fp32 rows exceed
its 67 TFLOP/s non-tensor fp32 peak); ``JAX_DEFAULT_MATMUL_PRECISION=highest`` gives strict fp32.

    KERAS_BACKEND=jax python -m benchmarks.jax_step --output benchmarks/results/jax_step_gpu
    KERAS_BACKEND=jax python -m benchmarks.jax_step --quick     # sanity run on any machine (CPU too)
"""

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from fileio import parse_image_size, write_json_atomic, write_text_atomic

# No float16: train.py pairs it with loss scaling (keras LossScaleOptimizer), whose dynamic scale is
# optimizer state this step would have to thread through scale_loss; bfloat16 needs none.
PRECISIONS = ("off", "bfloat16")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="mobilefacenet,resface20,resface36,lresnet50e_ir",
                        help="comma-separated names (default: all four)")
    parser.add_argument("--batch-sizes", default="64,512",
                        help="comma-separated images per step (default 64,512: train.py's default and a "
                             "batch that fills a large GPU)")
    parser.add_argument("--precisions", default="off,bfloat16",
                        help="comma-separated --mixed-precision values: off (fp32), bfloat16 "
                             "(default both; the head and loss stay float32 in all)")
    parser.add_argument("--image-size", default="112x96", help="HEIGHTxWIDTH (default 112x96)")
    parser.add_argument("--embedding-size", type=int, default=512, help="default 512")
    parser.add_argument("--num-classes", type=int, default=10572,
                        help="AM-Softmax classes (default 10572, CASIA-WebFace's identities)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round (default 20)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant (default 5)")
    parser.add_argument("--lr", type=float, default=0.01, help="constant SGD lr (default 0.01)")
    parser.add_argument("--output", type=Path,
                        help="the experiment's folder (e.g. benchmarks/results/jax_step_gpu): also write "
                             "OUTPUT/results.json (every round) and OUTPUT/results.md (the table)")
    parser.add_argument("--quick", action="store_true",
                        help="sanity run: mobilefacenet, batch 8, fp32 and bfloat16, 100 classes, 2 rounds of 2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.backbones, args.batch_sizes, args.num_classes = "mobilefacenet", "8", 100
        args.steps, args.rounds = 2, 2
    args.backbones = [n.strip() for n in args.backbones.split(",") if n.strip()]
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batch-sizes: comma-separated integers, got {args.batch_sizes!r}")
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in args.precisions if p not in PRECISIONS]
    if bad or not args.precisions:
        parser.error(f"--precisions: {bad or 'none given'}; valid: {', '.join(PRECISIONS)}")
    if not args.batch_sizes or min(args.batch_sizes) < 1 or args.steps < 1 or args.rounds < 1:
        parser.error("--batch-sizes, --steps and --rounds must be positive")
    try:
        args.image_size = parse_image_size(args.image_size)
    except ValueError as error:
        parser.error(f"--image-size: {error}")
    return args


def make_jax_train_step(state, config):
    """One jitted SGD step on train.py's state: (values, images [B, H, W, 3] in [0, 255], labels [B])
    -> (new values, mean loss). ``values`` = (trainable, non-trainable, optimizer variables), as
    returned by ``initial_values``; the loss, weight decay and update are train.py's."""
    import jax

    from losses.loss import margin_softmax_loss
    model, head, optimizer = state.model, state.head, state.optimizer
    if head.non_trainable_variables:   # the step below threads no head state (SphereFace's λ, moving averages)
        raise ValueError(f"benchmarks/jax_step.py times heads without state; --loss {config.loss} has "
                         f"{[v.name for v in head.non_trainable_variables]}: use am_softmax, cosface or arcface")
    num_model = len(model.trainable_variables)

    def objective(trainable_values, non_trainable_values, images, labels):
        embeddings, non_trainable_values = model.stateless_call(
            trainable_values[:num_model], non_trainable_values, images, training=True)
        logits, _ = head.stateless_call(trainable_values[num_model:], [], embeddings, labels)
        loss = margin_softmax_loss(labels, logits, focal_gamma=config.focal) + head.auxiliary_loss(embeddings)
        # no L2 term: the optimizer's update adds wd·mult·w, as in train.py (training.state.ReferenceSGD)
        return loss, (loss, non_trainable_values)

    gradient = jax.value_and_grad(objective, has_aux=True)

    @jax.jit
    def step(values, images, labels):
        trainable_values, non_trainable_values, optimizer_values = values
        (_, (loss, non_trainable_values)), grads = gradient(trainable_values, non_trainable_values, images, labels)
        trainable_values, optimizer_values = optimizer.stateless_apply(optimizer_values, grads, trainable_values)
        return (trainable_values, non_trainable_values, optimizer_values), loss

    return step


def initial_values(state):
    """(trainable, non-trainable, optimizer) variable values of the state, as make_jax_train_step takes them."""
    trainable = state.model.trainable_variables + state.head.trainable_variables
    return ([v.value for v in trainable], [v.value for v in state.model.non_trainable_variables],
            [v.value for v in state.optimizer.variables])


class Variant:
    """One backbone x precision x batch size: its state, jitted step, device batch and timings."""

    def __init__(self, backbone, precision, batch_size, args, seed=0):
        import jax
        import keras
        import numpy as np

        import models
        from training.config import TrainConfig
        from training.state import build_training_state

        keras.utils.set_random_seed(seed)
        self.backbone, self.precision, self.batch_size = backbone, precision, batch_size
        self.config = TrainConfig(backbone=backbone, batch_size=batch_size, num_classes=args.num_classes,
                                  embedding_size=args.embedding_size, lr=args.lr, lr_schedule="constant",
                                  mixed_precision=precision,
                                  backbone_options=dict(models.TRAINING_OPTIONS.get(backbone, {})))
        self.state = build_training_state(self.config, args.num_classes, args.image_size, 30000)
        if [id(v) for v in self.state.model.trainable_variables] != [id(v) for v in self.state.backbone.trainable_variables]:
            raise RuntimeError("the embedding model's trainable variables are not the backbone's, in order")
        self.forward_flops = models.count_forward_flops(self.state.backbone)
        rng = np.random.default_rng(seed)
        self.images = jax.device_put(rng.uniform(0, 255, (batch_size, *args.image_size, 3)).astype("float32"))
        self.labels = jax.device_put(rng.integers(0, args.num_classes, batch_size).astype("int32"))
        self.step = make_jax_train_step(self.state, self.config)
        self.values = initial_values(self.state)
        started = time.perf_counter()
        self.values, loss = self.step(self.values, self.images, self.labels)
        self.first_loss = float(loss)           # waits for the step: compilation + one step
        self.compile_s = time.perf_counter() - started
        self.last_loss = self.first_loss
        self.round_ms = []                       # ms/step of each timed round

    def time_round(self, steps):
        started = time.perf_counter()
        for _ in range(steps):
            self.values, loss = self.step(self.values, self.images, self.labels)
        self.last_loss = float(loss)            # blocks until the last step is done
        self.round_ms.append((time.perf_counter() - started) * 1000.0 / steps)

    def row(self):
        ms = statistics.median(self.round_ms)
        images_per_s = self.batch_size / ms * 1000.0
        return {"backbone": self.backbone, "precision": "fp32" if self.precision == "off" else self.precision,
                "batch_size": self.batch_size, "ms_per_step": ms,
                "ms_spread": max(self.round_ms) - min(self.round_ms), "images_per_s": images_per_s,
                "tflops": 3 * self.forward_flops * images_per_s / 1e12, "forward_gflops_per_image": self.forward_flops / 1e9,
                "compile_s": self.compile_s, "first_loss": self.first_loss, "last_loss": self.last_loss,
                "round_ms": self.round_ms}


def describe_device():
    """The accelerator and software the figures came from, in one line."""
    import jax
    import keras

    device = jax.devices()[0]
    name = getattr(device, "device_kind", str(device))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if smi.returncode == 0 and smi.stdout.strip():
            name = smi.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return (f"{name} ({device.platform}); jax {jax.__version__}, keras {keras.__version__}, "
            f"python {platform.python_version()}")


def format_table(rows, device):
    lines = [f"Keras (JAX backend) training step, {device}. fp32 = float32 at JAX's default matmul "
             "precision (TF32 tensor cores on NVIDIA GPUs since Ampere); head and loss float32 in every row.",
             "", "| backbone | precision | batch | ms/step (spread) | images/s | TFLOP/s | compile s | loss first → last |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['precision']} | {r['batch_size']} | {r['ms_per_step']:.2f} "
                     f"({r['ms_spread']:.2f}) | {r['images_per_s']:,.0f} | {r['tflops']:.1f} | {r['compile_s']:.0f} "
                     f"| {r['first_loss']:.3f} → {r['last_loss']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    import models

    if keras.backend.backend() != "jax":
        sys.exit(f"benchmarks.jax_step: needs Keras' JAX backend, got {keras.backend.backend()!r}; "
                 "run it with KERAS_BACKEND=jax")
    unknown = [n for n in args.backbones if n not in models.BACKBONES]
    if unknown or not args.backbones:
        sys.exit(f"benchmarks.jax_step: --backbones: unknown {unknown}; valid: {', '.join(models.list_backbones())}")
    device = describe_device()
    print(device, flush=True)
    variants = []
    for backbone in args.backbones:
        for batch_size in args.batch_sizes:
            for precision in args.precisions:
                variant = Variant(backbone, precision, batch_size, args)
                print(f"built {backbone} {precision} batch {batch_size}: compiled and ran one step in "
                      f"{variant.compile_s:.1f} s, loss {variant.first_loss:.3f}", flush=True)
                variants.append(variant)
    for round_index in range(args.rounds):
        for variant in variants:
            variant.time_round(args.steps)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    rows = [v.row() for v in variants]
    table = format_table(rows, device)
    print(table)
    if args.output:
        command = "KERAS_BACKEND=jax python -m benchmarks.jax_step " + shlex.join(sys.argv[1:] if argv is None else argv)
        args.output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.output / "results.json", {"device": device, "command": command, "rows": rows})
        write_text_atomic(args.output / "results.md", f"{table}\n\nCommand: `{command}`\n")
        print(f"wrote {args.output / 'results.json'} and {args.output / 'results.md'}")
    return rows


if __name__ == "__main__":
    main()
