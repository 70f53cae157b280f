"""Write benchmarks/results/README.md: one row per experiment folder (its command, the commit that
recorded it, the CPU or GPU, the headline figure), read from the folder's results.json or output.txt.

    python -m benchmarks.results_index            # rewrite the index after adding a folder

Each experiment has one folder under benchmarks/results/: results.json (every figure), results.md (the
table), learning_curves.png where there is one, or output.txt for a script that prints its figures.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _pct(metrics):
    return f"{100 * metrics['accuracy_mean']:.2f} ± {100 * metrics['accuracy_std']:.2f} %"


def headline(data: dict) -> str:
    """The figure an experiment is quoted for, by the kind of results.json."""
    if isinstance(data.get("runs"), dict):       # recipes.lfw_view1: runs by name, each with its evaluations
        parts = []
        for name, run in data["runs"].items():
            if "pairsDevTest" in run:
                parts.append(f"{name}: pairsDevTest {_pct(run['pairsDevTest'])}")
            elif "pairs" in run:
                parts.append(f"{name}: pairs.txt {_pct(run['pairs'])}")
            elif run.get("guard_stopped"):
                parts.append(f"{name}: stopped by the guard at step {run.get('steps')}")
        return "; ".join(parts)
    if isinstance(data.get("runs"), list):       # recipes.lfw_levers: one row per lever run
        return "; ".join(f"{row['changed']}: pairsDevTest {_pct(row['final'])}" for row in data["runs"])
    if isinstance(data.get("sizes"), dict) and "eligible_people" in data:   # benchmarks.own_photos
        return "; ".join(f"{size} people: " + ", ".join(f"{row} {_pct(entry['rows'][row])}"
                                                       for row in ("starter", "fine_tuned", "scratch")
                                                       if row in entry["rows"])
                         for size, entry in data["sizes"].items())
    if "engines" in data:                         # benchmarks.inference_speed
        return ", ".join(f"{name} {engine['images_per_second']:.1f} img/s" for name, engine in data["engines"].items())
    if "accuracy" in data and "rank1" in data["accuracy"]:   # benchmarks.identification
        a = data["accuracy"]
        return (f"rank-1 {100 * a['rank1']['mean']:.2f} ± {100 * a['rank1']['std']:.2f} % "
                f"({a['gallery']} people)")
    if "rows" in data and "device" in data:      # benchmarks.jax_step
        return ", ".join(f"{r['backbone']} {r['precision']} batch {r['batch_size']}: {r['images_per_s']:,.0f} img/s"
                         for r in data["rows"])
    if "scoring_total_s" in data:                # benchmarks.ijb_scoring
        return (f"IJB-C-sized 1:1 scoring {data['scoring_total_s']:.1f} s, peak {data['scoring_peak_rss_gib']:.2f} GiB "
                f"({data['pairs']:,} pairs)")
    if "rows" in data and data["rows"] and "kind" in data["rows"][0]:   # benchmarks.partial_fc
        steps = {r["classes"]: r["ms"] for r in data["rows"] if r["kind"] == "step" and "ms" in r}
        if len(steps) == 2:
            (small, a), (large, b) = sorted(steps.items())
            return f"MobileFaceNet step at {large:.0e} classes (partial FC) {b / a:.2f}x the {small:.0e}-class step"
    return ""


def _commit(folder: Path) -> str:
    """The short hash of the commit that first recorded the folder's main file (following renames)."""
    main = next((folder / n for n in ("results.json", "output.txt", "results.md") if (folder / n).exists()), None)
    try:
        out = subprocess.run(["git", "log", "--follow", "--diff-filter=A", "--format=%h", "--", main.name],
                             check=False, cwd=folder, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    hashes = out.stdout.split()
    return hashes[-1] if out.returncode == 0 and hashes else "?"


def today(command: str) -> str:
    """A recorded command under today's module paths (the recipes lived in benchmarks/ until they moved)."""
    command = re.sub(r"benchmarks[./](lfw_view1|lfw_levers)", r"recipes.\1", command)
    return re.sub(r"^recipes\.(lfw_view1|lfw_levers)\.py", r"python -m recipes.\1", command)


def describe(folder: Path) -> dict:
    """experiment, command, CPU/device and headline figure of one folder."""
    row = {"experiment": folder.name, "command": "", "machine": "", "headline": ""}
    if (folder / "results.json").exists():
        data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        if isinstance(data, dict):
            row["command"] = today(data.get("command", ""))
            row["machine"] = data.get("cpu") or data.get("device") or ""
            if not row["machine"] and isinstance(data.get("runs"), list) and data["runs"]:
                row["machine"] = data["runs"][0].get("cpu", "")
            row["headline"] = headline(data)
    elif (folder / "output.txt").exists():
        text = (folder / "output.txt").read_text(encoding="utf-8")
        command = re.search(r"^# command: (.*?)(?:\s{2,}\(.*)?$", text, re.MULTILINE)
        cpu = re.search(r"CPU: ([^;\n]*)", text)
        row["command"] = command.group(1) if command else ""
        row["machine"] = cpu.group(1).strip() if cpu else ""
        row["headline"] = "see output.txt"
    return row


def experiment_folders(results: Path = RESULTS) -> list[Path]:
    return sorted(p for p in results.iterdir() if p.is_dir())


def format_index(rows: list[dict]) -> str:
    lines = ["# Benchmark and recipe results", "",
             "One folder per experiment: `results.json` (every figure), `results.md` (the table),",
             "`learning_curves.png` where there is one, or `output.txt` for a script that prints its figures.",
             "The manual quotes these figures with their commands: [docs/results.md](../../docs/results.md).",
             "Regenerate this index with `python -m benchmarks.results_index`. *commit*: the commit that",
             "recorded the folder's results (the code measured is that commit's or an earlier one); a command",
             "left blank was not recorded in the output (the page quoting the figure gives it). Commands are shown",
             "under today's module paths: the recipes ran as `benchmarks.lfw_view1` before they moved to `recipes/`.", "",
             "| experiment | command | commit | CPU / device | headline figure |", "|---|---|---|---|---|"]
    for r in rows:
        command = f"`{r['command']}`" if r["command"] else ""
        lines.append(f"| [{r['experiment']}]({r['experiment']}/) | {command} | {r['commit']} | {r['machine']} | "
                     f"{r['headline']} |".replace("\n", " "))
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="default: %(default)s")
    args = p.parse_args(argv)
    rows = []
    for folder in experiment_folders(args.results_dir):
        row = describe(folder)
        row["commit"] = _commit(folder)
        rows.append(row)
    out = args.results_dir / "README.md"
    out.write_text(format_index(rows), encoding="utf-8")
    print(f"wrote {out}: {len(rows)} experiments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
