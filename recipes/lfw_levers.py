#!/usr/bin/env python3
"""One table of LFW View 1 runs that each change one setting of a baseline run, read from each
work folder's results.json (written by recipes.lfw_view1):

    python -m recipes.lfw_levers --baseline data/lfw_view1_fused \\
        data/levers/min_images_1 data/levers/augment --output benchmarks/results/lfw_levers

The "changed" column is computed, not typed: the settings (and the train.py command's flags) that
differ from the baseline's. Deltas are in accuracy points on pairsDevTest (identity-disjoint), for
the final model and for best.keras. The same CPU and budget must hold for the deltas to mean
anything, so the table shows each run's steps, img/s and CPU. Runs that differ from each other only
in --seed also get a row of their mean in a second table, because one seed cannot resolve effects
smaller than the seed spread.
"""

import argparse
import json
import shlex
import sys
from pathlib import Path

from benchmarks.conditions import describe_conditions
from fileio import write_json_atomic, write_text_atomic
from recipes.lfw_view1 import parse_args as view1_args

# Settings that say where files are, not how the model trains; and the two that only size the
# schedule (a lever run given the baseline's step count by --max-steps trains the same length: the
# steps column shows it).
_PLACES = {"lfw_dir", "work_dir", "aligned_dir", "align_workers", "eval_pairs", "max_steps", "images_per_sec"}


def read_results(work):
    path = Path(work) / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `python -m recipes.lfw_view1 --work-dir {work} ...` first")
    results = json.loads(path.read_text())
    if len(results["runs"]) != 1:
        raise SystemExit(f"{path} holds {len(results['runs'])} runs; a lever table compares one run per folder "
                         "(pass --losses with one loss)")
    return results


def train_flags(command):
    """{flag: value} of a train.py command line (paths and run-specific flags left out)."""
    words = command.split()[1:]
    flags, key = {}, None
    for word in words:
        if word.startswith("--"):
            key = word[2:]
            flags[key] = True
        elif key is not None:
            flags[key] = word if flags[key] is True else f"{flags[key]} {word}"
    for dropped in ("data", "output-dir", "time-limit", "max-steps", "val-every", "checkpoint-every"):
        flags.pop(dropped, None)
    return flags


def changed_settings(results, baseline, ignore=()):
    """"min_images 2 -> 1; --augment-scale 0.1": what differs from the baseline's benchmark settings and
    train.py flags (a setting that reaches train.py as a flag is named once, as the flag). Settings
    named in `ignore` ("seed") are left out of the comparison."""
    flags_a = {"seed": "0", **train_flags(next(iter(baseline["runs"].values()))["command"])}
    flags_b = {"seed": "0", **train_flags(next(iter(results["runs"].values()))["command"])}
    # A setting a results.json predates has the benchmark's default value (as its run used).
    defaults = vars(view1_args([]))
    a, b = {**defaults, **baseline["settings"]}, {**defaults, **results["settings"]}
    for name in ignore:
        for settings in (flags_a, flags_b, a, b):
            settings.pop(name, None)
    as_flags = {k for k in set(a) | set(b) if k.replace("_", "-") in flags_a.keys() | flags_b.keys()}
    out = [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted((set(a) | set(b)) - _PLACES - as_flags - {"extra_train_args"})
           if a.get(k) != b.get(k)]
    for k in sorted(flags_a.keys() | flags_b.keys()):
        if flags_a.get(k) == flags_b.get(k):
            continue
        if k in flags_a and k in flags_b:
            out.append(f"--{k} {flags_a[k]} -> {flags_b[k]}")
        else:
            out.append(f"--{k} {flags_b[k]}" if k in flags_b else f"no --{k}")
    # The code that trained each (recipes.lfw_view1 records it; older results.json files do not).
    code_a, code_b = (next(iter(r["runs"].values())).get("code") for r in (baseline, results))
    if code_a and code_b and code_a != code_b:
        out.append(f"code {'/'.join(map(str, code_a))} -> {'/'.join(map(str, code_b))}")
    return "; ".join(out) or "(baseline)"


def accuracy_delta(now, then):
    """"+1.10": the difference of two accuracies (fractions) in points, signed, as the tables print it."""
    return f"{100 * (now - then):+.2f}"


def lever_row(work, results, baseline):
    run = next(iter(results["runs"].values()))
    base = next(iter(baseline["runs"].values()))
    final, selected = run["pairsDevTest"], run.get("pairsDevTest_selected") or run["pairsDevTest"]
    curve = run.get("heldout_curve") or [[None, float("nan")]]
    changed = changed_settings(results, baseline)
    if changed == "(baseline)" and results is not baseline:
        # Nothing recorded tells them apart (e.g. results.json files that predate the code version).
        changed = "(the baseline's settings, another run)"
    return {
        "work_dir": str(work), "changed": changed,
        "setting": changed_settings(results, baseline, ignore=("seed",)),
        "seed": int(train_flags(run["command"]).get("seed", results["settings"].get("seed", 0))),
        "steps": run["steps"], "time_limited": run["time_limited"], "epochs": run["epochs"],
        "train_minutes": run["train_wall_seconds"] / 60, "images_per_sec": run["images_per_sec"],
        "heldout_final": curve[-1][1], "heldout_selected": run.get("selected_heldout_accuracy"),
        "selected_step": run.get("selected_step"),
        "final": final, "selected": selected,
        "delta_final": accuracy_delta(final["accuracy_mean"], base["pairsDevTest"]["accuracy_mean"]),
        "delta_selected": accuracy_delta(selected["accuracy_mean"],
                                         (base.get("pairsDevTest_selected") or base["pairsDevTest"])["accuracy_mean"]),
        "cpu": results.get("cpu", "?"), "command": results["command"],
        "conditions": run.get("conditions") or [None],   # per training invocation (benchmarks/conditions.py)
    }


