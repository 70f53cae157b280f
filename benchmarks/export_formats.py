"""Every export format of one model side by side: size, LFW verification, speed (docs/using-a-model.md).

    python -m benchmarks.export_formats --model RUN --lfw-dir data/lfw_aligned \
        --calibration-shards data/shards [--pairs ../shared/data/lfw/pairsDevTest.txt ...]

For the .keras model (keras and fast engines) and each export written here (every format of
engines.base.EXPORT_FORMATS; the int8 ones calibrated on --calibration-count faces): the file size; for
each pairs file (default LFW pairsDevTest and View 2 pairs.txt) the facenet protocol's 10-fold accuracy
± std, AUC and VAL @ FAR 1e-3 (evaluation.run.evaluate_model_on_pairs, the evaluate.py path) and the
pairs whose same/different decision at the Keras model's threshold differs from Keras'; throughput at
batch 64 (images/s, flips not counted) and latency at batch 1 (median ms), on 1 and 2 threads.
keras/fast: TensorFlow's thread pools are set once per process, so their speed is measured in a child
process per thread count. Exports go to OUTPUT/exports/ (the run directory is left alone). Writes
OUTPUT/results.json and results.md (default benchmarks/results/export_formats_<cpu>/), with the CPU
time and load average measured while it ran (benchmarks.conditions).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from engines.base import INT8_FORMATS
from engines.registry import ENGINE_NAMES as ENGINES

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory or .keras file")
    parser.add_argument("--lfw-dir", required=True, help="aligned LFW crops (align/align_lfw.py's output)")
    parser.add_argument("--pairs", action="append", help="pairs file(s) (default: LFW pairsDevTest.txt and "
                        f"pairs.txt under {LFW})")
    parser.add_argument("--calibration-shards", help="int8 calibration: training TFRecords (default: --calibration-dir)")
    parser.add_argument("--calibration-dir", help="int8 calibration: aligned crops (default: --lfw-dir when no shards)")
    parser.add_argument("--calibration-count", type=int, default=300)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    parser.add_argument("--threads", default="1,2", help="thread counts for the speed figures")
    parser.add_argument("--speed-images", type=int, default=512, help="images timed at batch 64")
    parser.add_argument("--latency-runs", type=int, default=50, help="single images timed at batch 1")
    parser.add_argument("--output-dir", help="default benchmarks/results/export_formats_<cpu>/")
    parser.add_argument("--speed-only", help=argparse.SUPPRESS)  # child process: "ENGINE:FILE:THREADS"
    return parser


def cpu_tag():
    from benchmarks.recordio_import import cpu_model

    name = cpu_model().split(" (")[0]
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower() or "cpu"


def speed(model, threads, speed_images, latency_runs):
    """{"batch64_images_per_second", "batch1_latency_ms"} of an EmbeddingModel's embed_fn."""
    import numpy as np

    images = np.random.default_rng(0).uniform(0, 255, (64, *model.image_size, 3)).astype(np.float32)
    model.embed_fn(images)  # warm-up (traces, plans)
    model.embed_fn(images[:1])
    start, done = time.perf_counter(), 0
    while done < speed_images:
        model.embed_fn(images)
        done += len(images)
    throughput = done / (time.perf_counter() - start)
    model.embed_fn(images[:1])
    times = []
    for i in range(latency_runs):
        t = time.perf_counter()
        model.embed_fn(images[i % 64:i % 64 + 1])
        times.append(time.perf_counter() - t)
    return {"threads": threads, "batch64_images_per_second": round(throughput, 1),
            "batch1_latency_ms": round(1000 * float(np.median(times)), 2)}


def child_speed(spec, speed_images, latency_runs):
    engine, path, threads = spec.rsplit(":", 2)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(threads))
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from engines import load_model

    print(json.dumps(speed(load_model(path, engine, threads=int(threads)), int(threads), speed_images, latency_runs)))


