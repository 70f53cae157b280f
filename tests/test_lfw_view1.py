"""recipes/lfw_view1.py end to end on a miniature LFW made of real LFW faces: align, DevTrain
shards, two 3-step trainings, their evaluations, the table; a rerun reuses every finished stage;
a pairsDevTest that shares an identity with training is refused."""

import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _people(lfw_dir, people_file, count, images=3):
    lines = (lfw_dir / people_file).read_text().splitlines()[1:]
    names = [name for name, n in (line.split("\t") for line in lines) if int(n) >= images]
    return names[:count]


def _mini_lfw(lfw_dir, root, train, test):
    """images/ of 3 photos per ``train`` person and 4 per ``test`` person, peopleDevTrain.txt =
    ``train``, View 1 pairsDevTest.txt over ``test`` (10 same + 10 different), View 2 pairs.txt (10
    folds of 1 + 1) over both. No pair is listed twice (read_pairs refuses repeats): 10 distinct same
    pairs need 4 photos of each of the 3 test people."""
    for name in train + test:
        (root / "images" / name).mkdir(parents=True)
        for k in (1, 2, 3) if name in train else (1, 2, 3, 4):
            src = lfw_dir / "images" / name / f"{name}_{k:04d}.jpg"
            shutil.copy(src, root / "images" / name / src.name)
    (root / "peopleDevTrain.txt").write_text(f"{len(train)}\n" + "".join(f"{n}\t3\n" for n in train))
    same = [f"{n}\t{a}\t{b}" for a, b in itertools.combinations((1, 2, 3, 4), 2) for n in test][:10]
    diff = [f"{test[i % 3]}\t{1 + i % 4}\t{test[(i + 1) % 3]}\t{1 + (i // 3) % 4}" for i in range(10)]
    (root / "pairsDevTest.txt").write_text("10\n" + "\n".join(same + diff) + "\n")
    everyone = train + test
    n = len(everyone)
    folds = [f"{everyone[i % n]}\t1\t{2 + i // n}\n{everyone[i % n]}\t3\t"
             f"{everyone[(i + 3 + i // n) % n]}\t2\n" for i in range(10)]
    (root / "pairs.txt").write_text("10\t1\n" + "".join(folds))


def _run(lfw, work, *extra):
    args = [sys.executable, "-m", "recipes.lfw_view1", "--lfw-dir", str(lfw), "--work-dir", str(work), "--max-steps", "3",
            "--validations", "1", "--batch-size", "4", "--embedding-size", "16", "--warmup-steps", "0",
            "--val-identities", "2", "--train-minutes", "10", "--align-workers", "1",
            # A small lr: the recipe's 0.2 is sized for batch 128, and at batch 4 ArcFace (s=64) once
            # diverged to NaN embeddings within these 3 steps. evaluate.py reads the .keras file only.
            "--lr", "0.01", "--extra-train-args=--exports keras", *extra]
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO)


