"""evaluate.py end to end on tiny aligned folders, a tiny .keras embedding model, .npz embeddings and .bin sets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import evaluate
from engines.model_file import find_default_model
from evaluation import verification_metrics
from evaluation.binset import write_bin
from evaluation.pairs import read_pairs

SIZE = (16, 12)  # H, W of the tiny model's input
DIM = 8


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """Input -> input_scaling_layer -> Flatten -> Dense, saved as RUN/export/best.keras; returns (run_dir, W, b)."""
    import keras

    from models.scaling import input_scaling_layer

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*SIZE, 3))
    outputs = keras.layers.Dense(DIM)(keras.layers.Flatten()(input_scaling_layer()(inputs)))
    model = keras.Model(inputs, outputs)
    run = tmp_path_factory.mktemp("runs") / "20260101T000000Z-tiny-arcface"
    (run / "export").mkdir(parents=True)
    model.save(run / "export" / "best.keras")
    kernel, bias = (np.asarray(w, np.float64) for w in model.layers[-1].get_weights())
    return run, kernel, bias


def numpy_embed(rgb, kernel, bias):
    """The tiny model in plain numpy: ((x - 127.5) / 128) flattened @ W + b."""
    x = (rgb.astype(np.float64) - 127.5) / 128.0
    return x.reshape(len(x), -1) @ kernel + bias


@pytest.fixture()
def lfw_like(tmp_path):
    """Aligned folder of lossless PNGs (the test knows every RGB pixel) + View 2 pairs over them."""
    rng = np.random.default_rng(0)
    root = tmp_path / "aligned"
    pixels = {}
    base = {f"P{p}": rng.integers(0, 256, size=(*SIZE, 3)) for p in range(10)}
    for p in range(10):
        name = f"P{p}"
        (root / name).mkdir(parents=True)
        for i in (1, 2, 3):   # 3 photos: 20 distinct same pairs (a pair listed twice is refused)
            rgb = np.clip(base[name] + rng.integers(-40, 41, size=(*SIZE, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / name / f"{name}_{i:04d}.png"), rgb[..., ::-1])  # lossless: test knows the pixels
            pixels[f"{name}/{name}_{i:04d}"] = rgb
    lines = ["10\t2"]
    for f in range(10):
        lines += [f"P{f}\t1\t2", f"P{(f + 5) % 10}\t2\t3", f"P{f}\t1\tP{(f + 1) % 10}\t2", f"P{f}\t2\tP{(f + 3) % 10}\t1"]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return root, pairs, pixels


def expected_metrics(pairs_path, pixels, kernel, bias):
    pairs = read_pairs(pairs_path)
    paths = pairs.unique_paths()
    rgb = np.stack([pixels[p] for p in paths])
    emb, emb_flip = numpy_embed(rgb, kernel, bias), numpy_embed(rgb[:, :, ::-1], kernel, bias)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    feats = dict(zip(paths, np.concatenate([unit(emb), unit(emb_flip)], axis=1)))
    a = np.stack([feats[p] for p in pairs.paths_a])
    b = np.stack([feats[p] for p in pairs.paths_b])
    return verification_metrics(a, b, pairs.issame, pairs.folds), paths, emb, emb_flip


def assert_same_metrics(got, want):
    assert got["fold_accuracies"] == pytest.approx(want["fold_accuracies"], abs=1e-9)
    for key in ("auc", "eer", "same_similarity_mean", "different_similarity_mean", "val", "far"):
        assert got[key] == pytest.approx(want[key], abs=1e-5), key


def test_model_on_pairs_writes_json_plots_and_matches_numpy(tiny_model, lfw_like, capsys):
    run, kernel, bias = tiny_model
    root, pairs, pixels = lfw_like
    assert evaluate.main(["--lfw-pairs", str(pairs), "--lfw-dir", str(root), "--model", str(run), "--no-progress"]) == 0
    out = run / "eval" / "lfw_pairs.json"
    got = json.loads(out.read_text())
    want, *_ = expected_metrics(pairs, pixels, kernel, bias)
    assert_same_metrics(got, want)
    assert got["num_pairs"] == 40 and got["num_images"] == 30 and got["flip"] == "concat"
    assert (run / "eval" / "lfw_pairs_roc.png").stat().st_size > 1000
    assert (run / "eval" / "lfw_pairs_hist.png").stat().st_size > 1000
    assert "accuracy" in capsys.readouterr().out


def test_saved_embeddings_reproduce_the_model_result(tiny_model, lfw_like, tmp_path):
    run, _, _ = tiny_model
    root, pairs, _ = lfw_like
    npz, first, second = tmp_path / "E.npz", tmp_path / "model.json", tmp_path / "npz.json"
    assert evaluate.main(["--lfw-pairs", str(pairs), "--lfw-dir", str(root), "--model", str(run), "--no-progress",
                          "--no-plots", "--output", str(first), "--save-embeddings", str(npz)]) == 0
    with np.load(npz) as saved:
        assert saved["paths"][0] == "P0/P0_0001.png" and saved["embeddings"].shape == (30, DIM)
        assert saved["embeddings_flip"].shape == (30, DIM)
    assert evaluate.main(["--lfw-pairs", str(pairs), "--embeddings", str(npz), "--output", str(second), "--no-plots"]) == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    for key in ("fold_accuracies", "val", "far", "auc", "eer", "threshold", "same_similarity_mean"):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key


def test_embeddings_npz_mode_matches_model_mode(tiny_model, lfw_like, tmp_path):
    _run, kernel, bias = tiny_model
    _root, pairs, pixels = lfw_like
    want, paths, emb, emb_flip = expected_metrics(pairs, pixels, kernel, bias)
    npz = tmp_path / "E.npz"
    np.savez(npz, paths=np.array([p + ".jpg" for p in paths]), embeddings=emb, embeddings_flip=emb_flip)
    out = tmp_path / "R.json"
    assert evaluate.main(["--lfw-pairs", str(pairs), "--embeddings", str(npz), "--output", str(out), "--no-plots"]) == 0
    got = json.loads(out.read_text())
    assert_same_metrics(got, want)
    for key in ("accuracy_mean", "accuracy_std", "fold_accuracies", "val", "val_std", "far", "auc", "eer",
                "threshold", "num_pairs"):
        assert key in got
    assert got["flip"] == "concat"

    np.savez(npz, paths=np.array(paths[1:]), embeddings=emb[1:])
    assert evaluate.main(["--lfw-pairs", str(pairs), "--embeddings", str(npz), "--output", str(out)]) == 1


def test_bin_mode_equals_folder_mode(tiny_model, lfw_like, tmp_path):
    run, kernel, bias = tiny_model
    root, pairs, pixels = lfw_like
    write_bin(root, pairs, tmp_path / "tiny.bin")
    out = tmp_path / "bin.json"
    common = ["--bin", str(tmp_path / "tiny.bin"), "--model", str(run / "export" / "best.keras"),
              "--output", str(out), "--no-plots", "--no-progress"]
    assert evaluate.main(common + ["--protocol", "facenet"]) == 0   # the folder mode's default protocol
    want, *_ = expected_metrics(pairs, pixels, kernel, bias)
    assert_same_metrics(json.loads(out.read_text()), want)
    assert evaluate.main(common) == 0   # a .bin defaults to insightface's own protocol: flips summed
    assert (json.loads(out.read_text())["protocol"], json.loads(out.read_text())["flip"]) == ("insightface", "sum")


def test_errors_name_the_problem(tiny_model, lfw_like, tmp_path, capsys):
    run, _, _ = tiny_model
    root, pairs, _ = lfw_like
    common = ["--lfw-pairs", str(pairs), "--model", str(run), "--no-progress", "--output", str(tmp_path / "r.json")]

    assert evaluate.main(common + ["--lfw-dir", str(tmp_path / "nowhere")]) == 1
    assert "align" in capsys.readouterr().err

    (root / "P3" / "P3_0002.png").unlink()
    assert evaluate.main(common + ["--lfw-dir", str(root)]) == 1
    assert "P3/P3_0002" in capsys.readouterr().err

    cv2.imwrite(str(root / "P3" / "P3_0002.jpg"), np.zeros((20, 12, 3), np.uint8))  # other extension, wrong size
    assert evaluate.main(common + ["--lfw-dir", str(root)]) == 1
    err = capsys.readouterr().err
    assert "P3/P3_0002" in err and "16x12x3" in err
    assert not (tmp_path / "r.json").exists()

    # A .bin whose pickle would run code: refused with one line naming it, no traceback.
    import pickle
    evil = tmp_path / "evil.bin"
    evil.write_bytes(pickle.dumps(([b"jpeg", print], [True]), protocol=2))
    assert evaluate.main(["--bin", str(evil), "--model", str(run), "--no-progress", "--output",
                          str(tmp_path / "r.json")]) == 1
    assert "evil.bin" in capsys.readouterr().err


def test_default_model_is_newest_run(tmp_path, monkeypatch, capsys):
    for name, files, mtime in (("a", ["best.keras", "embedding.keras"], 100), ("b", ["embedding.keras"], 200)):
        (tmp_path / "runs" / name / "export").mkdir(parents=True)
        for f in files:
            (tmp_path / "runs" / name / "export" / f).write_bytes(b"")
            os.utime(tmp_path / "runs" / name / "export" / f, (mtime, mtime))
    assert find_default_model(tmp_path / "runs") == tmp_path / "runs" / "b" / "export" / "embedding.keras"
    os.utime(tmp_path / "runs" / "a" / "export" / "best.keras", (300, 300))
    assert find_default_model(tmp_path / "runs") == tmp_path / "runs" / "a" / "export" / "best.keras"

    monkeypatch.chdir(tmp_path / "runs")  # no runs/ here
    (tmp_path / "runs" / "p.txt").write_text("10\t300\n")
    assert evaluate.main(["--lfw-pairs", "p.txt"]) == 1
    assert "train" in capsys.readouterr().err


def test_help_runs_as_a_script():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "evaluate.py"), "--help"], capture_output=True, text=True, check=True)
    assert "safe_mode=True" in out.stdout and "--lfw-pairs" in out.stdout and "restricted unpickler" in out.stdout
    out = subprocess.run([sys.executable, "-m", "evaluation.binset", "--help"], capture_output=True, text=True,
                         check=True, cwd=root)
    assert "--aligned-dir" in out.stdout
