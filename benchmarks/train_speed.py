"""Training images/s: our TensorFlow step (with and without XLA) side by side with an equivalent
PyTorch step, per backbone, at batch 64, fp32, on this CPU.

TF rows run the real training step, training.trainer.make_train_step (default strategy, SGD
momentum 0.9 at a constant --lr through the trainer's schedule class, weight decay 1/2*wd*sum(w^2)
on kernels, AM-Softmax s=30 m=0.35 over --num-classes classes, margin_softmax_loss, accuracy), fed
one repeated random batch through tf.data (the input pipeline is not what is timed). PyTorch rows run the twins in
benchmarks/torch_models.py (same layers and parameter counts, printed side by side) with the same
head, loss and accuracy, and SGD(momentum=0.9, weight_decay=5e-4) on the same parameter split.

Each framework runs in its own worker process (TF in the project's .venv, PyTorch in
.venv-bench, see benchmarks/README.md); this script starts them and asks for one step at a time,
round-robin over the rows, so machine drift hits every row alike. Each worker times its own steps
(step call to the loss on the host). Warm-up steps (tracing, XLA / torch.compile compilation) are
not timed; ms/step is the median of the timed steps.

FLOPs: models.count_forward_flops (2 per multiply-add, convs + dense) of the backbone, x3 for a
training step (forward, input gradient, weight gradient); the head's 1 MFLOP is left out.

    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.train_speed            # the table
    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.train_speed --quick    # sanity run
    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.train_speed --profile  # + knobs, per-op
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fileio import parse_image_size

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TORCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
TWINS = ("resface20", "mobilefacenet", "lresnet50e_ir")

# Rows of the main table: (label, worker, mode).
TF_ROWS = [("TF graph (tf.function)", "tf", "graph"), ("TF + XLA (jit_compile)", "tf", "xla"),
           # Keras' own BatchNormalization/PReLU: what models/layers.py's fused ones gain, side by side.
           ("TF graph, stock BN/PReLU", "tf", "stock")]
TORCH_ROWS = [("PyTorch eager", "torch", "eager"), ("PyTorch torch.compile", "torch", "compile")]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="mobilefacenet,resface20,lresnet50e_ir",
                        help="comma-separated, from: " + ", ".join(TWINS) + " (default: all three)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    parser.add_argument("--image-size", default="112x96", help="HEIGHTxWIDTH (default 112x96)")
    parser.add_argument("--num-classes", type=int, default=1000, help="AM-Softmax classes (default 1000)")
    parser.add_argument("--lr", type=float, default=0.01,
                        help="constant SGD learning rate of both frameworks (default 0.01: at the trainer's 0.1, "
                             "ResFace20 without BN collapses within a few steps on one repeated random batch)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per row first (default 3)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (default 5)")
    parser.add_argument("--tf-rows", default="graph,xla,stock",
                        help="TensorFlow rows to measure, comma-separated (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="sanity run: batch 8, 1 warm-up + 2 timed steps, no torch.compile")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-torch", action="store_true", help="TF rows only (no .venv-bench needed)")
    parser.add_argument("--torch-python", default=str(DEFAULT_TORCH_PYTHON),
                        help=f"interpreter with torch 2.13 (default {DEFAULT_TORCH_PYTHON})")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="fp32 peak of this machine for the %% column (default: cores x clock x FLOP/cycle "
                             "from /proc/cpuinfo, training.hardware.fp32_peak_gflops)")
    parser.add_argument("--profile", action="store_true",
                        help="after the table: TF knob sweep (oneDNN, threads, XLA CPU flags) against "
                             "a baseline worker, and per-op time breakdowns of one step (TF, PyTorch)")
    parser.add_argument("--profile-backbone", default="resface20", choices=TWINS,
                        help="backbone of the --profile knob sweep (default resface20)")
    parser.add_argument("--trace-backbones", default="resface20,mobilefacenet",
                        help="backbones of the --profile per-op breakdowns (default: both)")
    parser.add_argument("--profile-steps", type=int, default=3, help="timed steps per --profile row (default 3)")
    parser.add_argument("--skip-table", action="store_true", help="with --profile: only the profile")
    parser.add_argument("--skip-sweep", action="store_true", help="with --profile: only the per-op breakdowns")
    parser.add_argument("--worker", choices=["tf", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    if args.quick:
        args.batch_size, args.warmup, args.steps, args.no_compile = 8, 1, 2, True
        args.profile_steps = min(args.profile_steps, 2)
    args.tf_rows = [n.strip() for n in args.tf_rows.split(",") if n.strip()]
    if not args.tf_rows or set(args.tf_rows) - {row[2] for row in TF_ROWS}:
        parser.error(f"--tf-rows {','.join(args.tf_rows)}: choose from {','.join(row[2] for row in TF_ROWS)}")
    args.backbones = [n.strip() for n in args.backbones.split(",") if n.strip()]
    args.trace_backbones = [n.strip() for n in args.trace_backbones.split(",") if n.strip()]
    unknown = [n for n in args.backbones + args.trace_backbones if n not in TWINS]
    if unknown or not args.backbones:
        parser.error(f"--backbones {unknown or '(empty)'}: choose from {', '.join(TWINS)} "
                     "(the backbones with a PyTorch twin in benchmarks/torch_models.py)")
    try:
        args.image_size = parse_image_size(args.image_size)   # the models' rule: positive multiples of 16
    except ValueError as e:
        parser.error(f"--image-size: {e}")
    for name in ("batch_size", "steps", "num_classes", "profile_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1 (the first step traces/compiles)")
    if not args.no_torch and not Path(args.torch_python).is_file():
        parser.error(f"--torch-python {args.torch_python} not found. Create it with: python3 -m venv .venv-bench "
                     "&& .venv-bench/bin/pip install torch==2.13.0 numpy   (or pass --no-torch)")
    return args


# ----------------------------------------------------------------------------- workers
def _serve(handlers):
    """Worker loop: one JSON request per stdin line -> one JSON reply line on the original stdout.

    Library output printed to stdout would corrupt the protocol, so fd 1 is pointed at stderr.
    """
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = handlers[request.pop("cmd")](**request)
        except Exception as error:  # reported to the parent, which names the worker and stops
            import traceback
            result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        reply.write(json.dumps(result) + "\n")
        reply.flush()
        if request.get("quit"):
            break


def tf_worker():
    """TF side: builds the model with the project's code and runs training.trainer's step."""
    from fileio.quiet_tensorflow import quiet_tensorflow
    quiet_tensorflow()   # before TensorFlow loads: its C++ start-up lines stay out of the output
    import keras
    import numpy as np
    import tensorflow as tf

    import models
    from benchmarks.real_step import make_real_step

    state = {}

    def setup(backbone, batch_size, image_size, num_classes, modes, lr, intra=0, inter=0):
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        # train.py's own builder and step (benchmarks/real_step.py): what is timed is what trains.
        # backbone_options={}: the published networks, which the PyTorch twins reproduce.
        steps = {mode: make_real_step(backbone, batch_size, tuple(image_size), num_classes, lr=lr,
                                      xla=mode == "xla", stock_layers=mode == "stock", backbone_options={})
                 for mode in modes}
        state["steps"] = steps
        first = next(iter(steps.values())).state
        model, head = first.backbone, first.head
        params = lambda vs: int(sum(np.prod(v.shape) for v in vs))
        decayed = [v for v in model.trainable_variables if v.path.endswith("kernel")] + [head.kernel]
        return {"backbone_params": params(model.trainable_variables),
                # BN statistics; Dropout's random-seed state is not a model buffer.
                "backbone_buffers": params([v for v in model.non_trainable_variables if "seed_generator" not in v.path]),
                "head_params": params(head.trainable_variables), "decayed_params": params(decayed),
                "forward_flops": int(models.count_forward_flops(model)),
                "framework": f"tensorflow {tf.__version__}, keras {keras.__version__}",
                "threads": f"intra {tf.config.threading.get_intra_op_parallelism_threads()} "
                           f"inter {tf.config.threading.get_inter_op_parallelism_threads()} (0 = TF default)",
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(unset: on for x86)"),
                "xla_flags": os.environ.get("XLA_FLAGS", "")}

    def run(mode, steps):
        step = state["steps"][mode]
        times, step_losses = [], []
        for _ in range(steps):
            start = time.perf_counter()
            step_losses.append(step.run())  # a float: waits for the step
            times.append(time.perf_counter() - start)
        return {"times": times, "loss": step_losses[-1], "first_loss": step_losses[0]}

    def trace(mode, top=14):
        """Per-op host time of one step from a tf.profiler trace, summed by op type."""
        logdir = tempfile.mkdtemp(prefix="train_speed_trace_")
        tf.profiler.experimental.start(logdir)
        timed = run(mode, 1)
        tf.profiler.experimental.stop()
        ops = _xplane_op_totals(logdir, top)
        shutil.rmtree(logdir, ignore_errors=True)
        return {"ops": ops, "step_s": timed["times"][0]}

    def sgemm(size=3072, seconds=3.0):
        """Sustained fp32 matmul GFLOP/s on this machine: a measured ceiling for the %% column."""
        a = tf.random.normal((size, size))
        matmul = tf.function(lambda a: tf.matmul(a, a))
        matmul(a).numpy()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            matmul(a).numpy()
            count += 1
        return {"gflops": 2 * size ** 3 * count / (time.perf_counter() - start) / 1e9}

    _serve({"setup": setup, "run": run, "trace": trace, "sgemm": sgemm, "quit": lambda **_: {"bye": True}})


def _xplane_op_totals(logdir, top):
    """CPU time in the host plane of a tf.profiler trace, summed by op type.

    TF graph ops are events "node_name:OpType" on the executor threads; XLA CPU thunks are events
    named after their HLO instruction ("transpose_copy_fusion.56"), grouped by the part before the
    dot. The sum is CPU time over all threads, so it can exceed the step's wall time.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = {}
    for path in Path(logdir).rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            names = {key: meta.name for key, meta in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if " " in name or "::" in name or name.startswith("__inference"):
                        continue
                    if ":" in name:
                        kind = name.rsplit(":", 1)[1]
                    elif "." in name and name.rsplit(".", 1)[1].isdigit():
                        kind = "XLA " + name.rsplit(".", 1)[0]
                    else:
                        continue
                    totals[kind] = totals.get(kind, 0.0) + event.duration_ps * 1e-12
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    return [[kind, seconds] for kind, seconds in rows[:top]] + [["(all ops)", sum(totals.values())]]


def torch_worker():
    """PyTorch side: the twins of benchmarks/torch_models.py with the same head, loss and SGD."""
    import torch
    from torch.nn import functional as F

    from benchmarks import torch_models

    state = {}

    def setup(backbone, batch_size, image_size, num_classes, modes, lr, intra=0, inter=0):
        torch.manual_seed(0)
        model = torch_models.build(backbone, tuple(image_size))
        head = torch_models.AMSoftmaxHead(512, num_classes)
        decay, no_decay = torch_models.decayed_parameters(model, head)
        optimizer = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                                     {"params": no_decay, "weight_decay": 0.0}], lr=lr, momentum=0.9)
        generator = torch.Generator().manual_seed(0)
        images = (torch.rand(batch_size, 3, *image_size, generator=generator) * 255 - 127.5) / 128
        labels = torch.randint(0, num_classes, (batch_size,), generator=generator)

        def forward_loss(images, labels):
            logits, cos = head(model(images), labels)
            return F.cross_entropy(logits, labels), cos

        def make_step(fn):
            def step():
                optimizer.zero_grad(set_to_none=True)
                loss, cos = fn(images, labels)
                loss.backward()
                optimizer.step()
                correct = (cos.detach().argmax(1) == labels).sum()
                return loss.item(), int(correct)
            return step

        model.train()
        state["steps"] = {}
        for mode in modes:
            if mode == "eager":
                state["steps"][mode] = make_step(forward_loss)
            elif mode == "compile":
                state["steps"][mode] = make_step(torch.compile(forward_loss))
        return {"backbone_params": torch_models.count(model.parameters()),
                "backbone_buffers": torch_models.count_buffers(model),
                "head_params": torch_models.count(head.parameters()),
                "decayed_params": torch_models.count(decay),
                "framework": f"torch {torch.__version__}",
                "threads": f"intra {torch.get_num_threads()} inter {torch.get_num_interop_threads()}",
                "mkldnn": str(torch.backends.mkldnn.is_available())}

    def run(mode, steps):
        step = state["steps"][mode]
        times, step_losses = [], []
        for _ in range(steps):
            start = time.perf_counter()
            step_losses.append(step()[0])
            times.append(time.perf_counter() - start)
        return {"times": times, "loss": step_losses[-1], "first_loss": step_losses[0]}

    def trace(mode, top=14):
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            state["steps"][mode]()
            step_s = time.perf_counter() - start
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events) * 1e-6
        return {"ops": [[e.key, e.self_cpu_time_total * 1e-6] for e in events[:top]] + [["(all ops)", total]],
                "step_s": step_s}

    _serve({"setup": setup, "run": run, "trace": trace, "quit": lambda **_: {"bye": True}})