@pytest.mark.slow
@pytest.mark.real_data
def test_lfw_view1_pipeline_table_rerun_and_identity_check(lfw_dir, tmp_path):
    train = _people(lfw_dir, "peopleDevTrain.txt", 5)
    test = _people(lfw_dir, "peopleDevTest.txt", 3, images=4)
    lfw, work = tmp_path / "lfw", tmp_path / "work"
    _mini_lfw(lfw_dir, lfw, train, test)

    out = _run(lfw, work, "--losses", "am_softmax", "arcface")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads((work / "results.json").read_text())
    assert results["data"]["train_identities"] == 3 and results["data"]["train_images"] == 9
    assert results["data"]["view2_shared_identities"] == 5   # train + held-out identities in pairs.txt
    assert results["align"]["aligned"] + results["align"]["fallback"] == 27   # 5 x 3 + 3 x 4 photos
    for loss in ("am_softmax", "arcface"):
        run = results["runs"][loss]
        assert run["steps"] == 3 and run["images_seen"] == 12 and not run["time_limited"]
        assert run["images_per_sec"] > 0 and 0.0 <= run["selected_heldout_accuracy"] <= 1.0
        assert run["selected_step"] == 3   # one validation, at the last step: best.keras is the final model
        assert run["pairsDevTest"]["num_pairs"] == 20 and run["pairs"]["num_pairs"] == 20
        # both models reported: the final one and best.keras; here the same weights (exported at the last
        # step), so best.keras is not evaluated again and reports the final model's numbers
        assert run["selected_is_final"] and run["pairsDevTest_selected"] == run["pairsDevTest"]
        assert f"eval_{loss}_pairsDevTest:" in out.stdout and f"eval_{loss}_pairsDevTest_selected:" not in out.stdout
        assert 0.0 <= run["pairsDevTest"]["accuracy_mean"] <= 1.0
        assert (work / "runs" / loss / "learning_curves.png").is_file()
        assert f"--loss {loss}" in run["command"] and "--max-steps 3" in run["command"]
        # the code that trained it: this checkout's commit (None where the checkout has no git)
        (code,) = run["code"]
        assert code is None or re.fullmatch(r"[0-9a-f]{7,}(\+changes)?", code), code
    table = (work / "results.md").read_text()
    assert table in out.stdout
    assert sum(line.startswith(("| am_softmax", "| arcface")) for line in table.splitlines()) == 2
    assert (work / "learning_curves.png").stat().st_size > 10_000

    # A rerun redoes nothing that finished (only the align resume check runs).
    again = _run(lfw, work, "--losses", "am_softmax", "arcface")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "train_am_softmax:" not in again.stdout and "eval_arcface_pairs:" not in again.stdout
    rerun = json.loads((work / "results.json").read_text())
    assert set(rerun["cached"]) >= {"build", "train_am_softmax", "train_arcface", "eval_arcface_pairs"}
    assert rerun["runs"]["arcface"]["pairs"] == results["runs"]["arcface"]["pairs"]

    # A test set that shares an identity with training is refused before any training.
    # (Same images folder, so the aligned folder is reused: align refuses crops made from another.)
    same = [f"{n}\t1\t{k}\n" for n in train for k in (2, 3)]              # 10 distinct pairs (no repeats)
    different = [f"{n}\t{k}\t{test[0]}\t1\n" for n in train for k in (1, 2)]
    (lfw / "pairsDevTest.txt").write_text("10\n" + "".join(same + different))
    refused = _run(lfw, tmp_path / "work2", "--aligned-dir", str(work / "aligned"))
    assert refused.returncode != 0 and "appear in pairsDevTest.txt" in refused.stderr
    assert not (tmp_path / "work2" / "runs").exists()

    # One run per backbone (--backbones): own calibration-free schedule, runs named by backbone,
    # the backbone option passed to train.py, only the asked-for pairs evaluated, the CPU named;
    # 112x112 crops (--image-size) all the way to the model and its evaluation.
    # (A fresh miniature LFW: the one above now has a leaky pairsDevTest.)
    lfw3 = tmp_path / "lfw3"
    _mini_lfw(lfw_dir, lfw3, train, test)
    multi = _run(lfw3, tmp_path / "work3", "--losses", "am_softmax",
                 "--backbones", "mobilefacenet", "resface20:batch_norm=false", "--eval-pairs", "pairsDevTest",
                 "--augment-scale", "0", "--augment-rotate", "5", "--seed", "3", "--image-size", "112x112")
    assert multi.returncode == 0, multi.stdout[-3000:] + multi.stderr[-3000:]
    assert json.loads((tmp_path / "work3" / "shards" / "manifest.json").read_text())["image_size"] == [112, 112]
    assert json.loads((tmp_path / "work3" / "aligned" / "align_config.json").read_text())["image_size"] == [112, 112]
    runs = json.loads((tmp_path / "work3" / "results.json").read_text())["runs"]
    assert set(runs) == {"mobilefacenet-am_softmax", "resface20-batch_norm-false-am_softmax"}
    assert "--backbone-option batch_norm=false" in runs["resface20-batch_norm-false-am_softmax"]["command"]
    # only the nonzero augmentations reach train.py, with the seed
    assert all("--augment-rotate 5.0" in r["command"] and "--augment-scale" not in r["command"]
               and "--seed 3" in r["command"] for r in runs.values())
    assert all("pairs" not in r and r["pairsDevTest"]["num_pairs"] == 20 for r in runs.values())
    table = (tmp_path / "work3" / "results.md").read_text()
    assert "| resface20:batch_norm=false + am_softmax | off |" in table and "CPU: " in table
    assert "images (112x112) of 3 LFW peopleDevTrain identities" in table
    # A folder aligned at 112x96 is refused for 112x112, with the fix named.
    other = _run(lfw3, tmp_path / "work4", "--aligned-dir", str(work / "aligned"), "--image-size", "112x112")
    assert other.returncode != 0 and "aligned with other settings" in other.stderr + other.stdout


