"""Face identification on LFW people the model never saw (View 1 DevTest), and per-photo speed of the commands.

    flock /tmp/cpu-heavy.lock .venv/bin/python benchmarks/identification.py --model RUN \\
        --lfw-dir ../shared/data/lfw --aligned-dir data/lfw_aligned --output-dir benchmarks/results/identification

Protocol, after Best-Rowden et al. 2014 ("Unconstrained face recognition: identifying a person of
interest from a media collection", IEEE TIFS; their LFW benchmark: closed set with a gallery of one
image per person and the person's other images as probes, open set adding probes of people who are
not enrolled, detection-and-identification rate (DIR) at a false alarm rate of 1 %, 10 random
splits). Here:
- people: View 1 DevTest (peopleDevTest.txt), identity-disjoint from View 1 DevTrain, on which the
  model trained (checked against the run's shard manifest when it can be read);
- closed set: the 496 DevTest people with at least 2 images, one image each at random in the gallery
  (a template = that image's feature), their other 1,997 images as probes; rank-1 and rank-5;
- open set: the same gallery; the 1,215 DevTest people with one image are the impostor probes.
  DIR at FAR 1 %: the threshold lets 1 % of impostors' best score through (12 of 1,215), DIR is the
  share of genuine probes whose best match is right and above it. Also DIR and FAR at the model's own
  verification threshold, which identify.py uses by default;
- a 50-person gallery (50 of the 496 at random, same probes of theirs), the size of the issue's anchor
  (ArcFace ResNet-50 on VGGFace2: top-1 92.0 %, top-5 96.8 % on 50 enrolled identities);
- 10 splits (seeded), mean ± std. Features: the aligned crops (--aligned-dir, the crops evaluation
  used), evaluation's flip-concatenated features, the identify.py gallery code (inference.gallery).
Differences from Best-Rowden et al.: DevTest people only (their gallery was 4,249 people, all of LFW),
not the whole of LFW, because our model trained on DevTrain; features, not their matcher; the
closed-set gallery also serves the open set (their open set used a smaller watch list).

Timing (fast engine unless said): enrolling the split-0 gallery from the raw LFW photos (identify.py's
path: MTCNN alignment, features, templates, the file written); search of one probe in galleries of
10^4 to 10^6 random templates (whether an approximate index would matter); per photo, alignment
and embedding with the keras, fast and onnx engines side by side (round-robin over --speed-photos
photos): a verification is two photos, an identification one photo and a search.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

ANCHOR = "ArcFace ResNet-50 (VGGFace2): top-1 92.0 %, top-5 96.8 % on 50 enrolled identities"


def devtest_people(lfw_dir):
    """[(name, image count)] of peopleDevTest.txt."""
    from fileio import text_lines

    lines = [line.split() for _, line in text_lines(Path(lfw_dir) / "peopleDevTest.txt") if line.strip()]
    return [(name, int(count)) for name, count in lines[1:]]


def check_disjoint(model_path, names):
    """Training identities of the model's run (config.json -> shard manifest) against DevTest: stop on overlap."""
    from engines.model_file import run_dir_of

    config = run_dir_of(model_path) / "config.json"
    try:
        data = json.loads(config.read_text()).get("data")
        from tfrecords.manifest import read_manifest

        trained = set(read_manifest(data)["labels"]) if data else None
    except Exception as error:  # no config, synthetic run, shards gone: say so, do not guess
        return f"not checked ({type(error).__name__}: {error})"
    if trained is None:
        return "not checked (the run has no --data)"
    shared = trained & set(names)
    if shared:
        raise SystemExit(f"{len(shared)} DevTest people were training identities of {model_path}, e.g. "
                         f"{sorted(shared)[:5]}: the benchmark would not be identity-disjoint")
    return f"checked: none of {len(names)} DevTest people among the {len(trained)} training identities"


def open_set_threshold(impostor_scores, far=0.01):
    """Threshold letting floor(far × N) impostor best scores strictly above it (so FAR <= far)."""
    allowed = int(np.floor(far * len(impostor_scores)))
    return float(np.sort(impostor_scores)[::-1][allowed])


