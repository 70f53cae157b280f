"""Every benchmark script end to end on tiny inputs, so a renamed function or flag cannot break one
unseen (issue 30: inference_speed.py and identification.py once failed at start). Sizes are the
smallest each script accepts: these check that a script runs and writes its figures, not the figures.

In-process (one TensorFlow import for the file) wherever the script allows. Not here: benchmarks/jax_step.py
runs on Keras' JAX backend, chosen at import (tests/test_jax_step.py runs it where JAX is installed);
train_speed.py's PyTorch rows need torch in .venv-bench; the recipes (recipes/) are run by
tests/test_lfw_view1.py. About two minutes of CPU in one process on 2 cores (train_speed's worker
processes the most, 28 s), so half that on the suite's two workers.
"""

import importlib
import inspect
import json
import sys

import pytest

from inference_helpers import embedding_model


def run_main(module_name, argv, monkeypatch):
    """Call the script's main with argv (through sys.argv when main takes no arguments); its exit code."""
    module = importlib.import_module(module_name)
    if inspect.signature(module.main).parameters:
        return module.main(argv)
    monkeypatch.setattr(sys, "argv", [module_name, *argv])
    return module.main()


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """A synthetic aligned folder: 6 identities x 4 smooth random 112x96 JPEGs (build_memory's maker)."""
    from benchmarks.build_memory import make_synthetic_aligned

    root = tmp_path_factory.mktemp("bench") / "aligned"
    make_synthetic_aligned(root, 24, per_identity=4, pool=24)
    return root


@pytest.fixture(scope="module")
def shards(aligned, tmp_path_factory):
    """Shards of the aligned folder with two held-out identities (training_dynamics validates on their pairs)."""
    from tfrecords.build import build

    out = tmp_path_factory.mktemp("bench") / "shards"
    build(str(aligned), str(out), num_shards=2, val_identities=2, progress=False)
    return out


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """RUN/export/best.keras: a small MobileFaceNet with random weights (inference_helpers)."""
    run = tmp_path_factory.mktemp("bench") / "run"
    (run / "export").mkdir(parents=True)
    embedding_model("mobilefacenet", (112, 96), 64, seed=0).save(run / "export" / "best.keras")
    return run


def test_results_index(tmp_path, capsys):
    from benchmarks import results_index

    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "results.json").write_text(json.dumps(
        {"command": "python -m benchmarks.lfw_view1 --lfw-dir L", "cpu": "Some CPU",
         "runs": {"am_softmax": {"pairsDevTest": {"accuracy_mean": 0.9, "accuracy_std": 0.01}}}}))
    assert results_index.main(["--results-dir", str(tmp_path)]) == 0
    index = (tmp_path / "README.md").read_text()
    assert "python -m recipes.lfw_view1 --lfw-dir L" in index and "Some CPU" in index
    assert "am_softmax: pairsDevTest 90.00 ± 1.00 %" in index


def test_verification_speed(monkeypatch, capsys):
    run_main("benchmarks.verification_speed", ["--repeats", "1", "--backbone", ""], monkeypatch)
    assert "ms" in capsys.readouterr().out


def test_xla_layers(monkeypatch, capsys):
    run_main("benchmarks.xla_layers", ["--batch-size", "2", "--rounds", "1"], monkeypatch)
    assert "XLA" in capsys.readouterr().out


def test_backbone_step(monkeypatch, capsys):
    run_main("benchmarks.backbone_step", ["--backbones", "mobilefacenet", "--batch-size", "2", "--num-classes", "8",
                                          "--steps", "1", "--warmup", "1", "--precisions", "off"], monkeypatch)
    assert "mobilefacenet" in capsys.readouterr().out


def test_input_pipeline(aligned, shards, monkeypatch, capsys):
    run_main("benchmarks.input_pipeline", ["--aligned", str(aligned), "--shards", str(shards), "--batch-size", "4",
                                           "--seconds", "0.2", "--rounds", "1", "--train-steps", "0"], monkeypatch)
    assert "make_train_dataset" in capsys.readouterr().out


def test_recordio_import(aligned, tmp_path, monkeypatch, capsys):
    run_main("benchmarks.recordio_import", ["--aligned-dir", str(aligned), "--records", "24", "--work-dir",
                                            str(tmp_path), "--workers", "1", "--repeats", "1"], monkeypatch)
    assert "records/s" in capsys.readouterr().out


def test_training_dynamics(shards, tmp_path, monkeypatch):
    out = tmp_path / "probes.jsonl"
    run_main("benchmarks.training_dynamics", ["--data", str(shards), "--backbone", "mobilefacenet", "--batch-size",
                                              "4", "--steps", "2", "--probe-every", "1", "--output", str(out)],
             monkeypatch)
    assert out.read_text().strip()


def _pairs_file(aligned, path):
    from fileio import format_generic_pairs

    names = sorted(p.name for p in aligned.iterdir() if p.is_dir())
    files = {n: sorted(f.name for f in (aligned / n).iterdir()) for n in names}
    same = [(f"{n}/{files[n][0]}", f"{n}/{files[n][1]}", True) for n in names]
    different = [(f"{a}/{files[a][0]}", f"{b}/{files[b][0]}", False) for a, b in zip(names, names[1:] + names[:1])]
    path.write_text(format_generic_pairs(same + different))
    return path