def _script():
    from recipes import lfw_view1
    return lfw_view1


def test_backbone_specs_and_a_guard_stopped_run_in_the_table(tmp_path):
    script = _script()
    assert script.parse_backbone_spec("resface20:batch_norm=false,x=1@bfloat16") == (
        "resface20", ["batch_norm=false", "x=1"], "bfloat16")
    assert script.parse_backbone_spec("mobilefacenet") == ("mobilefacenet", [], "off")
    log = tmp_path / "train.log"
    log.write_text("train: 100%\nerror: training collapsed at step 60: the embeddings ...\n")
    assert script.guard_stop(log).startswith("training collapsed at step 60")
    log.write_text("done: 10 steps\n")
    assert script.guard_stop(log) is None
    results = {"data": {"train_images": 9, "train_identities": 3, "view2_shared_identities": 5, "view2_identities": 8},
               "align": {"aligned": 24, "fallback": 0, "failed": 0, "skipped_already_done": 0},
               "stages": {"calibrate-x": 60.0}, "schedules": {"x": {"calibrated_images_per_sec": 10.0, "max_steps": 5}},
               "cpu": "Some CPU, 2 cores",
               "runs": {"x-am_softmax": {"backbone": "resface20:batch_norm=false@bfloat16", "loss": "am_softmax",
                                         "precision": "bfloat16", "heads": "", "steps": 60, "train_wall_seconds": 90.0,
                                         "guard_stopped": "training collapsed at step 60: the embeddings ..."}}}
    table = script.format_table(results)
    assert "stopped by the collapse guard: training collapsed at step 60 |" in table
    assert "Some CPU, 2 cores" in table
    assert "calibrate 1.0 min (x 10.0 img/s -> 5 steps planned)" in table
    # A run given --max-steps never calibrated: the table names the flag, not a "nan img/s" speed.
    results["stages"], results["schedules"] = {}, {"all": {"calibrated_images_per_sec": None, "max_steps": 1230}}
    assert "calibrate 0.0 min (--max-steps 1230 planned)" in script.format_table(results)


def test_head_label_is_what_the_run_trained_with(tmp_path):
    # A lever run passes --extra-train-args "--m 0.25": its table row must say m=0.25, not the default.
    script = _script()
    assert script.head_settings("am_softmax") == "s=30, m=0.35"
    assert script.head_settings("am_softmax", tmp_path) == "s=30, m=0.35"      # no config.json yet
    (tmp_path / "config.json").write_text(json.dumps({"head_options": {"m": 0.25, "s": None}}))
    assert script.head_settings("am_softmax", tmp_path) == "s=30, m=0.25"
    assert script.head_settings("softmax") == "plain"


