"""A user's own people, simulated with LFW's DevTest people (never seen by the starter model): for N people,
fine-tune on half of each person's photos and test on pairs of the other half (docs/your-own-photos.md).

    python -m benchmarks.own_photos --aligned-dir data/lfw_aligned [--sizes 10 30 100] [--steps 150]

For each N in --sizes: the first N of a seeded shuffle of the peopleDevTest.txt people with at least
--min-images aligned photos (so the 10 are among the 30, the 30 among the 100); each person's photos
shuffled (seeded), cut to --max-images and split in half, the odd one going to the test half (train >= 2,
test >= 2). The
train half is written as an aligned folder of symlinks (WORK/N<n>/train), built into shards with
``tfrecords.build --val-identities 0``; the test half (WORK/N<n>/test) gets a pairs file from
evaluation.make_pairs' functions. Then three rows, each command run as a subprocess (its log in
WORK/logs/, its CPU time and load measured by benchmarks/conditions.py):

- starter: the starter model alone, evaluated on the test pairs;
- fine-tuned: ``train.py --init-from STARTER --freeze-backbone-steps F --max-steps S``, evaluated;
- scratch: ``train.py --backbone mobilefacenet`` with the same data, steps, batch and loss, evaluated.

Both trainings use train.py's defaults otherwise (AM-Softmax s=30 m=0.35, the reference lr schedule
stretched to S steps, lr 0.1 x batch / 256), as docs/your-own-photos.md's user would.

Folds: make_pairs deals the people into 10 identity-disjoint folds and needs 20 people for it (each fold
needs two people for its different pairs), and it stops when its image-balanced dealing leaves a person
with many photos alone in a fold. Then the folds are the most (at most N // 2)
that the same function can make with a same and a different pair in each, written in LFW's View 2
layout (header ``F N``: the reader keeps those folds), so no threshold is chosen on pairs of the
people it is scored on. The fold count is in the table.

A finished stage (an evaluation's JSON, a training's summary) is not redone by a rerun with the same
settings. Writes OUTPUT/results.json and results.md (default benchmarks/results/own_photos_<cpu>/),
after each N.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = ("starter", "fine_tuned", "scratch")
ROW_NAMES = {"starter": "starter model alone", "fine_tuned": "fine-tuned from the starter model",
             "scratch": "from scratch (MobileFaceNet)"}
FAR_SHOWN = 1e-2
LFW_FILE = re.compile(r"^(?P<name>[^/]+)/(?P=name)_(?P<number>\d+)\.[A-Za-z]+$")   # Name/Name_0001.jpg


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lfw-dir", default=str(REPO.parent / "shared" / "data" / "lfw"),
                   help="original LFW, for peopleDevTest.txt (default: %(default)s)")
    p.add_argument("--aligned-dir", default="data/lfw_aligned",
                   help="aligned LFW crops, a folder per person (align/align_lfw.py's output; read only: the "
                        "subsets are symlinks) (default: %(default)s)")
    p.add_argument("--work-dir", default="data/own_photos", help="subsets, shards, runs, logs (default: %(default)s)")
    p.add_argument("--output-dir", help="results.json and results.md (default: benchmarks/results/own_photos_<cpu>)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 100], help="people per user (default: %(default)s)")
    p.add_argument("--min-images", type=int, default=4,
                   help="DevTest people with fewer aligned photos are not drawn (default: %(default)s; >= 4 so "
                        "that both halves hold 2)")
    p.add_argument("--max-images", type=int, default=20,
                   help="a person's photos used at most, a seeded choice (default: %(default)s, as the manual's "
                        "user has 5 to 20; LFW's most photographed DevTest person has 121)")
    p.add_argument("--seed", type=int, default=0, help="the draw, the split, the pairs, train.py --seed (default: 0)")
    p.add_argument("--starter", default="starter",
                   help="the model to start from and to evaluate alone: 'starter' (the shipped one), a run "
                        "directory or a .keras file (default: %(default)s)")
    p.add_argument("--steps", type=int, default=150, help="training steps of both trainings (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    p.add_argument("--freeze-backbone-steps", type=int, default=50,
                   help="fine-tuning: steps with only the new head training (default: %(default)s)")
    p.add_argument("--embedding-size", type=int, default=512,
                   help="the from-scratch model's (default: %(default)s, the starter model's)")
    p.add_argument("--extra-train-args", default="", help="appended to both train.py commands")
    args = p.parse_args(argv)
    if min(args.sizes) < 4:
        p.error("--sizes: at least 4 people (2 identity-disjoint folds of 2 people each)")
    if args.min_images < 4 or args.max_images < args.min_images:
        p.error("--min-images must be >= 4 (each half needs 2 photos of a person) and <= --max-images")
    return args


def devtest_people(people_file, aligned_dir, min_images):
    """{person: sorted image file names} of the people file's people with >= min_images photos in aligned_dir."""
    from fileio import is_image_file
    from tfrecords.sources import read_people_file

    people = {}
    for name in sorted(read_people_file(people_file)):
        folder = Path(aligned_dir) / name
        images = sorted(f for f in os.listdir(folder) if is_image_file(f)) if folder.is_dir() else []
        if len(images) >= min_images:
            people[name] = images
    return people