def test_inference_speed(model_run, aligned, tmp_path, monkeypatch, capsys):
    pairs = _pairs_file(aligned, tmp_path / "pairs.txt")
    out = tmp_path / "inference_speed"
    run_main("benchmarks.inference_speed", ["--model", str(model_run), "--lfw-pairs", str(pairs), "--lfw-dir",
                                            str(aligned), "--engines", "keras", "fast", "--batch-size", "4",
                                            "--chunk", "4", "--output-dir", str(out)], monkeypatch)
    figures = json.loads((out / "results.json").read_text())
    assert set(figures["engines"]) == {"keras", "fast"} and (out / "results.md").is_file()


def _mini_devtest(tmp_path, people, crop):
    """A miniature LFW: TMP/lfw/peopleDevTest.txt listing ``people`` ({name: count}) and TMP/aligned/<name>/
    <name>_000i.jpg, each ``crop(rng)`` (uint8 [112, 96, 3]) from one seeded generator; (lfw, aligned)."""
    import cv2
    import numpy as np

    lfw, aligned = tmp_path / "lfw", tmp_path / "aligned"
    lfw.mkdir()
    (lfw / "peopleDevTest.txt").write_text(f"{len(people)}\n" + "".join(f"{n}\t{c}\n" for n, c in people.items()))
    rng = np.random.default_rng(0)
    for name, count in people.items():
        (aligned / name).mkdir(parents=True)
        for i in range(1, count + 1):
            cv2.imwrite(str(aligned / name / f"{name}_{i:04d}.jpg"), crop(rng))
    return lfw, aligned


def test_identification(model_run, tmp_path, monkeypatch):
    """A miniature LFW: peopleDevTest.txt of 52 people with two images (the script's 50-person gallery needs
    50) and two with one (the impostors), random crops."""
    import numpy as np

    people = {**{f"Person_{k:02d}": 2 for k in range(52)}, "Single_A": 1, "Single_B": 1}
    lfw, crops = _mini_devtest(tmp_path, people, lambda rng: rng.integers(0, 256, (112, 96, 3), dtype=np.uint8))
    out = tmp_path / "identification"
    run_main("benchmarks.identification", ["--model", str(model_run), "--lfw-dir", str(lfw), "--aligned-dir",
                                           str(crops), "--splits", "1", "--search-sizes", "50", "--speed-photos", "0",
                                           "--skip-enroll", "--output-dir", str(out)], monkeypatch)
    figures = json.loads((out / "results.json").read_text())
    assert figures["accuracy"]["gallery"] == 52 and (out / "results.md").is_file()


@pytest.mark.slow
def test_build_memory(tmp_path, monkeypatch, capsys):
    """Two builder processes under /usr/bin/time (the script's way of measuring peak RSS)."""
    import shutil

    if not shutil.which("time") and not __import__("pathlib").Path("/usr/bin/time").exists():
        pytest.skip("needs /usr/bin/time, as the script says")
    run_main("benchmarks.build_memory", ["--sizes", "20", "40", "--workdir", str(tmp_path), "--workers", "1"],
             monkeypatch)
    assert "RSS" in capsys.readouterr().out


@pytest.mark.slow
def test_train_speed_tensorflow_rows(monkeypatch, capsys):
    """The TF graph row only: the PyTorch rows need torch in .venv-bench (not installed for the tests), and the
    XLA and stock-layer rows add a minute of compiling on 2 cores."""
    run_main("benchmarks.train_speed", ["--quick", "--no-torch", "--backbones", "mobilefacenet", "--tf-rows", "graph"],
             monkeypatch)
    assert "mobilefacenet" in capsys.readouterr().out


@pytest.mark.real_data
def test_align_speed(lfw_dir, monkeypatch, capsys):
    run_main("benchmarks.align_speed", ["--lfw-dir", str(lfw_dir), "--plain-images", "2", "--pipeline-images", "4",
                                        "--workers", "1"], monkeypatch)
    assert "img/s" in capsys.readouterr().out



def test_ijb_scoring(tmp_path, monkeypatch):
    out = tmp_path / "ijb.json"
    run_main("benchmarks.ijb_scoring", ["--dim", "8", "--pairs", "20000", "--genuine", "200", "--images", "23124",
                                        "--output", str(out)], monkeypatch)
    assert json.loads(out.read_text())["pairs"] == 20000


def test_partial_fc(monkeypatch, capsys):
    """The head and step cases in this process (the script runs each in a child for its peak memory),
    and main's plan with every case over the memory limit, so no child starts."""
    from benchmarks import partial_fc

    for rate in (1.0, 0.25):
        assert partial_fc.run_head_case(400, 16, rate, 8, 1) > 0
    assert partial_fc.run_step_case(200, 0.5, 4, 1, "32x32") > 0
    rows = partial_fc.main(["--cases", "1000x16", "--step-classes", "0", "--memory-limit-gb", "0"])
    assert [r["skipped"].startswith("needs about") for r in rows] == [True, True]
    assert "partial FC 0.1" in capsys.readouterr().out


