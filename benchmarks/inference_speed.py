"""Embedding throughput of the inference engines side by side, with the results they give, and where the time goes.

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/inference_speed.py --model RUN \\
        --lfw-pairs ../shared/data/lfw/pairs.txt --lfw-dir data/lfw_aligned
    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/inference_speed.py --model RUN --profile-only

Workload: what evaluate.py does, the distinct images of a pairs file (View 2: 7,701 aligned crops),
each read from its JPEG and embedded with its mirror image, batch 256 (evaluation.embed_paths_raw).
Engines (engines.loading): ``keras``, the exported model's own graph in one tf.function (what
evaluate.py ran before the fast engine); ``fast``, batch norm folded into the convolutions and PReLU
as one XLA pass (engines.fast_graph); ``onnx``, the ONNX export under ONNX Runtime. They take turns
on chunks of --chunk images (round-robin, the order rotating), so load from other jobs on the machine
hits all of them alike; the first batch of each (tracing, XLA and ORT set-up) is timed apart.

Results: each engine's features and the 10-fold metrics on the pairs file, against the keras engine:
max |difference| of the unit features, of the pair cosines, and of every metric.

--profile (or --profile-only): per-op-type time of one batch in the keras and fast graphs (TensorFlow's
profiler), to see where the time goes; forward images/s of both graphs at batch sizes 8 to 256 on
random images (round-robin), which is why the fast engine runs micro-batches of 16; and the GFLOP/s
of a 2048x2048 float32 matrix product, the rate the convolutions are held against.
"""

import argparse
import collections
import glob
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

METRICS = ("accuracy_mean", "threshold", "far_at_threshold", "val", "far", "auc", "eer")


def load_engines(model_arg, names, onnx_path=None):
    """name -> EmbeddingModel; the ONNX export comes from beside the .keras, --onnx, or is written to a temp dir."""
    from engines.keras_engine import from_keras_model
    from engines.loading import load_model, onnx_path_for
    from engines.model_file import load_embedding_model, resolve_model_path

    keras_path = resolve_model_path(model_arg)
    keras_model, _ = load_embedding_model(keras_path)
    engines = {}
    for name in names:
        if name == "onnx":
            path = Path(onnx_path) if onnx_path else onnx_path_for(keras_path)
            if not path.is_file():
                from engines.onnx_export import export_onnx

                path = Path(tempfile.mkdtemp(prefix="faceid-bench-")) / "model.onnx"
                print(f"exporting {keras_path} to {path} for the onnx engine ...", file=sys.stderr)
                export_onnx(keras_model, path, source=keras_path)
            engines[name] = load_model(path)
        else:
            engines[name] = from_keras_model(keras_model, keras_path, name)
    return keras_path, keras_model, engines


def forward_gflop(keras_model):
    from models import count_forward_flops

    nested = [layer for layer in keras_model.layers if hasattr(layer, "layers")]
    return count_forward_flops(nested[0] if nested else keras_model) / 1e9