def seed_means(rows):
    """One entry per setting that was run with two or more seeds (rows whose "setting" is equal): the
    mean pairsDevTest accuracy (final model and best.keras) and AUC over its seeds, the spread
    (max - min accuracy, points) and the mean's delta against the baseline setting's own mean.
    A setting with a seed twice gets no entry: nothing recorded tells those runs apart, so a mean
    over them would not be a mean over seeds."""
    groups = {}
    for r in rows:
        groups.setdefault(r["setting"], []).append(r)

    def mean(group, key, field):
        return sum(r[key][field] for r in group) / len(group)

    base = groups[rows[0]["setting"]]
    if len({r["seed"] for r in base}) < len(base):
        base = rows[:1]
    base_accuracy = mean(base, "final", "accuracy_mean")
    means = []
    for setting, group in groups.items():
        seeds = [r["seed"] for r in group]
        if len(group) < 2 or len(set(seeds)) < len(seeds):
            continue
        accuracies = [r["final"]["accuracy_mean"] for r in group]
        final_accuracy = mean(group, "final", "accuracy_mean")
        means.append({
            "setting": setting, "seeds": [r["seed"] for r in group], "work_dirs": [r["work_dir"] for r in group],
            "final_accuracy": final_accuracy, "selected_accuracy": mean(group, "selected", "accuracy_mean"),
            "auc": mean(group, "final", "auc"), "spread": 100 * (max(accuracies) - min(accuracies)),
            "delta_final": accuracy_delta(final_accuracy, base_accuracy),
            "baseline_seeds": len(base),
        })
    return means


def format_seed_means(means):
    lines = ["| same setting, several seeds | seeds | **pairsDevTest, final: mean** | spread | Δ (vs the baseline's mean) | "
             "AUC: mean | pairsDevTest, best.keras: mean |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for m in means:
        lines.append(f"| {m['setting']} | {', '.join(map(str, m['seeds']))} | **{100 * m['final_accuracy']:.2f} %** | "
                     f"{m['spread']:.2f} | {m['delta_final']} (baseline: {m['baseline_seeds']} "
                     f"seed{'s' if m['baseline_seeds'] > 1 else ''}) | {m['auc']:.4f} | "
                     f"{100 * m['selected_accuracy']:.2f} % |")
    return "\n".join(lines)


def format_lever_table(rows, means=()):
    def acc(e):
        return f"{100 * e['accuracy_mean']:.2f} ± {100 * e['accuracy_std']:.2f} %"

    lines = ["| changed from the baseline | steps (epochs) | train time | img/s | held-out: final / best (step) | "
             "**pairsDevTest, final** | Δ | AUC | pairsDevTest, best.keras | Δ |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        limited = " (time limit)" if r["time_limited"] else ""
        best = "-" if r["heldout_selected"] is None else f"{100 * r['heldout_selected']:.1f} % ({r['selected_step']})"
        lines.append(f"| {r['changed']} | {r['steps']}{limited} ({r['epochs']:.1f}) | {r['train_minutes']:.1f} min | "
                     f"{r['images_per_sec']:.1f} | {100 * r['heldout_final']:.1f} % / {best} | **{acc(r['final'])}** | "
                     f"{r['delta_final']} | {r['final']['auc']:.4f} | {acc(r['selected'])} | {r['delta_selected']} |")
    if means:
        lines += ["", format_seed_means(means)]
    cpus = sorted({r["cpu"] for r in rows})
    conditions = describe_conditions([c for r in rows for c in r.get("conditions") or [None]])
    lines += ["", f"CPU: {'; '.join(cpus)}. One training at a time. {conditions} Commands:"]
    lines += [f"- `{r['command']}`" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="work folder of the baseline run")
    p.add_argument("levers", nargs="+", metavar="WORK", help="work folders of the runs to compare with it")
    p.add_argument("--output", help="the experiment's folder (e.g. benchmarks/results/lfw_levers): write "
                                    "results.md (the table), results.json (every figure) and learning_curves.png "
                                    "(each run, named by its work folder) there")
    args = p.parse_args(argv)
    works = [args.baseline, *args.levers]
    results = {work: read_results(work) for work in works}
    baseline = results[args.baseline]
    rows = [lever_row(work, results[work], baseline) for work in works]
    means = seed_means(rows)
    table = format_lever_table(rows, means)
    print(table)
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "results.md", table + "\n")
        command = "python -m recipes.lfw_levers " + shlex.join(sys.argv[1:] if argv is None else argv)
        write_json_atomic(out / "results.json", {"command": command, "runs": rows, "seed_means": means})
        from training.curves import plot_learning_curves
        curves = plot_learning_curves({Path(w).name: Path(w) / "runs" / next(iter(results[w]["runs"]))
                                       for w in works}, out / "learning_curves.png")
        print(f"\nwrote {out / 'results.md'}, {out / 'results.json'}, {curves}")


if __name__ == "__main__":
    sys.exit(main())