def test_export_formats(model_run, aligned, tmp_path, capsys):
    from benchmarks import export_formats
    from fileio import format_generic_pairs

    people = sorted(p.name for p in aligned.iterdir() if p.is_dir())[:4]
    files = {name: sorted(f.name for f in (aligned / name).iterdir()) for name in people}
    same = [(f"{n}/{files[n][0]}", f"{n}/{files[n][1]}", True) for n in people]
    different = [(f"{a}/{files[a][0]}", f"{b}/{files[b][0]}", False) for a, b in zip(people, people[1:] + people[:1])]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(format_generic_pairs(same + different))
    assert export_formats.main(["--model", str(model_run), "--lfw-dir", str(aligned), "--pairs", str(pairs),
                                "--calibration-count", "8", "--threads", "1", "--speed-images", "64",
                                "--latency-runs", "2", "--output-dir", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(data["formats"]) == set(export_formats.ENGINES)
    assert data["formats"]["litert"]["pairs"]["accuracy_mean"] == data["formats"]["keras"]["pairs"]["accuracy_mean"]
    assert data["formats"]["keras"]["pairs"]["decisions_flipped"] == data["formats"]["litert"]["pairs"]["decisions_flipped"] == 0
    assert all(0 <= row["pairs"]["decisions_flipped"] <= 8 == row["pairs"]["num_pairs"] for row in data["formats"].values())
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| litert-int8 |" in table and "decisions flipped" in table and "Measured during the measurements" in table
    assert data["measured"]["cpu_seconds"] > 0


@pytest.mark.slow
def test_own_photos(model_run, tmp_path):
    """A miniature DevTest of 4 LFW-named synthetic people with 4 photos each and one with 3 (not drawn), a
    2-step fine-tune of a random MobileFaceNet and a 2-step training from scratch: subprocesses (the
    script's way), about a minute on 2 cores."""
    import cv2
    import numpy as np

    from benchmarks import own_photos, results_index

    people = {"Anna_Alpha": 4, "Bert_Beta": 4, "Cora_Gamma": 4, "Dan_Delta": 4, "Eve_Few": 3}
    lfw, aligned = _mini_devtest(tmp_path, people,
                                 lambda rng: cv2.resize(rng.integers(0, 256, (14, 12, 3), dtype=np.uint8), (96, 112)))
    out = tmp_path / "results" / "own_photos_test"
    assert own_photos.main(["--lfw-dir", str(lfw), "--aligned-dir", str(aligned), "--work-dir", str(tmp_path / "w"),
                            "--output-dir", str(out), "--sizes", "4", "--starter", str(model_run / "export" /
                            "best.keras"), "--steps", "2", "--batch-size", "4", "--freeze-backbone-steps", "1",
                            "--embedding-size", "64"]) == 0
    entry = json.loads((out / "results.json").read_text())["sizes"]["4"]
    # 2 training and 2 test photos each; 2 folds of 2 people: 2 same pairs and 4 different ones per fold
    assert entry["train_images"] == 8 and entry["test_images"] == 8 and "Eve_Few" not in entry["people_drawn"]
    assert entry["pairs"] == {**entry["pairs"], "folds": 2, "pairs_per_fold": 2, "num_pairs": 8}
    rows = entry["rows"]
    assert rows["starter"]["steps"] == 0 and rows["fine_tuned"]["steps"] == rows["scratch"]["steps"] == 2
    assert "--init-from" in rows["fine_tuned"]["command"] and "--init-from" not in rows["scratch"]["command"]
    for row in rows.values():
        assert row["num_pairs"] == 8 and row["num_folds"] == 2 and 0.0 <= row["accuracy_mean"] <= 1.0
    table = (out / "results.md").read_text()
    assert "## 4 people" in table and "| fine-tuned from the starter model |" in table and "2 folds" in table
    assert results_index.headline(json.loads((out / "results.json").read_text())).startswith("4 people: starter")


@pytest.mark.slow
def test_litert_delegation_reports_every_layer_in_both_precisions(tmp_path, capsys):
    from benchmarks import litert_delegation

    output, model = tmp_path / "output.txt", tmp_path / "prelu.int8.tflite"
    model.write_bytes(litert_delegation.convert(litert_delegation.layers()["prelu (per channel)"](), int8=True))
    assert litert_delegation.main(["--runs", "2", "--threads", "1", "--output", str(output),
                                   "--tflite", str(model)]) == 0
    table = output.read_text()
    assert f"{model}: " in table and "XNNPACK partitions; ops in the file: " in table and "PRELU 1" in table
    for name in litert_delegation.layers():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert row.count("| yes |") + row.count("| no |") == 2, row
    # XNNPACK takes the float32 convolutions (the delegate's own promise): a run where it took none would be broken
    assert next(line for line in table.splitlines() if line.startswith("| conv 3x3 |")).startswith("| conv 3x3 | yes |")