def measure_speed(engine, path, threads, args):
    if engine in ("keras", "fast"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.export_formats", "--model", str(path), "--lfw-dir", ".",
                              "--speed-only", f"{engine}:{path}:{threads}", "--speed-images", str(args.speed_images),
                              "--latency-runs", str(args.latency_runs)], capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if out.returncode != 0:
            raise RuntimeError(f"speed child for {engine} failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    from engines import load_model

    return speed(load_model(path, engine, threads=threads), threads, args.speed_images, args.latency_runs)


def main(argv=None):
    args = build_parser().parse_args(argv)
    from fileio.quiet_tensorflow import quiet_tensorflow

    quiet_tensorflow()
    if args.speed_only:
        child_speed(args.speed_only, args.speed_images, args.latency_runs)
        return 0
    from benchmarks.conditions import describe_conditions, measured_conditions
    from engines import export_path_for
    from engines.export import export_model
    from engines.model_file import resolve_model_path
    from evaluation.metrics import squared_distances
    from evaluation.run import evaluate_model_on_pairs
    from fileio import write_json_atomic, write_text_atomic

    engines = [e for e in args.engines.split(",") if e]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        print(f"export_formats: error: unknown engine(s) {unknown}; known: {', '.join(ENGINES)}", file=sys.stderr)
        return 1
    threads = [int(t) for t in args.threads.split(",")]
    keras_path = resolve_model_path(args.model)
    output = Path(args.output_dir or Path(__file__).parent / "results" / f"export_formats_{cpu_tag()}")
    exports = output / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    calibration = {"calibration_shards": args.calibration_shards,
                   "calibration_dir": None if args.calibration_shards else (args.calibration_dir or args.lfw_dir),
                   "calibration_count": args.calibration_count}
    files = {"keras": keras_path, "fast": keras_path}
    export_checks = {}
    for engine in engines:
        if engine in files:
            continue
        target = export_path_for(exports / keras_path.name, engine)
        start = time.perf_counter()
        result = export_model(keras_path, engine, target, **(calibration if engine in INT8_FORMATS else {}))
        export_checks[engine] = {"export_seconds": round(time.perf_counter() - start, 1),
                                 "check": f"{result.check_images}: max |diff| {result.max_difference:.3g}, "
                                          f"min cosine {result.min_cosine:.6f}"}
        files[engine] = target
    pair_files = args.pairs or [str(LFW / "pairsDevTest.txt"), str(LFW / "pairs.txt")]
    pair_names = [Path(p).stem for p in pair_files]
    with measured_conditions() as conditions:
        rows, distances = {}, {}
        for engine in engines:
            row = {"file": str(files[engine]), "bytes": Path(files[engine]).stat().st_size,
                   **export_checks.get(engine, {})}
            for name, pair_file in zip(pair_names, pair_files):
                metrics, emb_a, emb_b, _issame = evaluate_model_on_pairs(   # evaluate.py's own path
                    files[engine], pair_file, args.lfw_dir, batch_size=128, progress=False, engine=engine)
                distances[engine, name] = squared_distances(emb_a, emb_b)
                row[name] = {k: metrics[k] for k in ("accuracy_mean", "accuracy_std", "auc", "val", "val_std", "far",
                                                     "threshold")}
            rows[engine] = row
        keras_key = "keras" if "keras" in rows else engines[0]
        for engine, row in rows.items():
            for name in pair_names:
                reference = rows[keras_key][name]
                row[name]["accuracy_minus_keras"] = row[name]["accuracy_mean"] - reference["accuracy_mean"]
                row[name]["val_minus_keras"] = row[name]["val"] - reference["val"]
                # same/different decisions at the Keras model's threshold (squared distance < threshold: same)
                flipped = (distances[engine, name] < reference["threshold"]) != \
                    (distances[keras_key, name] < reference["threshold"])
                row[name]["decisions_flipped"] = int(flipped.sum())
                row[name]["num_pairs"] = len(flipped)
        for engine in engines:
            rows[engine]["speed"] = [measure_speed(engine, files[engine], t, args) for t in threads]
    keras_speed = {s["threads"]: s["batch64_images_per_second"] for s in rows[keras_key]["speed"]}
    for row in rows.values():
        for s in row["speed"]:
            s["vs_keras"] = round(s["batch64_images_per_second"] / keras_speed[s["threads"]], 2)
    from benchmarks.recordio_import import cpu_model

    command = "python -m benchmarks.export_formats " + " ".join(argv if argv is not None else sys.argv[1:])
    data = {"command": command, "cpu": cpu_model(), "model": str(keras_path), "calibration": calibration,
            "pairs": pair_files, "formats": rows,
            "conditions": describe_conditions([conditions], "the measurements"), "measured": conditions}
    write_json_atomic(output / "results.json", data)
    write_text_atomic(output / "results.md", format_table(data, pair_names))
    print(format_table(data, pair_names))
    return 0


def format_table(data, pair_names):
    lines = [f"# Export formats: {data['model']}", "", f"`{data['command']}`", "", f"CPU: {data['cpu']}. "
             f"{data['conditions']} Int8 calibration: {data['calibration']}.", ""]
    head = ["engine", "MB"] + [f"{n} acc % (Δ keras)" for n in pair_names] + [f"{n} AUC" for n in pair_names] + \
        [f"{n} VAL@1e-3 %" for n in pair_names] + [f"{n} decisions flipped" for n in pair_names]
    threads = [s["threads"] for s in next(iter(data["formats"].values()))["speed"]]
    head += [f"img/s b64 {t}T (× keras)" for t in threads] + [f"ms b1 {t}T" for t in threads]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for engine, row in data["formats"].items():
        cells = [engine, f"{row['bytes'] / 1e6:.2f}"]
        cells += [f"{100 * row[n]['accuracy_mean']:.2f} ± {100 * row[n]['accuracy_std']:.2f} "
                  f"({100 * row[n]['accuracy_minus_keras']:+.2f})" for n in pair_names]
        cells += [f"{row[n]['auc']:.4f}" for n in pair_names]
        cells += [f"{100 * row[n]['val']:.2f} ({100 * row[n]['val_minus_keras']:+.2f})" for n in pair_names]
        cells += [f"{row[n]['decisions_flipped']} of {row[n]['num_pairs']}" for n in pair_names]
        cells += [f"{s['batch64_images_per_second']:.0f} ({s['vs_keras']:.2f}×)" for s in row["speed"]]
        cells += [f"{s['batch1_latency_ms']:.2f}" for s in row["speed"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