def one_split(features, images, people, rng, model, gallery_size=None):
    """Closed-set ranks and open-set DIR for one random choice of gallery images."""
    from inference.gallery import Gallery

    mated = [name for name, count in people if count >= 2]
    if gallery_size:
        mated = sorted(rng.choice(mated, gallery_size, replace=False).tolist())
    gallery = Gallery.for_model(model)
    probes, probe_truth = [], []
    for name in mated:
        rows = images[name]
        chosen = rows[int(rng.integers(len(rows)))]
        gallery.enroll(name, features[[chosen]], [str(chosen)])
        probes += [r for r in rows if r != chosen]
        probe_truth += [gallery.names.index(name)] * (len(rows) - 1)
    truth = np.array(probe_truth)
    rows, cosines = gallery.search(features[probes], top_k=5)
    rank1 = rows[:, 0] == truth
    result = {"gallery": len(gallery), "probes": len(probes), "rank1": float(rank1.mean()),
              "rank5": float((rows == truth[:, None]).any(axis=1).mean())}
    if not gallery_size:
        impostors = [images[name][0] for name, count in people if count == 1]
        _, impostor_cosines = gallery.search(features[impostors], top_k=1)
        threshold = open_set_threshold(impostor_cosines[:, 0])
        result.update(impostors=len(impostors), threshold_far1=threshold,
                      far=float((impostor_cosines[:, 0] > threshold).mean()),
                      dir_far1=float((rank1 & (cosines[:, 0] > threshold)).mean()),
                      genuine_best=cosines[:, 0], impostor_best=impostor_cosines[:, 0], rank1_hits=rank1)
    return result


def accuracy(features, images, people, model, splits, seed, verification_threshold):
    rng = np.random.default_rng(seed)
    full = [one_split(features, images, people, rng, model) for _ in range(splits)]
    small = [one_split(features, images, people, rng, model, gallery_size=50) for _ in range(splits)]

    def stats(rows, key):
        values = np.array([r[key] for r in rows])
        return {"mean": float(values.mean()), "std": float(values.std())}

    out = {"splits": splits, "seed": seed, "gallery": full[0]["gallery"], "probes": full[0]["probes"],
           "impostors": full[0]["impostors"], "rank1": stats(full, "rank1"), "rank5": stats(full, "rank5"),
           "dir_far1": stats(full, "dir_far1"), "far": stats(full, "far"),
           "threshold_far1": stats(full, "threshold_far1"),
           "gallery50": {"probes": stats(small, "probes"), "rank1": stats(small, "rank1"), "rank5": stats(small, "rank5")}}
    if verification_threshold is not None:
        t = verification_threshold
        out["at_verification_threshold"] = {
            "threshold": t,
            "dir": stats([{"v": float((r["rank1_hits"] & (r["genuine_best"] > t)).mean())} for r in full], "v"),
            "far": stats([{"v": float((r["impostor_best"] > t).mean())} for r in full], "v")}
    return out


def enroll_timing(lfw_dir, people, images_rel, model, seed):
    """Enroll split 0's gallery from the raw photos, as identify.py enroll does: seconds, photos, failures."""
    from inference.embedding import default_detector, embed_photos
    from inference.gallery import Gallery

    rng = np.random.default_rng(seed)
    mated = [name for name, count in people if count >= 2]
    photos = [str(Path(lfw_dir) / "images" / images_rel[name][int(rng.integers(count))])
              for name, count in people if count >= 2]
    default_detector()  # built and traced before the clock starts, as in a long-running service
    start = time.perf_counter()
    features, records = embed_photos(photos, model, progress=True)
    gallery = Gallery.for_model(model)
    for name, path, feature, record in zip(mated, photos, features, records):
        if record.ok:
            gallery.enroll(name, feature[None], [path])
    with tempfile.TemporaryDirectory() as tmp:
        gallery.save(Path(tmp) / "devtest.gallery")
    seconds = time.perf_counter() - start
    return {"photos": len(photos), "seconds": seconds, "failed": sum(not r.ok for r in records),
            "fallback": sum(r.status == "fallback" for r in records)}


def devtest_search_ms(features, images, people, model, repeats=200):
    """Milliseconds per top-5 search of one probe in the 496-person DevTest gallery."""
    from inference.gallery import Gallery

    gallery = Gallery.for_model(model)
    for name, count in people:
        if count >= 2:
            gallery.enroll(name, features[images[name][:1]], [name])
    start = time.perf_counter()
    for i in range(repeats):
        gallery.search(features[i:i + 1], top_k=5)
    return 1000 * (time.perf_counter() - start) / repeats