def throughput(engines, paths, load, image_size, batch_size, chunk):
    """Round-robin timing: (seconds per engine, first-batch seconds per engine, raw embeddings per engine)."""
    from evaluation.embed import embed_paths_raw

    names = list(engines)
    first = {}
    for name in names:  # tracing / compilation / session set-up, timed apart
        start = time.perf_counter()
        embed_paths_raw(engines[name].embed_fn, paths[:batch_size // 2], load, batch_size, "concat", image_size, False)
        first[name] = time.perf_counter() - start
    seconds = dict.fromkeys(names, 0.0)
    outputs = {name: ([], []) for name in names}
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    for k, part in enumerate(chunks):
        order = names[k % len(names):] + names[:k % len(names)]
        for name in order:
            start = time.perf_counter()
            emb, emb_flip = embed_paths_raw(engines[name].embed_fn, part, load, batch_size, "concat", image_size, False)
            seconds[name] += time.perf_counter() - start
            outputs[name][0].append(emb)
            outputs[name][1].append(emb_flip)
        done = ", ".join(f"{n} {(k + 1) * chunk / max(seconds[n], 1e-9):.0f} img/s" for n in names)
        print(f"  chunk {k + 1}/{len(chunks)}: {done}", file=sys.stderr, flush=True)
    raw = {name: (np.concatenate(e), np.concatenate(f)) for name, (e, f) in outputs.items()}
    return seconds, first, raw


def compare(raw, paths, pairs):
    """Features, pair cosines and metrics of every engine, and their differences from the keras engine."""
    from evaluation import combine_flips, gather_pairs, verification_metrics

    results = {}
    for name, (emb, emb_flip) in raw.items():
        features = combine_flips(emb, emb_flip, "concat")
        a, b = gather_pairs(features, paths, pairs)
        results[name] = {"features": features, "cosines": np.sum(a.astype(np.float64) * b, axis=1),
                         "metrics": verification_metrics(a, b, pairs.issame, pairs.folds)}
    base = results["keras"] if "keras" in results else next(iter(results.values()))
    for result in results.values():
        result["max_feature_difference"] = float(np.abs(result["features"] - base["features"]).max())
        result["max_cosine_difference"] = float(np.abs(result["cosines"] - base["cosines"]).max())
        result["max_metric_difference"] = max(abs(result["metrics"][m] - base["metrics"][m]) for m in METRICS)
    return results


def profile(keras_model, image_size, batch_size, repeats=3):
    """Per-op-type milliseconds of one batch through the keras and fast graphs (TF profiler traces)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from engines.keras_engine import make_embed_fn

    x = np.random.default_rng(0).uniform(0, 255, (batch_size, *image_size, 3)).astype(np.float32)
    table = {}
    for engine in ("keras", "fast"):
        fn = make_embed_fn(keras_model, engine)
        fn(x)
        logdir = tempfile.mkdtemp(prefix=f"faceid-profile-{engine}-")
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        wall = (time.perf_counter() - start) / repeats
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(max(glob.glob(f"{logdir}/plugins/profile/*/*.xplane.pb"))).read_bytes())
        plane = next(p for p in space.planes if p.name == "/host:CPU")
        names = {k: v.name for k, v in plane.event_metadata.items()}
        per_type = collections.Counter()
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                if name.startswith(("ExecutorState", "ThreadpoolListener", "ExecutorDoneCallback")):
                    continue
                per_type[name.split(":")[-1].strip()] += event.duration_ps / 1e9 / repeats
        table[engine] = {"wall_ms": 1000 * wall, "ops_ms": dict(per_type.most_common())}
    return table


def batch_sweep(keras_model, image_size, sizes=(8, 16, 32, 64, 256), images=512, rounds=3):
    """Forward images/s of the keras graph and the fast graph without its micro-batching, per batch size."""
    from engines.fast_graph import make_fast_embed_fn
    from engines.keras_engine import make_embed_fn

    x = np.random.default_rng(0).uniform(0, 255, (images, *image_size, 3)).astype(np.float32)
    # the fast graph as compiled, handed each batch whole (its micro-batch size set past the largest)
    fast_fn = make_fast_embed_fn(keras_model, micro_batch=max(sizes))[0]
    fns = {"keras": make_embed_fn(keras_model, "keras"), "fast": fast_fn}
    seconds = {(name, size): 0.0 for name in fns for size in sizes}
    for (name, size) in seconds:
        fns[name](x[:size])
    for _ in range(rounds):
        for (name, size) in seconds:
            start = time.perf_counter()
            for begin in range(0, images, size):
                fns[name](x[begin:begin + size])
            seconds[(name, size)] += time.perf_counter() - start
    return {name: {size: rounds * images / seconds[(name, size)] for size in sizes} for name in fns}


def matmul_gflops(n=2048, repeats=10):
    """GFLOP/s of an n x n float32 matrix product in TensorFlow (oneDNN): the CPU's attainable rate."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    product = tf.function(lambda a: tf.matmul(a, a))
    product(a).numpy()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = product(a)
        out.numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best / 1e9


def profile_lines(table, batch_size):
    lines = [f"\nWhere the time goes: one batch of {batch_size} forward images, op time summed over threads (ms)\n",
             f"| op type | {' | '.join(table)} |", "|---|" + "---:|" * len(table)]
    types = sorted(set().union(*(t["ops_ms"] for t in table.values())),
                   key=lambda k: -max(t["ops_ms"].get(k, 0) for t in table.values()))
    for op in types[:14]:
        lines.append(f"| {op} | " + " | ".join(f"{t['ops_ms'].get(op, 0):.1f}" for t in table.values()) + " |")
    lines.append("| **wall time per batch** | " + " | ".join(f"**{t['wall_ms']:.0f}**" for t in table.values()) + " |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory or .keras file (a float32 model: a mixed-precision "
                        "one runs in float32 in the fast and onnx engines, so it would not compare like for like)")
    parser.add_argument("--onnx", help="its ONNX export (default: beside the .keras, else exported to a temp dir)")
    parser.add_argument("--lfw-pairs", help="pairs file whose distinct images are embedded (View 2: pairs.txt)")
    parser.add_argument("--lfw-dir", default="data/lfw_aligned", help="aligned crops the pairs name")
    parser.add_argument("--engines", nargs="+", default=["keras", "fast", "onnx"], choices=("keras", "fast", "onnx"))
    parser.add_argument("--batch-size", type=int, default=256, help="forward images per call, flips included "
                        "(evaluate.py's default)")
    parser.add_argument("--chunk", type=int, default=1024, help="images per round-robin turn")
    parser.add_argument("--num-images", type=int, help="embed only the first N images (the metrics need all)")
    parser.add_argument("--profile", action="store_true", help="also profile the keras and fast graphs per op type")
    parser.add_argument("--profile-only", action="store_true", help="only the profile")
    parser.add_argument("--output-dir", help="the experiment's folder (e.g. benchmarks/results/inference_speed): "
                             "writes results.json and results.md (the tables) there")
    args = parser.parse_args()

    from fileio.quiet_tensorflow import quiet_tensorflow
    from training.hardware import cpu_description

    quiet_tensorflow()
    from evaluation import read_pairs
    from evaluation.images import read_rgb, resolve_image_files

    keras_path, keras_model, engines = load_engines(args.model, [] if args.profile_only else args.engines, args.onnx)
    image_size = tuple(keras_model.input_shape[1:3])
    gflop = forward_gflop(keras_model)
    lines = [f"model {keras_path}: {image_size[0]}x{image_size[1]}, {gflop:.3f} GFLOP per forward image; CPU: {cpu_description()}"]
    figures = {"model": str(keras_path), "cpu": cpu_description(), "gflop_per_forward_image": gflop,
               "batch_size": args.batch_size}
    if not args.profile_only:
        if not args.lfw_pairs:
            parser.error("--lfw-pairs is needed (or --profile-only)")
        pairs = read_pairs(args.lfw_pairs)
        paths = pairs.unique_paths()[:args.num_images] if args.num_images else pairs.unique_paths()
        files = resolve_image_files(args.lfw_dir, paths)
        load = lambda p: read_rgb(files[p])
        seconds, first, raw = throughput(engines, paths, load, image_size, args.batch_size, args.chunk)
        results = compare(raw, paths, pairs) if len(paths) == len(pairs.unique_paths()) else None
        base = seconds.get("keras")
        lines += [f"\n{len(paths)} images of {Path(args.lfw_pairs).name}, each with its mirror image, batch "
                  f"{args.batch_size}, round-robin in chunks of {args.chunk}:\n",
                  "| engine | images/s | forward GFLOP/s | speed-up vs keras | first batch (s) | max feature diff | "
                  "max cosine diff | max metric diff |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        figures["engines"] = {}
        for name, secs in seconds.items():
            rate = len(paths) / secs
            row = {"images_per_second": rate, "forward_gflops": 2 * rate * gflop, "seconds": secs,
                   "first_batch_seconds": first[name], "speedup": base / secs if base else None}
            if results:
                row.update({k: results[name][k] for k in ("max_feature_difference", "max_cosine_difference",
                                                           "max_metric_difference")})
                row["metrics"] = {m: results[name]["metrics"][m] for m in METRICS}
            figures["engines"][name] = row
            diffs = (" | ".join(f"{row[k]:.1e}" for k in ("max_feature_difference", "max_cosine_difference",
                                                           "max_metric_difference")) if results else "– | – | –")
            lines.append(f"| {name} | {rate:.1f} | {row['forward_gflops']:.1f} | "
                         f"{(base / secs if base else float('nan')):.2f}x | {first[name]:.1f} | {diffs} |")
        if results:
            lines.append("\nMetrics on the pairs (10-fold): " + "; ".join(
                f"{n}: accuracy {r['metrics']['accuracy_mean']:.4f}, threshold {r['metrics']['threshold']:.3f}, "
                f"VAL {r['metrics']['val']:.4f}, AUC {r['metrics']['auc']:.4f}" for n, r in results.items()))
    if args.profile or args.profile_only:
        figures["profile"] = profile(keras_model, image_size, args.batch_size)
        lines += profile_lines(figures["profile"], args.batch_size)
        figures["batch_sweep"] = batch_sweep(keras_model, image_size)
        sizes = list(next(iter(figures["batch_sweep"].values())))
        lines += ["\nForward images/s by batch size (random images; the fast graph handed each batch whole)\n",
                  "| graph | " + " | ".join(f"batch {size}" for size in sizes) + " |", "|---|" + "---:|" * len(sizes)]
        lines += [f"| {name} | " + " | ".join(f"{rate:.0f}" for rate in rates.values()) + " |"
                  for name, rates in figures["batch_sweep"].items()]
        figures["matmul_gflops"] = matmul_gflops()
        lines.append(f"\n2048x2048 float32 matrix product: {figures['matmul_gflops']:.0f} GFLOP/s (best of 3)")
    print("\n".join(lines))
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(figures, indent=2) + "\n")
        (out / "results.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {out / 'results.json'}, {out / 'results.md'}")


if __name__ == "__main__":
    main()
