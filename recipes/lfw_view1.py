#!/usr/bin/env python3
"""LFW View 1, end to end on one machine: align -> TFRecords (peopleDevTrain only) -> train (one
run per --losses entry, each under the same wall-time budget) -> evaluate each on pairsDevTest.txt
(identities disjoint from DevTrain) and pairs.txt (View 2), then print the results table.

    python -m recipes.lfw_view1 --lfw-dir ../shared/data/lfw --work-dir data/lfw_view1

The defaults are the recipe the README's LFW View 1 section measured best for a 2-core CPU
(MobileFaceNet, 512-d, AM-Softmax, batch 128, cosine lr from 0.2); recipes/lfw_levers.py puts
runs that change one setting each into one table.

Every stage runs the user's own command (printed, with its log in WORK/logs/) and is timed
(WORK/logs/stage_seconds.json). A stage whose output already exists is not redone (results.json
lists it under "cached" and the table keeps its recorded time), so an interrupted run
continues where it stopped; training continues from its last checkpoint, with the same schedule
(WORK/schedule.json) and a fresh --time-limit for the resumed part. Outputs:
WORK/results.json, WORK/results.md (the table), WORK/learning_curves.png (both runs) and each
run's own RUN/learning_curves.png.

Before training, the training identities are checked against pairsDevTest.txt (the script stops
on any overlap) and the overlap with pairs.txt is counted (View 2 spans all LFW people, so a
DevTrain model has seen some of its identities: that row is reported, but it is not a clean test).
"""

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.conditions import describe_conditions, run_measured
from fileio import write_json_atomic, write_text_atomic
from training.hardware import cpu_description  # no TensorFlow: --help stays instant

REPO = Path(__file__).resolve().parents[1]