def search_timing(sizes, dim, repeats=20):
    """Seconds per search of one probe (top-5) and per probe in a batch of 100, in random galleries."""
    from inference.gallery import Gallery

    rng = np.random.default_rng(0)
    out = {}
    for size in sizes:
        gallery = Gallery("sha256:synthetic", "synthetic", (112, 96))
        gallery.names = [str(i) for i in range(size)]
        templates = np.empty((size, dim), np.float32)
        for start in range(0, size, 100_000):  # in pieces: float64 normals of 10^6 x 1024 would take 8 GB
            block = rng.standard_normal((min(100_000, size - start), dim), dtype=np.float32)
            templates[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
        gallery.templates = templates
        probes = templates[rng.integers(size, size=100)] + 0.01
        gallery.search(probes[:1])
        start = time.perf_counter()
        for i in range(repeats):
            gallery.search(probes[i:i + 1], top_k=5)
        single = (time.perf_counter() - start) / repeats
        start = time.perf_counter()
        gallery.search(probes, top_k=5)
        batched = (time.perf_counter() - start) / len(probes)
        out[size] = {"one_probe_ms": 1000 * single, "per_probe_in_batch_of_100_ms": 1000 * batched,
                     "gallery_mb": templates.nbytes / 2**20}
        del gallery, templates
    return out


def per_photo_speed(photo_paths, engines):
    """Per photo: alignment (read + MTCNN + warp) and embedding (the crop and its mirror) per engine, ms."""
    from inference.embedding import align_photo, default_detector, features_of_crops

    detector = default_detector()
    names = list(engines)
    for model in engines.values():  # tracing / session set-up outside the clock
        features_of_crops(model, np.zeros((1, *model.image_size, 3), np.uint8))
    align_ms, embed_ms = [], {name: [] for name in names}
    for k, path in enumerate(photo_paths):
        start = time.perf_counter()
        _record, crop = align_photo(path, engines[names[0]].image_size, detector)
        align_ms.append(1000 * (time.perf_counter() - start))
        if crop is None:
            continue
        for name in names[k % len(names):] + names[:k % len(names)]:
            start = time.perf_counter()
            features_of_crops(engines[name], crop[None])
            embed_ms[name].append(1000 * (time.perf_counter() - start))
    return {"photos": len(photo_paths), "align_ms": float(np.median(align_ms)),
            "embed_ms": {name: float(np.median(v)) for name, v in embed_ms.items()}}


def format_tables(figures):
    a = figures["accuracy"]
    pct = lambda s: f"{100 * s['mean']:.2f} ± {100 * s['std']:.2f} %"
    lines = [f"LFW View 1 DevTest people, {a['splits']} random splits (seed {a['seed']}); model {figures['model']}; "
             f"CPU {figures['cpu']}",
             "",
             "| protocol | gallery | probes | rank-1 | rank-5 | DIR @ FAR 1 % |",
             "|---|---:|---:|---:|---:|---:|",
             f"| closed set + open set | {a['gallery']} people | {a['probes']} genuine + {a['impostors']} impostor | "
             f"{pct(a['rank1'])} | {pct(a['rank5'])} | {pct(a['dir_far1'])} (threshold cosine "
             f"{a['threshold_far1']['mean']:.3f}, FAR {100 * a['far']['mean']:.2f} %) |",
             f"| closed set, 50 people (anchor's size) | 50 people | {a['gallery50']['probes']['mean']:.0f} genuine | "
             f"{pct(a['gallery50']['rank1'])} | {pct(a['gallery50']['rank5'])} | – |"]
    if "at_verification_threshold" in a:
        v = a["at_verification_threshold"]
        lines.append(f"\nAt the model's verification threshold (cosine {v['threshold']:.3f}, identify.py's default): "
                     f"DIR {pct(v['dir'])}, FAR {pct(v['far'])} of impostor probes accepted as someone.")
    lines.append(f"Anchor: {ANCHOR}.")
    if "enroll" in figures:
        e = figures["enroll"]
        lines.append(f"\nEnrolling the {e['photos']}-person gallery from raw LFW photos (alignment + features + "
                     f"templates + file): {e['seconds']:.1f} s ({1000 * e['seconds'] / e['photos']:.0f} ms per photo; "
                     f"{e['failed']} failed, {e['fallback']} centre fallbacks).")
    if "search" in figures:
        lines += ["", "| enrolled templates | gallery size | one probe | per probe, batch of 100 |", "|---:|---:|---:|---:|"]
        for size, s in figures["search"].items():
            lines.append(f"| {int(size):,} | {s['gallery_mb']:.0f} MiB | {s['one_probe_ms']:.2f} ms | "
                         f"{s['per_probe_in_batch_of_100_ms']:.2f} ms |")
    if "per_photo" in figures:
        p = figures["per_photo"]
        lines += ["", f"Per photo (median of {p['photos']} DevTest photos, 250x250): alignment {p['align_ms']:.0f} ms",
                  "", "| engine | embedding (photo + mirror) | verification (2 photos) | identification (1 photo + search) |",
                  "|---|---:|---:|---:|"]
        search_ms = figures.get("search_in_gallery_ms", 0.0)
        for name, ms in p["embed_ms"].items():
            lines.append(f"| {name} | {ms:.1f} ms | {2 * (p['align_ms'] + ms):.0f} ms | "
                         f"{p['align_ms'] + ms + search_ms:.0f} ms |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory or .keras file trained without DevTest people")
    parser.add_argument("--onnx", help="its ONNX export for the onnx engine (default: beside the .keras, else exported "
                        "to a temp dir)")
    parser.add_argument("--lfw-dir", default="../shared/data/lfw", help="original LFW: images/ and peopleDevTest.txt")
    parser.add_argument("--aligned-dir", default="data/lfw_aligned", help="aligned LFW crops (align/align_lfw.py)")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search-sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000],
                        help="random gallery sizes for the search timing (10^6 x 1,024 floats: 4 GB)")
    parser.add_argument("--speed-photos", type=int, default=60, help="photos for the per-photo timing (0: skip)")
    parser.add_argument("--skip-enroll", action="store_true", help="skip enrolling the gallery from raw photos")
    parser.add_argument("--output-dir", help="the experiment's folder (e.g. benchmarks/results/identification): writes results.json "
                             "and results.md (the tables) there")
    args = parser.parse_args()

    from benchmarks.inference_speed import load_engines
    from fileio.quiet_tensorflow import quiet_tensorflow
    from training.hardware import cpu_description

    quiet_tensorflow()
    from inference.embedding import embed_aligned
    from inference.thresholds import ThresholdError, model_threshold

    people = devtest_people(args.lfw_dir)
    images_rel = {name: [f"{name}/{name}_{i:04d}.jpg" for i in range(1, count + 1)] for name, count in people}
    aligned = [Path(args.aligned_dir) / rel for name, _ in people for rel in images_rel[name]]
    missing = [str(p) for p in aligned if not p.is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} DevTest crops missing from {args.aligned_dir}, e.g. {missing[:3]}; align LFW "
                         f"first (python align/align_lfw.py --input-dir {args.lfw_dir}/images --output-dir "
                         f"{args.aligned_dir} --fallback center)")
    keras_path, _, engines = load_engines(args.model, ["fast", "keras", "onnx"], args.onnx)
    model = engines["fast"]
    disjoint = check_disjoint(keras_path, [name for name, _ in people])
    print(f"model {keras_path}; identities {disjoint}; CPU {cpu_description()}", file=sys.stderr)
    try:
        verification_threshold = model_threshold(model).cosine
    except ThresholdError as error:
        print(f"no verification threshold: {error}", file=sys.stderr)
        verification_threshold = None

    start = time.perf_counter()
    features = embed_aligned([str(p) for p in aligned], model, progress=True)
    embed_seconds = time.perf_counter() - start
    index, images = 0, {}
    for name, count in people:
        images[name] = list(range(index, index + count))
        index += count
    figures = {"model": str(keras_path), "cpu": cpu_description(), "identities": disjoint,
               "embedded_crops": len(aligned), "embed_seconds": embed_seconds,
               "accuracy": accuracy(features, images, people, model, args.splits, args.seed, verification_threshold)}
    figures["search_in_gallery_ms"] = devtest_search_ms(features, images, people, model)
    if not args.skip_enroll:
        figures["enroll"] = enroll_timing(args.lfw_dir, people, images_rel, model, args.seed)
    if args.search_sizes:
        figures["search"] = search_timing(args.search_sizes, features.shape[1])
    if args.speed_photos:
        rng = np.random.default_rng(args.seed)
        sample = rng.choice([rel for name, _ in people for rel in images_rel[name]], args.speed_photos, replace=False)
        figures["per_photo"] = per_photo_speed([str(Path(args.lfw_dir) / "images" / rel) for rel in sample], engines)
    table = format_tables(figures)
    print(table)
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(figures, indent=2, default=float) + "\n")
        (out / "results.md").write_text(table + "\n")
        print(f"wrote {out / 'results.json'}, {out / 'results.md'}")


if __name__ == "__main__":
    main()