def test_lever_table_names_what_changed_and_the_deltas(tmp_path):
    """recipes/lfw_levers.py: the changed settings come from results.json, not from a label."""
    from recipes import lfw_levers

    def results(accuracy, selected, command_extra="", **settings):
        evaluation = lambda a: {"accuracy_mean": a, "accuracy_std": 0.02, "auc": 0.95}
        command = ("train.py --data W/shards --backbone mobilefacenet --embedding-size 128 --batch-size 64 "
                   "--loss am_softmax --lr 0.1 --max-steps 1695 --output-dir W/runs/am_softmax" + command_extra)
        return {"command": "python -m recipes.lfw_view1 ...", "cpu": "Some CPU, 2 cores",
                "settings": {"min_images": 2, "lr": 0.1, "work_dir": "W", **settings},
                "runs": {"am_softmax": {"command": command, "steps": 1695, "time_limited": False, "epochs": 16.7,
                                        "train_wall_seconds": 1474.0, "images_per_sec": 75.0,
                                        "heldout_curve": [[1695, 0.92]], "selected_heldout_accuracy": 0.913,
                                        "selected_step": 1415, "pairsDevTest": evaluation(accuracy),
                                        "pairsDevTest_selected": evaluation(selected)}}}

    base = results(0.884, 0.888)
    more = results(0.871, 0.866, min_images=1, work_dir="X")
    augmented = results(0.9, 0.897, " --augment-rotate 8.0 --seed 1")
    assert lfw_levers.changed_settings(more, base) == "min_images 2 -> 1"
    assert lfw_levers.changed_settings(augmented, base) == "--augment-rotate 8.0; --seed 0 -> 1"
    faster = results(0.88, 0.88, lr=0.2)   # a setting that is also a train.py flag is named once
    faster["runs"]["am_softmax"]["command"] = faster["runs"]["am_softmax"]["command"].replace("--lr 0.1", "--lr 0.2")
    assert lfw_levers.changed_settings(faster, base) == "--lr 0.1 -> 0.2"
    rows = [lfw_levers.lever_row("B", base, base), lfw_levers.lever_row("M", more, base),
            lfw_levers.lever_row("A", augmented, base)]
    assert [r["delta_final"] for r in rows] == ["+0.00", "-1.30", "+1.60"]
    assert rows[2]["delta_selected"] == "+0.90"
    table = lfw_levers.format_lever_table(rows)
    assert "| (baseline) |" in table and "| min_images 2 -> 1 |" in table and "**87.10 ± 2.00 %**" in table
    assert "Some CPU, 2 cores" in table
    assert lfw_levers.seed_means(rows) == []      # no setting was run with two seeds yet

    # The same settings with another seed: each pair gets a mean row, its delta against the baseline's mean.
    base_seed1 = results(0.874, 0.87, " --seed 1")
    augmented_seed0 = results(0.88, 0.89, " --augment-rotate 8.0 --seed 0")
    rows += [lfw_levers.lever_row("B1", base_seed1, base), lfw_levers.lever_row("A0", augmented_seed0, base)]
    assert [r["seed"] for r in rows] == [0, 0, 1, 1, 0]
    means = lfw_levers.seed_means(rows)
    assert [(m["setting"], m["seeds"], m["delta_final"]) for m in means] == [
        ("(baseline)", [0, 1], "+0.00"), ("--augment-rotate 8.0", [1, 0], "+1.10")]
    assert means[1]["final_accuracy"] == pytest.approx(0.89) and means[1]["spread"] == pytest.approx(2.0)
    assert means[1]["selected_accuracy"] == pytest.approx(0.8935) and means[1]["baseline_seeds"] == 2
    table = lfw_levers.format_lever_table(rows, means)
    assert "| --augment-rotate 8.0 | 1, 0 | **89.00 %** | 2.00 | +1.10 (baseline: 2 seeds) | 0.9500 | 89.35 % |" in table

    # A second run of the baseline's settings and seed is not a seed repeat: no mean of "seeds 0, 0".
    # With the code version recorded (recipes.lfw_view1 does), it is named as what changed.
    again = results(0.887, 0.887)
    assert lfw_levers.lever_row("B'", again, base)["changed"] == "(the baseline's settings, another run)"
    assert lfw_levers.seed_means([rows[0], lfw_levers.lever_row("B'", again, base)]) == []
    for run, code in ((base, ["6b65b89"]), (again, ["7ffec62+changes", "ffea78b"])):
        run["runs"]["am_softmax"]["code"] = code
    assert lfw_levers.changed_settings(again, base) == "code 6b65b89 -> 7ffec62+changes/ffea78b"

    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "results.json").write_text(json.dumps({**base, "runs": {**base["runs"], "b": {}}}))
    with pytest.raises(SystemExit, match="holds 2 runs"):
        lfw_levers.read_results(tmp_path / "one")