def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lfw-dir", default=str(REPO.parent / "shared" / "data" / "lfw"),
                   help="original LFW: images/ plus pairs.txt, pairsDevTest.txt, peopleDevTrain.txt (default: %(default)s)")
    p.add_argument("--work-dir", default="data/lfw_view1", help="shards, runs, logs and results (default: %(default)s)")
    p.add_argument("--aligned-dir", help="aligned crops (default: WORK/aligned; an existing complete folder is reused)")
    p.add_argument("--image-size", default="112x96", metavar="HxW",
                   help="crop size, for align_lfw.py and so for the shards and the model: 112x96 (default; "
                        "SphereFace/CosFace's crop) or 112x112 (insightface's: the same face with 8 px more on "
                        "each side). A folder aligned at another size is refused: give this size its own --aligned-dir")
    p.add_argument("--losses", nargs="+", default=["am_softmax"],
                   help="one training run per loss, each under --train-minutes (default: %(default)s; "
                        "'am_softmax arcface' compares the two)")
    p.add_argument("--train-minutes", type=float, default=60.0,
                   help="wall-time budget of each training run, start-up and validation included (default: %(default)s)")
    p.add_argument("--images-per-sec", type=float,
                   help="training speed used to size the lr schedule to the budget; default: measured by a "
                        "short calibration run (its time is in the table)")
    p.add_argument("--max-steps", type=int, help="fix the schedule length instead of sizing it to the budget")
    p.add_argument("--backbone", default="mobilefacenet", help="default: %(default)s")
    p.add_argument("--backbones", nargs="+", metavar="NAME[:KEY=VALUE,...][@PRECISION]",
                   help="one run per backbone (and per loss) instead of --backbone, each with its own speed "
                        "calibration and the same --train-minutes, e.g. resface20@bfloat16 "
                        "resface20:batch_norm=false@bfloat16 mobilefacenet")
    p.add_argument("--embedding-size", type=int, default=512,
                   help="default: %(default)s (train.py's; in the README's 60-minute runs 512-d matched 128-d's "
                        "accuracy with a higher AUC on both seeds)")
    p.add_argument("--lr-schedule", default="cosine",
                   help="train.py --lr-schedule: cosine (default) or reference (train.py's own default)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="default: %(default)s (in the README's 60-minute runs, batch 128 at lr 0.2 gave the same "
                        "AUC as 64 at 0.1 and the highest two-seed mean on pairsDevTest; same images/s on a CPU)")
    p.add_argument("--lr", type=float, default=0.2,
                   help="peak lr (default: %(default)s, i.e. 0.1 per 64 images of batch; train.py's own default "
                        "is 0.1 x batch / 256)")
    p.add_argument("--warmup-steps", type=int, default=50, help="default: %(default)s")
    p.add_argument("--min-images", type=int, default=2,
                   help="DevTrain identities with fewer images are left out of the shards (default: %(default)s)")
    p.add_argument("--val-identities", default="40",
                   help="DevTrain identities held out for validation / best-model choice (default: %(default)s)")
    p.add_argument("--validations", type=int, default=6, help="held-out validations per run (default: %(default)s)")
    p.add_argument("--align-workers", type=int, default=2, help="default: %(default)s")
    p.add_argument("--seed", type=int, default=0, help="train.py --seed (default: %(default)s)")
    # The recipe's augmentation: AUC +0.009 and +0.013 over flips alone with two seeds, and it lets the
    # 60-minute budget pay (README, LFW View 1).
    for name, unit, default in (("scale", "X", 0.1), ("shift", "X", 0.05), ("rotate", "DEG", 8.0), ("color", "X", 0.2)):
        p.add_argument(f"--augment-{name}", type=float, default=default, metavar=unit,
                       help=f"train.py --augment-{name} (default: %(default)s; 0 = off)")
    p.add_argument("--eval-pairs", nargs="+", default=["pairsDevTest", "pairs"],
                   help="LFW pairs files (stems) to evaluate each run on (default: %(default)s)")
    p.add_argument("--extra-train-args", default="", help="appended to every train.py command, e.g. '--focal 2'")
    return p.parse_args(argv)


def code_version():
    """"ffea78b", or "ffea78b+changes" when tracked files differ from that commit: the code a stage ran,
    so that runs of equal settings made by different code are told apart. None outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    try:
        commit, changes = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if changes else "")


class Stages:
    """Runs commands with a log file each and keeps every stage's wall time and code version."""

    def __init__(self, work):
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # Kept across invocations, so a rerun that reuses a stage still reports what it took and
        # which code ran it (a resumed training lists each version it ran under).
        self.record = self.logs / "stage_seconds.json"
        self.seconds = json.loads(self.record.read_text()) if self.record.is_file() else {}
        self.code_record = self.logs / "stage_code.json"
        self.code = json.loads(self.code_record.read_text()) if self.code_record.is_file() else {}
        # CPU time, wall time and load averages of each stage (benchmarks/conditions.py), kept likewise
        self.conditions_record = self.logs / "stage_conditions.json"
        self.conditions = (json.loads(self.conditions_record.read_text())
                           if self.conditions_record.is_file() else {})
        self.version = code_version()

    def run(self, name, args, tolerated=()):
        """Run ``args``; an exit code in ``tolerated`` is returned instead of stopping the script."""
        log = self.logs / f"{name}.log"
        shown = " ".join(str(a) for a in args).replace(str(REPO) + "/", "")
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {shown}\n    log: {log}", flush=True)
        versions = self.code.setdefault(name, [])
        if not versions or versions[-1] != self.version:
            versions.append(self.version)
            write_json_atomic(self.code_record, self.code)
        with open(log, "w") as f:
            code, conditions = run_measured([str(a) for a in args], stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.seconds[name] = conditions["wall_seconds"]
        write_json_atomic(self.record, self.seconds)
        # a resumed training keeps each invocation's conditions
        self.conditions.setdefault(name, []).append(conditions)
        write_json_atomic(self.conditions_record, self.conditions)
        print(f"    {name}: exit {code} after {self.seconds[name]:.0f} s", flush=True)
        if code != 0 and code not in tolerated:
            tail = log.read_text(errors="replace")[-1500:]
            raise SystemExit(f"{name} failed (exit {code}); the end of {log}:\n{tail}")
        return code


def head_settings(loss, run_dir=None):
    """"s=30, m=0.35": the options the head trained with: the published ones (losses.registry.HEADS), overridden
    by those the run's config.json records (e.g. --extra-train-args "--m 0.25")."""
    from losses.registry import HEADS
    options = dict(HEADS[loss].defaults)
    config = Path(run_dir) / "config.json" if run_dir else None
    if config and config.is_file():
        options.update({k: v for k, v in json.loads(config.read_text()).get("head_options", {}).items()
                        if v is not None})
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in options.items()) or "plain"


def augment_args(args):
    """train.py's --augment-* flags for the nonzero ones (none: flips only, as train.py's default)."""
    return [item for name in ("scale", "shift", "rotate", "color") if getattr(args, f"augment_{name}")
            for item in (f"--augment-{name}", getattr(args, f"augment_{name}"))]


def parse_backbone_spec(spec):
    """"resface20:batch_norm=false@bfloat16" -> ("resface20", ["batch_norm=false"], "bfloat16")."""
    spec, _, precision = spec.partition("@")
    name, _, options = spec.partition(":")
    return name, [o for o in options.split(",") if o], precision or "off"


def lfw_identities(pairs_file):
    from evaluation import read_pairs
    pairs = read_pairs(pairs_file)
    return {p.split("/")[0] for p in pairs.unique_paths()}


def check_identities(shards, lfw):
    """Training (and held-out) identities vs the test pairs: none may be in pairsDevTest."""
    from tfrecords.manifest import read_manifest
    manifest = read_manifest(shards)
    trained = set(manifest["labels"])
    if (shards / "val_pairs.txt").is_file():
        trained |= lfw_identities(shards / "val_pairs.txt")
    shared_devtest = trained & lfw_identities(lfw / "pairsDevTest.txt")
    if shared_devtest:
        raise SystemExit(f"{len(shared_devtest)} training identities appear in pairsDevTest.txt, e.g. "
                         f"{sorted(shared_devtest)[:5]}: the View 1 test would not be identity-disjoint")
    view2 = lfw_identities(lfw / "pairs.txt")
    return {"train_identities": len(manifest["labels"]), "train_images": manifest["num_images"],
            "image_size": "x".join(str(v) for v in manifest["image_size"]),
            "devtest_shared_identities": 0, "view2_identities": len(view2),
            "view2_shared_identities": len(trained & view2)}


def read_jsonl(path):
    """The JSON lines of ``path`` ([] if it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def read_summaries(run):
    return read_jsonl(run / "train_summary.jsonl")


@dataclasses.dataclass
class Bench:
    """What every stage of one benchmark invocation shares."""
    args: argparse.Namespace
    lfw: Path                 # the original LFW: images/ and the protocol files
    work: Path                # --work-dir: aligned/, shards/, runs/, results/, logs/
    aligned: Path
    shards: Path
    stages: "Stages"
    cached: set               # stages a rerun found done and skipped
    results: dict             # -> results.json


def main(argv=None):
    args = parse_args(argv)
    lfw, work = Path(args.lfw_dir).resolve(), Path(args.work_dir).resolve()
    for needed in ("images", "pairs.txt", "pairsDevTest.txt", "peopleDevTrain.txt"):
        if not (lfw / needed).exists():
            raise SystemExit(f"{lfw / needed} is missing: --lfw-dir must be the original LFW folder "
                             "(images/ and the protocol files)")
    bench = Bench(args, lfw, work, Path(args.aligned_dir).resolve() if args.aligned_dir else work / "aligned",
                  work / "shards", Stages(work), set(),
                  {"command": "python -m recipes.lfw_view1 " + shlex.join(argv or sys.argv[1:]),   # quoted: it can be pasted
                   "settings": vars(args), "stages": {}, "runs": {}, "cpu": cpu_description()})
    align_and_build(bench)
    # One run per backbone and loss, each under the same budget, each evaluated. With a single
    # --backbone the runs are named by loss alone (runs/am_softmax, ...), as before.
    run_dirs = {}
    for spec in args.backbones or [args.backbone]:
        name, options, precision = parse_backbone_spec(spec)
        tag = "" if args.backbones is None else spec.replace(":", "-").replace("=", "-").replace(",", "-").replace("@", "-")
        common = ["--data", bench.shards, "--backbone", name, "--embedding-size", args.embedding_size,
                  "--batch-size", args.batch_size, "--mixed-precision", precision, "--seed", args.seed,
                  *augment_args(args)]
        for option in options:
            common += ["--backbone-option", option]
        schedule = schedule_for(bench, spec, tag, common)
        for loss in args.losses:
            key = f"{tag}-{loss}" if tag else loss
            run_dirs[key] = bench.work / "runs" / key
            entry = {"backbone": spec, "loss": loss, "precision": precision}
            bench.results["runs"][key] = train_and_evaluate(bench, key, common + ["--loss", loss], schedule, entry)
            entry["heads"] = head_settings(loss, run_dirs[key])   # what it trained with: its config.json

    from training.curves import plot_learning_curves
    curves = plot_learning_curves({key: run for key, run in run_dirs.items() if (run / "logs").is_dir()},
                                  work / "learning_curves.png")
    results = bench.results
    results["stages"] = {name: round(sec, 1) for name, sec in bench.stages.seconds.items()}
    results["cached"] = sorted(bench.cached)
    table = format_table(results)
    write_json_atomic(work / "results.json", results, indent=2)
    write_text_atomic(work / "results.md", table + "\n")
    print("\n" + table)
    print(f"\nwrote {work / 'results.json'}, {work / 'results.md'}, {curves}")
    return 0


def align_and_build(bench):
    """Align every LFW image (resumable), then shards from View 1 DevTrain identities only."""
    args, lfw, py = bench.args, bench.lfw, sys.executable
    bench.stages.run("align", [py, REPO / "align/align_lfw.py", "--input-dir", lfw / "images",
                               "--output-dir", bench.aligned, "--image-size", args.image_size, "--fallback", "center",
                               "--workers", args.align_workers])
    align_summary = json.loads((bench.aligned / "align_summary.json").read_text())
    bench.results["align"] = {k: align_summary[k] for k in ("files", "aligned", "fallback", "failed",
                                                            "processed_this_run", "skipped_already_done")}
    if (bench.shards / "manifest.json").is_file():
        bench.cached.add("build")
    else:
        bench.stages.run("build", [py, "-m", "tfrecords.build", "--input-dir", bench.aligned,
                                   "--output-dir", bench.shards, "--people", lfw / "peopleDevTrain.txt",
                                   "--min-images", args.min_images, "--val-identities", args.val_identities,
                                   "--val-pairs", 1000, "--no-progress"])
    d = bench.results["data"] = check_identities(bench.shards, lfw)
    print(f"data: {d['train_images']} images of {d['train_identities']} DevTrain identities; 0 shared with "
          f"pairsDevTest; {d['view2_shared_identities']} of the {d['view2_identities']} pairs.txt identities "
          "were seen in training or validation", flush=True)


def schedule_for(bench, spec, tag, common):
    """The run length for one backbone spec, sized once and kept in schedule[-TAG].json: a rerun
    that resumes an interrupted training must pass the same --max-steps, or its lr schedule would change."""
    schedule_file = bench.work / (f"schedule-{tag}.json" if tag else "schedule.json")
    calibrate = f"calibrate-{tag}" if tag else "calibrate"
    if schedule_file.is_file():
        schedule = json.loads(schedule_file.read_text())
        bench.cached.add(calibrate)
    else:
        schedule = plan_schedule(bench.args, bench.stages, common, bench.work / "runs" / calibrate, calibrate)
        # Atomic: a resumed run reads it back for its --max-steps, so it must never be half-written.
        write_json_atomic(schedule_file, schedule)
    bench.results.setdefault("schedules", {})[tag or "all"] = schedule
    bench.results["schedule"] = schedule
    speed = schedule["calibrated_images_per_sec"]
    sized = (f"{speed:.1f} img/s -> {schedule['max_steps']} steps of {bench.args.batch_size} in "
             f"{bench.args.train_minutes:g} min" if speed else
             f"{schedule['max_steps']} steps of {bench.args.batch_size} (--max-steps; the time limit stays "
             f"{bench.args.train_minutes:g} min)")
    print(f"schedule {spec}: {sized}", flush=True)
    return schedule


def train_and_evaluate(bench, key, common, schedule, entry):
    """Train runs/KEY under the schedule (resuming an interrupted run, skipping a finished one), then
    evaluate it on each --eval-pairs file. -> the run's entry for results.json."""
    args, py, run = bench.args, sys.executable, bench.work / "runs" / key
    train_args = [py, REPO / "train.py", *common, "--lr-schedule", args.lr_schedule,
                  *(["--lr", args.lr] if args.lr is not None else []),
                  "--warmup-steps", args.warmup_steps, "--max-steps", schedule["max_steps"],
                  "--time-limit", args.train_minutes, "--val-every", schedule["val_every"],
                  "--checkpoint-every", schedule["val_every"], "--log-every", 10, "--output-dir", run,
                  *args.extra_train_args.split()]
    entry["command"] = " ".join(str(a) for a in train_args[1:]).replace(str(REPO) + "/", "")
    summaries = read_summaries(run)
    guard_log = bench.stages.logs / f"train_{key}.log"
    if summaries and (summaries[-1]["last_step"] == summaries[-1]["steps"] or summaries[-1]["time_limited"]) or not summaries and guard_log.is_file() and guard_stop(guard_log):
        bench.cached.add(f"train_{key}")
    else:
        if summaries or (run / "checkpoints" / "checkpoint").is_file():
            train_args.append("--resume")
        # Exit 1 is the collapse guard (or a divergence): a result to report, not a crash.
        bench.stages.run(f"train_{key}", train_args, tolerated=(1,))
        summaries = read_summaries(run)
    stopped = guard_stop(guard_log) if not summaries else None
    if stopped:
        entry.update(guard_stopped=stopped, steps=stopped_step(run),
                     train_wall_seconds=bench.stages.seconds.get(f"train_{key}"))
        return entry
    s = summaries[-1]
    entry["code"] = bench.stages.code.get(f"train_{key}")   # None for a run trained before it was recorded
    entry["conditions"] = bench.stages.conditions.get(f"train_{key}")   # likewise
    heldout = [e for e in read_jsonl(run / "train_log.jsonl") if e.get("validation") == "heldout"]
    entry.update({"steps": s["last_step"], "planned_steps": s["steps"], "time_limited": s["time_limited"],
                  "images_seen": s["last_step"] * s["global_batch"],
                  "epochs": s["last_step"] * s["global_batch"] / bench.results["data"]["train_images"],
                  "train_wall_seconds": sum(x["wall_seconds"] for x in summaries),
                  "images_per_sec": s["images_per_sec"],
                  "final_train_loss": s["final_loss"],
                  "heldout_curve": [(e["step"], e["accuracy_mean"]) for e in heldout]})
    # best.keras holds the last step an invocation chose (a resumed run's may come from an earlier one).
    selected_step = next((x["best_validation_step"] for x in reversed(summaries) if x.get("best_validation_step")), None)
    chosen = [e for e in heldout if e["step"] == selected_step]
    entry["selected_step"] = selected_step
    entry["selected_heldout_accuracy"] = chosen[0]["accuracy_mean"] if chosen else None
    # Both models are reported: the final one, and best.keras (training/validation.py's rule).
    # best.keras exported at the last step holds the final weights: its evaluation is the final model's.
    entry["selected_is_final"] = selected_step == entry["steps"]
    for pairs in args.eval_pairs:
        for model, suffix in (("embedding.keras", ""), ("best.keras", "_selected")):
            if suffix and not (run / "export" / model).is_file():
                continue
            if suffix and entry["selected_is_final"]:
                entry[pairs + suffix] = entry[pairs]
                continue
            out = bench.work / "results" / f"{key}_{pairs}{suffix}.json"
            if out.is_file():
                bench.cached.add(f"eval_{key}_{pairs}{suffix}")
            else:
                bench.stages.run(f"eval_{key}_{pairs}{suffix}",
                                 [py, REPO / "evaluate.py", "--model", run / "export" / model, "--lfw-pairs",
                                  bench.lfw / f"{pairs}.txt", "--lfw-dir", bench.aligned, "--output", out,
                                  "--no-progress"])
            r = json.loads(out.read_text())
            entry[pairs + suffix] = {k: r[k] for k in ("accuracy_mean", "accuracy_std", "val", "val_std", "far",
                                                       "auc", "eer", "num_pairs", "embed_seconds",
                                                       "images_per_second")}
    return entry


def guard_stop(log):
    """The collapse guard's (or divergence) message in a train.py log, or None."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("error: ") and any(w in line for w in ("collapsed", "stuck", "became")):
            return line[len("error: "):]
    return None


def stopped_step(run):
    """The last logged step of a run the guard stopped."""
    steps = [e["step"] for e in read_jsonl(run / "train_log.jsonl") if "step" in e]
    return max(steps) if steps else 0


def plan_schedule(args, stages, common, calib, name="calibrate"):
    """{calibrated_images_per_sec, max_steps, val_every}: the cosine schedule's length, sized so that
    it ends inside --train-minutes at the speed a short calibration run measures."""
    ips = args.images_per_sec
    if ips is None and args.max_steps is None:
        stages.run(name, [sys.executable, REPO / "train.py", *common, "--loss", args.losses[0],
                                 "--max-steps", 30, "--lr-schedule", "constant", "--lr", 0.01, "--log-every", 10,
                                 "--val-every", 1000, "--output-dir", calib])
        # The last 10 of 30 steps only: a process starts slow (MobileFaceNet, batch 64, 2 cores:
        # 13.8 img/s over steps 2-10, 16.0 over 11-20, 17.4 over 21-30, 18.2 over a 577-step run),
        # and a 16-step average sized the first published schedule ~20 % short of its budget.
        windows = read_jsonl(calib / "train_log.jsonl")
        ips = [w for w in windows if "images_per_sec" in w][-1]["images_per_sec"]
    # Start-up (~0.5 min), validations and the final export come out of the budget; 8 % slack
    # absorbs the speed drift of a shared machine. --time-limit is the hard stop either way.
    usable = 60 * args.train_minutes - 60 - 20 * args.validations
    max_steps = args.max_steps or int(0.92 * usable * ips / args.batch_size)
    if max_steps < 1:
        raise SystemExit(f"--train-minutes {args.train_minutes:g} leaves no time to train after start-up and "
                         f"{args.validations} validations: give more minutes or --max-steps")
    val_every = max(-(-max_steps // args.validations), 1)   # ceil: the last validation is the final step
    return {"calibrated_images_per_sec": ips, "max_steps": max_steps, "val_every": val_every}


def format_table(results):
    def stage(name):
        sec = results["stages"].get(name)
        return "-" if sec is None else f"{sec / 60:.1f} min"

    def pct(x):
        return f"{100 * x:.2f}"

    d = results["data"]
    def sized(s):   # a run given --max-steps has no calibrated speed: say so instead of "nan img/s"
        speed = s["calibrated_images_per_sec"]
        return f"{speed:.1f} img/s -> {s['max_steps']} steps" if speed else f"--max-steps {s['max_steps']}"
    calibrations = ", ".join(f"{tag if tag != 'all' else ''} {sized(s)}".strip()
                             for tag, s in results["schedules"].items())
    calib_time = sum(sec for name, sec in results["stages"].items() if name.startswith("calibrate"))
    pairs_names = [p for p in ("pairsDevTest", "pairs") if any(p in r for r in results["runs"].values())]
    header = {"pairsDevTest": "pairsDevTest acc", "pairs": "pairs.txt acc (overlap)"}
    lines = [
        f"Data: {d['train_images']} images ({d.get('image_size', '112x96')}) of {d['train_identities']} LFW "
        "peopleDevTrain identities "
        f"(+ held-out validation identities); none in pairsDevTest.txt; {d['view2_shared_identities']} of "
        f"pairs.txt's {d['view2_identities']} identities seen in training or validation.",
        f"Stages: align {stage('align')} ({results['align']['aligned']} aligned, {results['align']['fallback']} "
        f"centre fallback, {results['align']['failed']} failed; {results['align']['skipped_already_done']} were "
        f"already aligned by an earlier run), build {stage('build')}, calibrate {calib_time / 60:.1f} min "
        f"({calibrations} planned). CPU: {results.get('cpu', '?')}. "
        + describe_conditions([c for r in results["runs"].values() for c in (r.get("conditions") or [None])]),
        "",
        "| run | precision | steps (epochs) | train time | train img/s | held-out acc: final / best.keras (step) | "
        + " | ".join(f"{header[p]} (final model) | VAL@FAR1e-3 | AUC" for p in pairs_names)
        + " | pairsDevTest acc, best.keras | eval time |",
        "|---|---|---:|---:|---:|---:|" + "---:|---:|---:|" * len(pairs_names) + "---:|---:|",
    ]
    for key, r in results["runs"].items():
        name = f"{r['loss']} ({r['heads']})" if key == r["loss"] else f"{r['backbone'].split('@')[0]} + {r['loss']}"
        if r.get("guard_stopped"):
            lines.append(f"| {name} | {r['precision']} | {r['steps']} | {(r['train_wall_seconds'] or 0) / 60:.1f} min "
                         f"| - | - | " + " | ".join("- | - | -" for _ in pairs_names) + " | -"
                         + f" | stopped by the collapse guard: {r['guard_stopped'].split(':')[0]} |")
            continue
        curve = r.get("heldout_curve") or []
        final = pct(curve[-1][1]) + " %" if curve else "-"
        best = ("-" if r.get("selected_heldout_accuracy") is None else
                f"{pct(r['selected_heldout_accuracy'])} % ({r['selected_step']})")
        selected = r.get("pairsDevTest_selected")
        selected = "-" if not selected else f"{pct(selected['accuracy_mean'])} ± {pct(selected['accuracy_std'])} %"
        stopped = " (time limit)" if r["time_limited"] else ""
        cells = []
        for p in pairs_names:
            e = r[p]
            acc = f"{pct(e['accuracy_mean'])} ± {pct(e['accuracy_std'])} %"
            cells.append(f"{'**' + acc + '**' if p == 'pairsDevTest' else acc} | {pct(e['val'])} % @ {e['far']:.4f} "
                         f"| {e['auc']:.4f}")
        lines.append(
            f"| {name} | {r['precision']} | {r['steps']}{stopped} ({r['epochs']:.1f}) | "
            f"{r['train_wall_seconds'] / 60:.1f} min | {r['images_per_sec']:.1f} | {final} / {best} | "
            + " | ".join(cells) + f" | {selected} | "
            + " / ".join(stage(f"eval_{key}_{p}") for p in pairs_names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