def draw_and_split(people, size, seed, max_images=None):
    """The first ``size`` people of a seeded shuffle, each person's photos shuffled, cut to ``max_images``
    and split: -> {person: (train names, test names)}; train gets len // 2, test the rest."""
    import numpy as np

    names = sorted(people)
    if size > len(names):
        raise SystemExit(f"--sizes {size}: only {len(names)} DevTest people have enough photos")
    order = np.random.default_rng([seed, 34]).permutation(len(names))
    split = {}
    for k in order[:size]:
        name = names[k]
        images = sorted(people[name])
        shuffled = [images[i] for i in np.random.default_rng([seed, 34, int(k)]).permutation(len(images))]
        shuffled = shuffled[:max_images]
        half = len(images) // 2
        split[name] = (sorted(shuffled[:half]), sorted(shuffled[half:]))
    return split


def link_subset(aligned_dir, split, which, out):
    """out/<person>/<image> symlinks to the aligned crops of one half (0 train, 1 test), made afresh."""
    import shutil

    if out.exists():
        shutil.rmtree(out)
    for name, halves in split.items():
        (out / name).mkdir(parents=True)
        for image in halves[which]:
            os.symlink(Path(aligned_dir, name, image).resolve(), out / name / image)
    return out


def folded_pairs(people, seed):
    """make_folded_pairs' folds -> (folds, k): make_pairs' 10 when it can, else the most identity-disjoint folds
    that each hold a same and a different pair (at most N // 2; its image-balanced dealing can leave a fold
    with one person who has many photos, so fewer may be needed)."""
    from evaluation.make_pairs import NUM_FOLDS, PairsInputError, make_folded_pairs

    for k in range(min(NUM_FOLDS, len(people) // 2), 1, -1):
        try:
            return make_folded_pairs(people, None, k, seed), k
        except PairsInputError:
            continue
    raise SystemExit(f"{len(people)} people: not even 2 identity-disjoint folds of same and different pairs")


def format_view2_pairs(folds):
    """LFW View 2 text ("F N", then per fold N same and N different lines) of make_folded_pairs' folds: the
    layout whose folds evaluation.read_pairs keeps as written. Paths must be LFW's Name/Name_0001.ext."""
    def parts(path):
        match = LFW_FILE.match(path)
        if not match:
            raise SystemExit(f"{path}: not an LFW file name (Name/Name_0001.jpg); the fold layout needs one")
        return match["name"], int(match["number"])

    lines = [f"{len(folds)}\t{len(folds[0]) // 2}"]
    for fold in folds:
        for a, b, same in fold:
            (name_a, i), (name_b, j) = parts(a), parts(b)
            lines.append(f"{name_a}\t{i}\t{j}" if same else f"{name_a}\t{i}\t{name_b}\t{j}")
    return "\n".join(lines) + "\n"


def write_test_pairs(test_dir, output, seed):
    """The test half's pairs file -> {folds, pairs_per_fold, num_pairs, layout, command}."""
    from evaluation.make_pairs import people_images, write_pairs_file
    from fileio import write_text_atomic

    people = people_images(test_dir, log=lambda *_: None)
    folds, k = folded_pairs(people, seed)
    if k == 10:
        write_pairs_file(folds, output, seed, test_dir)   # exactly what the make_pairs command writes
        layout = f"python -m evaluation.make_pairs --input-dir TEST --output PAIRS --seed {seed}"
    else:
        write_text_atomic(output, format_view2_pairs(folds))
        why = ("its 10 folds need 20 people" if len(people) < 20 else
               "for 10 folds its image-balanced dealing leaves a person with many photos alone in a fold, with no "
               "different pair, and the command stops")
        layout = (f"evaluation.make_pairs.make_folded_pairs(people, None, {k}, seed={seed}), written in LFW's View 2 "
                  f"layout, not by the make_pairs command: {why}")
    per_fold = len(folds[0]) // 2
    return {"folds": k, "pairs_per_fold": per_fold, "num_pairs": 2 * k * per_fold, "made_by": layout}


def far_row(report, target=FAR_SHOWN):
    """The report's far_thresholds entry for ``target`` (evaluate.py writes 1e-2, 1e-3, 1e-4)."""
    return next(r for r in report["far_thresholds"] if abs(r["far_target"] - target) < 1e-12)


def evaluate(stages, name, model, pairs, test_dir, out):
    """evaluate.py on the test pairs (skipped when ``out`` exists) -> the figures kept."""
    if not out.is_file():
        stages.run(name, [sys.executable, REPO / "evaluate.py", "--model", model, "--lfw-pairs", pairs,
                          "--lfw-dir", test_dir, "--output", out, "--no-progress", "--no-plots"])
    r = json.loads(out.read_text())
    far = far_row(r)
    return {"accuracy_mean": r["accuracy_mean"], "accuracy_std": r["accuracy_std"], "auc": r["auc"],
            "eer": r["eer"], "num_pairs": r["num_pairs"], "num_folds": r["num_folds"],
            "threshold_cosine": r["threshold_cosine"], "far_at_threshold": r["far_at_threshold"],
            "tar_far_1e-2": far["tar"], "far_1e-2": far["far"], "threshold_cosine_far_1e-2": far["threshold_cosine"],
            "heldout_tar_far_1e-2": far["heldout_tar"], "heldout_far_far_1e-2": far["heldout_far"],
            "far_1e-2_resolvable": far["resolvable"], "num_different": far["num_different"],
            "embed_seconds": r.get("embed_seconds")}


def train(stages, name, shards, run, args, extra):
    """train.py on the shards for --steps (skipped when the run finished) -> steps, times, speed, command."""
    from recipes.lfw_view1 import read_summaries

    command = [sys.executable, REPO / "train.py", "--data", shards, "--batch-size", args.batch_size,
               "--max-steps", args.steps, "--seed", args.seed, "--exports", "keras", "--log-every", 10,
               "--checkpoint-every", args.steps, "--output-dir", run, *extra, *shlex.split(args.extra_train_args)]
    summaries = read_summaries(run)
    if not (summaries and summaries[-1]["last_step"] == args.steps):
        stages.run(name, command)
        summaries = read_summaries(run)
    s = summaries[-1]
    return {"command": " ".join(str(a) for a in command[1:]).replace(str(REPO) + "/", ""),
            "steps": s["last_step"], "stage_wall_seconds": stages.seconds.get(name),
            "train_seconds": s["train_seconds"], "wall_seconds": s["wall_seconds"],
            "images_per_sec": s["images_per_sec"], "final_loss": s["final_loss"],
            "final_accuracy": s["final_accuracy"], "conditions": stages.conditions.get(name)}


def run_size(stages, args, people, size, work):
    """Subsets, shards, pairs, the three rows of one N -> its results entry."""
    from tfrecords.manifest import read_manifest

    split = draw_and_split(people, size, args.seed, args.max_images)
    base = work / f"N{size}"
    train_dir = link_subset(args.aligned_dir, split, 0, base / "train")
    test_dir = link_subset(args.aligned_dir, split, 1, base / "test")
    shards, pairs = base / "shards", base / "test_pairs.txt"
    if not (shards / "manifest.json").is_file():
        stages.run(f"build_N{size}", [sys.executable, "-m", "tfrecords.build", "--input-dir", train_dir,
                                      "--output-dir", shards, "--val-identities", 0, "--image-size", "112x96",
                                      "--seed", args.seed, "--no-progress"])
    manifest = read_manifest(shards)
    entry = {"people": size, "train_images": manifest["num_images"], "train_identities": len(manifest["labels"]),
             "test_images": sum(len(t) for _, t in split.values()), "people_drawn": sorted(split),
             "pairs": write_test_pairs(test_dir, pairs, args.seed), "rows": {}}
    rows = entry["rows"]
    rows["starter"] = {"steps": 0, **evaluate(stages, f"eval_N{size}_starter", args.starter, pairs, test_dir,
                                              base / "eval_starter.json")}
    trainings = {"fine_tuned": ["--init-from", args.starter, "--freeze-backbone-steps", args.freeze_backbone_steps],
                 "scratch": ["--backbone", "mobilefacenet", "--embedding-size", args.embedding_size]}
    for row, extra in trainings.items():
        run = base / "runs" / row
        rows[row] = train(stages, f"train_N{size}_{row}", shards, run, args, extra)
        rows[row].update(evaluate(stages, f"eval_N{size}_{row}", run / "export" / "embedding.keras", pairs,
                                  test_dir, base / f"eval_{row}.json"))
    return entry


def format_tables(results):
    """Markdown: one table per N, then the command and the measured CPU conditions."""
    from benchmarks.conditions import describe_conditions

    s = results["settings"]
    lines = ["# Own photos: N of LFW's DevTest people, half of each person's photos to train, pairs of the "
             "other half to test", "",
             f"Starter model: `{s['starter']}` (LFW DevTrain people only). Trainings: {s['steps']} steps of batch "
             f"{s['batch_size']}, AM-Softmax (train.py's defaults); fine-tuning freezes the backbone for "
             f"{s['freeze_backbone_steps']} steps. Accuracy: mean ± std over identity-disjoint folds, each "
             f"fold's threshold chosen on the others. TAR @ FAR 1e-2 at the threshold chosen on all pairs "
             f"(cosine in brackets).", ""]
    for size, entry in results["sizes"].items():
        p = entry["pairs"]
        lines += [f"## {size} people", "",
                  f"{entry['train_images']} training photos, {entry['test_images']} test photos; {p['num_pairs']} "
                  f"test pairs in {p['folds']} folds of {p['pairs_per_fold']} same + {p['pairs_per_fold']} "
                  f"different, no person in two folds (made by {p['made_by']}).", "",
                  f"| model | accuracy ({p['folds']} folds) | AUC | TAR @ FAR 1e-2 (threshold) | steps | train time |",
                  "|---|---|---|---|---|---|"]
        for row in ROWS:
            r = entry["rows"].get(row)
            if r is None:
                continue
            if r["far_1e-2_resolvable"]:
                tar = (f"{100 * r['tar_far_1e-2']:.1f} % at FAR {100 * r['far_1e-2']:.1f} % "
                       f"({r['threshold_cosine_far_1e-2']:.3f})")
            else:
                tar = f"not measurable ({r['num_different']} different pairs)"
            time_text = (f"{r['train_seconds']:.0f} s of steps ({r['images_per_sec']:.0f} img/s), "
                         f"{r['stage_wall_seconds']:.0f} s in all" if row != "starter" else "—")
            lines.append(f"| {ROW_NAMES[row]} | {100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} % | "
                         f"{r['auc']:.3f} | {tar} | {r['steps'] or '—'} | {time_text} |")
        lines.append("")
    trainings = [c for entry in results["sizes"].values() for row in ("fine_tuned", "scratch")
                 for c in (entry["rows"].get(row, {}).get("conditions") or [])]
    lines += [f"Command: `{results['command']}`", "",
              f"CPU: {results['cpu']}. {describe_conditions(trainings, 'the trainings') if trainings else ''}"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    from benchmarks.export_formats import cpu_tag
    from fileio import write_json_atomic, write_text_atomic
    from recipes.lfw_view1 import Stages, code_version
    from training.hardware import cpu_description

    people_file = Path(args.lfw_dir) / "peopleDevTest.txt"
    if not people_file.is_file():
        raise SystemExit(f"{people_file} is missing: --lfw-dir must be the original LFW folder (its protocol files)")
    if not Path(args.aligned_dir).is_dir():
        raise SystemExit(f"--aligned-dir {args.aligned_dir} is not a folder: align LFW first "
                         "(python align/align_lfw.py --input-dir LFW/images --output-dir data/lfw_aligned)")
    work = Path(args.work_dir).resolve()
    output = Path(args.output_dir or REPO / "benchmarks" / "results" / f"own_photos_{cpu_tag()}")
    settings = {k: v for k, v in vars(args).items() if k not in ("output_dir", "sizes", "work_dir")}
    recorded = work / "settings.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != settings:
        raise SystemExit(f"{work} holds runs made with other settings ({recorded}): give another --work-dir")
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(recorded, settings, indent=2)

    people = devtest_people(people_file, args.aligned_dir, args.min_images)
    print(f"{len(people)} DevTest people have >= {args.min_images} aligned photos", flush=True)
    stages = Stages(work)
    results = {"command": "python -m benchmarks.own_photos " + shlex.join(argv if argv is not None else sys.argv[1:]),
               "code": code_version(), "cpu": cpu_description(), "settings": {**settings, "sizes": args.sizes},
               "eligible_people": len(people), "sizes": {}}
    for size in args.sizes:
        results["sizes"][str(size)] = run_size(stages, args, people, size, work)
        results["stage_code"] = stages.code   # the code each stage ran under (a rerun reuses finished stages)
        output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output / "results.json", results, indent=2)
        write_text_atomic(output / "results.md", format_tables(results))
        print(format_tables({**results, "sizes": {str(size): results["sizes"][str(size)]}}), flush=True)
    print(f"wrote {output / 'results.json'} and {output / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