class Worker:
    """A worker process (``python -m benchmarks.train_speed --worker KIND`` from the repository root) spoken to one JSON line at a time."""

    def __init__(self, kind, python, name, env=None):
        self.name = name
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"train_speed_{kind}_", suffix=".log", delete=False)
        self.process = subprocess.Popen([python, "-m", "benchmarks.train_speed", "--worker", kind],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True, cwd=ROOT, env={**os.environ, **(env or {})})

    def request(self, cmd, **kwargs):
        self.process.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.log.flush()
            tail = Path(self.log.name).read_text()[-3000:]
            raise RuntimeError(f"worker {self.name!r} died (exit {self.process.wait()}); "
                               f"last lines of {self.log.name}:\n{tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"worker {self.name!r}: {reply['error']}\n{reply['traceback']}")
        return reply

    def alive(self):
        return self.process.poll() is None

    def close(self):
        if self.process.poll() is None:
            self.request("quit", quit=True)
            self.process.wait(timeout=60)
        self.log.close()
        os.unlink(self.log.name)


# ----------------------------------------------------------------------------- measurement
def measure(rows, workers, warmup, steps, desc):
    """Warm every row up, then time `steps` rounds of one step per row. -> {label: result}."""
    results = {}
    for label, worker, mode in list(rows):
        started = time.perf_counter()
        try:
            reply = workers[worker].request("run", mode=mode, steps=warmup)
        except RuntimeError as error:
            if not workers[worker].alive():
                raise
            print(f"  {desc}: {label}: FAILED, row dropped: {str(error).splitlines()[0]}", flush=True)
            rows.remove((label, worker, mode))
            continue
        results[label] = {"warmup_s": time.perf_counter() - started, "first_s": reply["times"][0], "times": [],
                          "first_loss": reply["first_loss"]}
        print(f"  {desc}: {label}: warm-up {warmup} steps in {results[label]['warmup_s']:.1f} s "
              f"(first {reply['times'][0]:.1f} s)", flush=True)
    for round_index in range(steps):
        for label, worker, mode in rows:
            reply = workers[worker].request("run", mode=mode, steps=1)
            results[label]["times"] += reply["times"]
            results[label]["loss"] = reply["loss"]
        print(f"  {desc}: round {round_index + 1}/{steps}: "
              + ", ".join(f"{label} {results[label]['times'][-1] * 1e3:.0f} ms" for label, _, _ in rows), flush=True)
    for result in results.values():
        result["ms"] = statistics.median(result["times"]) * 1e3
        result["spread"] = (max(result["times"]) - min(result["times"])) * 1e3
    return results


def setup_request(args, backbone, modes, **knobs):
    return {"backbone": backbone, "batch_size": args.batch_size, "image_size": list(args.image_size),
            "num_classes": args.num_classes, "modes": modes, "lr": args.lr, **knobs}


def main_table(args):
    lines = []
    for backbone in args.backbones:
        print(f"{backbone}: starting workers", flush=True)
        workers = {"tf": Worker("tf", sys.executable, f"tf/{backbone}")}
        rows = [row for row in TF_ROWS if row[2] in args.tf_rows]
        torch_modes = [] if args.no_torch else ["eager"] + ([] if args.no_compile else ["compile"])
        if torch_modes:
            workers["torch"] = Worker("torch", args.torch_python, f"torch/{backbone}")
            rows += [row for row in TORCH_ROWS if row[2] in torch_modes]
        try:
            info = {"tf": workers["tf"].request("setup", **setup_request(args, backbone, [r[2] for r in rows]))}
            if torch_modes:
                info["torch"] = workers["torch"].request("setup", **setup_request(args, backbone, torch_modes))
            print_params(backbone, info)
            results = measure(rows, workers, args.warmup, args.steps, backbone)
        finally:
            for worker in workers.values():
                worker.close()
        lines.append((backbone, info, rows, results))
    worker = Worker("tf", sys.executable, "tf/sgemm")
    try:
        sgemm = worker.request("sgemm")["gflops"]
    finally:
        worker.close()
    print_table(args, lines, sgemm)


def print_params(backbone, info):
    print(f"  parameter check ({backbone}):")
    keys = ("backbone_params", "backbone_buffers", "head_params", "decayed_params")
    print(f"    {'':10}" + "".join(f"{k:>18}" for k in keys) + "  threads / build")
    for side, values in info.items():
        print(f"    {side:10}" + "".join(f"{values[k]:>18,}" for k in keys)
              + f"  {values['threads']}; {values['framework']}")
    if "torch" in info:
        same = all(info["tf"][k] == info["torch"][k] for k in keys)
        print(f"    twins {'MATCH' if same else 'DIFFER'}: backbone parameters, BN statistics, head parameters "
              "and weight-decayed parameters")
        if not same:
            raise SystemExit("the PyTorch twin is not the same model: fix benchmarks/torch_models.py")


def print_table(args, lines, sgemm=None):
    from training.hardware import cpu_description, fp32_peak_gflops

    peak, how = (args.peak_gflops, "--peak-gflops") if args.peak_gflops else fp32_peak_gflops()
    peak = peak or float("nan")
    print(f"CPU: {cpu_description()}; fp32 peak {peak:.0f} GFLOP/s = {how}"
          + (f"; measured fp32 matmul (3072x3072, TF) {sgemm:.0f} GFLOP/s" if sgemm else ""))
    if sgemm and sgemm > peak:
        print("  (the matmul beats the nominal-clock peak: the cores boost above /proc/cpuinfo's clock; "
              "'% peak' is then against the measured matmul)")
        peak = sgemm
    print()
    print(f"Training step, batch {args.batch_size}, {args.image_size[0]}x{args.image_size[1]}, fp32, "
          f"AM-Softmax over {args.num_classes} classes; median of {args.steps} timed steps after {args.warmup} warm-up; "
          f"GFLOP/s = 3 x backbone forward FLOPs x images/s; peak {peak:.0f} GFLOP/s")
    header = (f"{'backbone':14} {'framework / mode':25} {'ms/step':>9} {'(spread)':>9} {'images/s':>9} "
              f"{'x PyTorch':>10} {'GFLOP/s':>8} {'% peak':>7} {'warm-up s':>10} {'loss first -> last':>19}")
    print(header)
    print("-" * len(header))
    for backbone, info, rows, results in lines:
        step_flops = 3 * info["tf"]["forward_flops"] * args.batch_size
        reference = results.get("PyTorch eager")
        for label, _, _ in rows:
            if label not in results:
                continue
            r = results[label]
            ips = args.batch_size / (r["ms"] / 1e3)
            ratio = f"{reference['ms'] / r['ms']:.2f}x" if reference else "-"
            gflops = step_flops / (r["ms"] / 1e3) / 1e9
            print(f"{backbone:14} {label:25} {r['ms']:9.0f} {r['spread']:9.0f} {ips:9.2f} {ratio:>10} "
                  f"{gflops:8.1f} {100 * gflops / peak:6.1f}% {r['warmup_s']:10.1f} {r['first_loss']:8.3f} -> {r['loss']:7.3f}")
        print(f"{'':14} (forward {info['tf']['forward_flops'] / 1e9:.3f} GFLOP/image, training step "
              f"3x = {step_flops / args.batch_size / 1e9:.2f} GFLOP/image)")
    print("GPU mixed precision: not measured (no GPU on this machine).")


# ----------------------------------------------------------------------------- profile
# Knob sweep rows: (label, env, setup knobs, modes). Each runs in its own worker (env and thread
# pools are fixed at process start) beside a baseline worker with the defaults, interleaved.
KNOBS = [
    ("oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)", {"TF_ENABLE_ONEDNN_OPTS": "0"}, {}, ["graph", "xla"]),
    ("intra 2, inter 1 threads", {}, {"intra": 2, "inter": 1}, ["graph", "xla"]),
    ("intra 1, inter 1 threads (1 core)", {}, {"intra": 1, "inter": 1}, ["graph", "xla"]),
    ("XLA_FLAGS=--xla_cpu_use_onednn=true", {"XLA_FLAGS": "--xla_cpu_use_onednn=true"}, {}, ["xla"]),
    ("XLA_FLAGS=--xla_cpu_use_xnnpack=true", {"XLA_FLAGS": "--xla_cpu_use_xnnpack=true"}, {}, ["xla"]),
]


def profile(args):
    if not args.skip_sweep:
        knob_sweep(args)
    for backbone in args.trace_backbones:
        trace_ops(args, backbone)


def knob_sweep(args):
    backbone = args.profile_backbone
    steps = args.profile_steps
    print(f"\nPROFILE {backbone}, batch {args.batch_size}: knob sweep, each variant interleaved with a "
          f"baseline worker (defaults), {steps} timed steps each after 1 warm-up", flush=True)
    base = Worker("tf", sys.executable, "tf/baseline")
    sweep = []
    try:
        base_info = base.request("setup", **setup_request(args, backbone, ["graph", "xla"]))
        print(f"  baseline: threads {base_info['threads']}, oneDNN {base_info['onednn']}")
        for label, env, knobs, modes in KNOBS:
            variant = Worker("tf", sys.executable, f"tf/{label}", env=env)
            try:
                variant.request("setup", **setup_request(args, backbone, modes, **knobs))
                rows = []
                for mode in modes:
                    rows += [(f"baseline {mode}", "base", mode), (f"{label} {mode}", "variant", mode)]
                results = measure(rows, {"base": base, "variant": variant}, 1, steps, label)
            except RuntimeError as error:
                print(f"  {label}: FAILED: {str(error).splitlines()[0]}")
                continue
            finally:
                variant.close()
            for mode in modes:
                if f"{label} {mode}" not in results:
                    continue
                b, v = results[f"baseline {mode}"], results[f"{label} {mode}"]
                sweep.append((label, mode, b["ms"], v["ms"]))
        print(f"\nKnob sweep ({backbone}, batch {args.batch_size}; ratio = baseline ms / variant ms, >1 is faster):")
        print(f"  {'variant':42} {'mode':6} {'baseline ms':>12} {'variant ms':>11} {'speed-up':>9}")
        for label, mode, b, v in sweep:
            print(f"  {label:42} {mode:6} {b:12.0f} {v:11.0f} {b / v:8.2f}x")
    finally:
        base.close()


def trace_ops(args, backbone):
    """Per-op CPU time of one step: TF graph and XLA (tf.profiler), PyTorch eager (torch.profiler).

    The TF worker runs with XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true so that XLA's CPU
    runtime annotates each HLO instruction (convolutions included) in the trace.
    """
    print(f"\nPer-op CPU time of one {backbone} step, batch {args.batch_size}, by op type "
          "(top 14; % of all ops' CPU time, summed over threads)", flush=True)
    worker = Worker("tf", sys.executable, "tf/trace", env={"XLA_FLAGS": "--xla_cpu_enable_xprof_traceme=true"})
    try:
        worker.request("setup", **setup_request(args, backbone, ["graph", "xla"]))
        for mode in ("graph", "xla"):
            worker.request("run", mode=mode, steps=1)
            _print_ops(f"TF {mode}", worker.request("trace", mode=mode))
    finally:
        worker.close()
    if not args.no_torch:
        worker = Worker("torch", args.torch_python, "torch/trace")
        try:
            worker.request("setup", **setup_request(args, backbone, ["eager"]))
            worker.request("run", mode="eager", steps=1)
            _print_ops("PyTorch eager (self CPU time)", worker.request("trace", mode="eager"))
        finally:
            worker.close()


def _print_ops(title, reply):
    """Top ops by CPU time, as ms and as a share of all ops' CPU time in the step."""
    *ops, (_, total) = reply["ops"]
    print(f"  {title}: step wall time {reply['step_s'] * 1e3:.0f} ms (traced), ops' CPU time {total * 1e3:.0f} ms")
    for name, seconds in ops:
        print(f"    {name[:48]:48} {seconds * 1e3:9.0f} ms {100 * seconds / total:6.1f}%")


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "tf":
        return tf_worker()
    if args.worker == "torch":
        return torch_worker()
    print(f"train_speed: backbones {', '.join(args.backbones)}; batch {args.batch_size}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per row; {time.strftime('%Y-%m-%d %H:%M:%S')}",
          flush=True)
    if not args.skip_table:
        main_table(args)
    if args.profile:
        profile(args)


if __name__ == "__main__":
    main()
