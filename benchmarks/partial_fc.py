"""Partial FC against the full head: the head's step time and peak memory at 10^5–10^7 classes, and
train.py's whole MobileFaceNet step at 10^6 classes against a 10^4-class step.

Head rows: one fixed batch of random embeddings [B, D] (a variable, so its gradient is computed as the
backbone's would be) through the head's training computation: for the full head, the margin logits
over all C centres, the loss with weight decay and Keras SGD's momentum update of the dense [D, C]
kernel, as training/trainer.py does; for Partial FC, training/partial_fc.py's sample, the sampled
logits and the sparse update. Step rows: benchmarks/real_step.py (train.py's own step).

Each case runs in its own process, so its peak resident memory (ru_maxrss) is its own; a case whose
estimated memory exceeds --memory-limit-gb is not run and says so. Run it alone on the machine:
    flock /tmp/cpu-heavy.lock .venv/bin/python -m benchmarks.partial_fc
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time

# (classes, embedding size): the sizes; 10^7 at 128-d (at 512-d the centres alone are 20 GB).
HEAD_CASES = ((10**5, 512), (10**6, 512), (10**7, 128))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128, help="default 128")
    parser.add_argument("--rate", type=float, default=0.1, help="Partial FC sample rate (default 0.1)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case, after 2 untimed (default 5)")
    parser.add_argument("--cases", default=",".join(f"{c}x{d}" for c, d in HEAD_CASES),
                        help="head cases CLASSESxDIM, comma-separated (default: %(default)s)")
    parser.add_argument("--step-classes", type=int, default=10**6,
                        help="classes of the whole-step comparison against 10^4 (0 = skip; default 10^6)")
    parser.add_argument("--image-size", default="112x96", help="whole-step input HxW (default 112x96)")
    parser.add_argument("--memory-limit-gb", type=float, default=20.0,
                        help="cases estimated above this are reported, not run (default 20 of this 24 GB machine)")
    parser.add_argument("--output", help="also write the rows as JSON here")
    parser.add_argument("--case", nargs=5, metavar=("KIND", "CLASSES", "DIM", "RATE", "BATCH"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def estimated_gb(kind, classes, dim, rate, batch):
    """Memory the case needs, float32 GB: centres + momentum (+ the full head's dense gradient), and
    three [B, K] tensors (logits, softmax, their gradient)."""
    columns = classes if rate >= 1 else max(int(rate * classes), batch)
    dense = 3 if rate >= 1 else 2
    return 4e-9 * (dense * classes * dim + 3 * batch * columns + (0 if rate >= 1 else 2 * columns * dim))


def run_head_case(classes, dim, rate, batch, steps):
    """Median seconds of one head step (forward, backward, update)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from losses.heads import build_head
    from losses.loss import margin_softmax_loss
    from losses.partial_fc import build_partial_fc_head, partial_fc_num_sample
    from training.partial_fc import fill_initial_centres, gather_centres, sample_centres, sparse_sgd_update

    rng = np.random.default_rng(0)
    embeddings = tf.Variable(rng.normal(size=(batch, dim)).astype("float32"))
    labels = tf.constant(rng.integers(0, classes, batch).astype("int32"))
    weight_decay, lr, momentum = 5e-4, 0.1, 0.9
    if rate >= 1:
        head = build_head("am_softmax", classes)
        head.build((None, dim))
        optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
        optimizer.build([head.kernel])

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = margin_softmax_loss(labels, head(embeddings, labels))
                objective = loss + 0.5 * weight_decay * tf.reduce_sum(tf.square(head.kernel))
            grad_x, grad_w = tape.gradient(objective, [embeddings, head.kernel])
            optimizer.apply_gradients([(grad_w, head.kernel)])
            return loss + 0.0 * tf.reduce_sum(grad_x)
    else:
        head = build_partial_fc_head("am_softmax", classes, rate, draw_centres=False)   # as training/state.py
        head.build((None, dim))
        fill_initial_centres(head.kernel.value, head)
        num_sample = partial_fc_num_sample(classes, rate, batch)
        counter = tf.Variable(0, dtype=tf.int64)

        @tf.function
        def step():
            index, local = sample_centres(labels, classes, num_sample, 0, counter)
            centres = gather_centres(head, index)
            with tf.GradientTape() as tape:
                tape.watch(centres)
                loss = margin_softmax_loss(local, head.sampled_logits(embeddings, centres, local))
            grad_x, grad_rows = tape.gradient(loss, [embeddings, centres])
            sparse_sgd_update(head, index, grad_rows, lr, momentum, weight_decay)
            counter.assign_add(1)
            return loss + 0.0 * tf.reduce_sum(grad_x)

    return _median_seconds(step, steps)


def run_step_case(classes, rate, batch, steps, image_size):
    from benchmarks.real_step import make_real_step
    from fileio.images import parse_image_size

    real = make_real_step("mobilefacenet", batch, parse_image_size(image_size), classes,
                          partial_fc=None if rate >= 1 else rate)
    return _median_seconds(real.run, steps)


def _median_seconds(step, steps):
    for _ in range(2):
        float(step())
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        float(step())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_case(kind, classes, dim, rate, batch, steps, image_size):
    """Child process: run one case and print its row as JSON (peak resident memory of the process,
    building the head included)."""
    import resource

    if kind == "head":
        seconds = run_head_case(classes, dim, rate, batch, steps)
    else:
        seconds = run_step_case(classes, rate, batch, steps, image_size)
    print("ROW" + json.dumps({"kind": kind, "classes": classes, "dim": dim, "rate": rate, "batch": batch,
                              "ms": 1000 * seconds,
                              "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}))


def main(argv=None):
    args = parse_args(argv)
    if args.case:
        kind, classes, dim, rate, batch = args.case
        return one_case(kind, int(classes), int(dim), float(rate), int(batch), args.steps, args.image_size)
    from training.hardware import cpu_description

    plan = []
    for case in args.cases.split(","):
        classes, dim = (int(float(v)) for v in case.split("x"))
        plan += [("head", classes, dim, 1.0), ("head", classes, dim, args.rate)]
    if args.step_classes:
        plan += [("step", 10**4, 512, 1.0), ("step", args.step_classes, 512, args.rate)]
    rows = []
    for kind, classes, dim, rate in plan:
        need = estimated_gb(kind, classes, dim, rate, args.batch_size)
        row = {"kind": kind, "classes": classes, "dim": dim, "rate": rate, "batch": args.batch_size,
               "estimated_gb": need}
        if need > args.memory_limit_gb:
            row["skipped"] = f"needs about {need:.1f} GB > --memory-limit-gb {args.memory_limit_gb:g}"
        else:
            out = subprocess.run([sys.executable, "-m", "benchmarks.partial_fc", "--steps", str(args.steps),
                                  "--image-size", args.image_size, "--case", kind, str(classes), str(dim),
                                  str(rate), str(args.batch_size)], capture_output=True, text=True)
            if out.returncode < 0:
                row["failed"] = (f"killed by signal {-out.returncode} (with SIGKILL most likely the kernel's "
                                 f"out-of-memory killer: about {need:.1f} GB estimated)")
            elif out.returncode != 0 or "ROW" not in out.stdout:
                row["failed"] = (out.stderr.strip().splitlines() or ["no output"])[-1]
            else:
                row.update(json.loads(out.stdout.split("ROW")[1]))
        rows.append(row)
        print(_row_line(row), flush=True)
    print(f"CPU: {cpu_description()}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"command": "python -m benchmarks.partial_fc " + shlex.join(argv if argv is not None else sys.argv[1:]),
                       "cpu": cpu_description(), "rows": rows}, f, indent=2)
    return rows


def _row_line(row):
    head = "full head" if row["rate"] >= 1 else f"partial FC {row['rate']:g}"
    what = "head step" if row["kind"] == "head" else "MobileFaceNet step"
    size = f"C={row['classes']:.0e}, {row['dim']}-d, batch {row['batch']}"
    if "skipped" in row or "failed" in row:
        return f"{what:18s} {head:15s} {size}: {row.get('skipped') or 'failed: ' + row['failed']}"
    return f"{what:18s} {head:15s} {size}: {row['ms']:9.1f} ms, peak {row['peak_gb']:.2f} GB"


if __name__ == "__main__":
    main()
