"""verify.py, identify.py, export_onnx.py and the Python API on raw LFW photos, with a small untrained model
(plumbing and decisions, not accuracy) whose threshold comes from evaluate.py run on its own crops."""

import json
import shutil

import cv2
import numpy as np
import pytest

import evaluate
import export_onnx
import identify
import verify
from inference_helpers import embedding_model

pytestmark = pytest.mark.real_data

PEOPLE = {"Aaron_Peirsol": 4, "Abdullah_Gul": 3, "Amelie_Mauresmo": 3, "Adrien_Brody": 3}
TWO_FACES = "Adrien_Brody/Adrien_Brody_0002.jpg"  # MTCNN finds two faces in it


def photo(lfw_dir, name, number):
    return str(lfw_dir / "images" / name / f"{name}_{number:04d}.jpg")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, lfw_dir):
    """RUN/export/best.keras (MobileFaceNet 112x96, random weights) and RUN/eval/lfw_pairs.json written by
    evaluate.py on crops of the photos above aligned by the same code the commands use."""
    from fileio import format_generic_pairs
    from inference.embedding import align_photo, default_detector

    root = tmp_path_factory.mktemp("inference")
    run = root / "run"
    (run / "export").mkdir(parents=True)
    embedding_model("mobilefacenet", (112, 96), 64, seed=0).save(run / "export" / "best.keras")
    aligned = root / "aligned"
    for name, count in PEOPLE.items():
        (aligned / name).mkdir(parents=True)
        for number in range(1, count + 1):
            _, crop = align_photo(photo(lfw_dir, name, number), (112, 96), default_detector())
            cv2.imwrite(str(aligned / name / f"{name}_{number:04d}.png"), crop[:, :, ::-1])
    names = list(PEOPLE)
    same = [(f"{n}/{n}_0001.png", f"{n}/{n}_{k:04d}.png", True) for n in names for k in (2, 3)]
    different = [(f"{a}/{a}_0001.png", f"{b}/{b}_0002.png", False) for a in names for b in names if a != b][:len(same)]
    pairs = root / "pairs.txt"
    pairs.write_text(format_generic_pairs(same + different))
    assert evaluate.main(["--model", str(run), "--lfw-pairs", str(pairs), "--lfw-dir", str(aligned), "--no-plots",
                          "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """A photo without a face (flat grey with a gradient), a text file named .jpg."""
    root = tmp_path_factory.mktemp("odd")
    no_face = root / "wall.png"
    cv2.imwrite(str(no_face), np.tile(np.linspace(90, 160, 250, dtype=np.uint8)[:, None, None], (1, 250, 3)))
    not_image = root / "notes.jpg"
    not_image.write_text("this is not a photo")
    return {"no_face": str(no_face), "not_image": str(not_image)}


def run_cli(main, argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_decides_with_the_threshold_of_the_models_evaluation(run_dir, lfw_dir, capsys):
    from inference import embed_photos, verify_photos

    report = json.loads((run_dir / "eval" / "lfw_pairs.json").read_text())
    a, b = photo(lfw_dir, "Aaron_Peirsol", 1), photo(lfw_dir, "Aaron_Peirsol", 2)
    code, out, err = run_cli(verify.main, [a, b, "--model", str(run_dir), "--no-progress", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    features, _records = embed_photos([a, b], run_dir)
    assert result["cosine"] == pytest.approx(float(features[0] @ features[1]), abs=1e-6)
    assert result["threshold"] == pytest.approx(report["threshold_cosine"]) and result["threshold_source"] == "evaluation"
    assert result["far_at_threshold"] == pytest.approx(report["far_at_threshold"])
    assert result["same"] == (result["cosine"] > report["threshold_cosine"])
    assert [r["status"] for r in result["photos"]] == ["aligned", "aligned"]

    code, out, _ = run_cli(verify.main, [a, b, "--model", str(run_dir), "--no-progress"], capsys)
    assert code == 0
    assert f"cosine similarity {result['cosine']:.4f}" in out
    assert "from the model's evaluation on pairs.txt" in out and "false accept rate" in out
    assert ("same person" if result["same"] else "different people") in out.splitlines()[0]

    # --threshold decides instead, and says so; the API gives the same answer.
    above = result["cosine"] - 0.01
    code, out, _ = run_cli(verify.main, [a, b, "--model", str(run_dir), "--threshold", str(above), "--no-progress"],
                           capsys)
    assert code == 0 and out.startswith("same person") and "from --threshold" in out
    assert verify_photos(a, b, run_dir, threshold=above).same


def test_verify_says_which_face_it_took_and_names_bad_photos(run_dir, lfw_dir, odd_files, capsys):
    a = photo(lfw_dir, "Adrien_Brody", 1)
    two_faces = str(lfw_dir / "images" / TWO_FACES)
    code, out, _ = run_cli(verify.main, [a, two_faces, "--model", str(run_dir), "--no-progress"], capsys)
    assert code == 0 and f"{two_faces}: 2 faces found; took the largest near the centre" in out

    for bad, says in ((odd_files["no_face"], "no face detected (use --fallback center"),
                      (odd_files["not_image"], "is not in an image format"),
                      (str(lfw_dir / "images" / "No_Such_Person_0001.jpg"), "cannot read")):
        code, out, err = run_cli(verify.main, [a, bad, "--model", str(run_dir), "--no-progress"], capsys)
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and err.startswith("verify: error: ") and bad in err and says in err, err

    code, out, _ = run_cli(verify.main, [a, odd_files["no_face"], "--model", str(run_dir), "--fallback", "center",
                                         "--no-progress"], capsys)
    assert code == 0 and "no face found; used a centred crop (--fallback center)" in out

    code, _, err = run_cli(verify.main, [a, a, "--model", str(run_dir / "nowhere"), "--no-progress"], capsys)
    assert code == 1 and "model not found" in err


def test_identify_enroll_search_reenroll_and_refusals(run_dir, lfw_dir, odd_files, tmp_path, capsys):
    from inference import Gallery

    people = tmp_path / "people"
    for name, numbers in (("Aaron_Peirsol", (1, 2)), ("Abdullah_Gul", (1, 2)), ("Amelie_Mauresmo", (1,))):
        (people / name).mkdir(parents=True)
        for number in numbers:
            shutil.copy(photo(lfw_dir, name, number), people / name)
    shutil.copy(odd_files["no_face"], people / "Abdullah_Gul")
    (people / "Nobody").mkdir()
    gallery = tmp_path / "staff.gallery"
    code, out, _ = run_cli(identify.main, ["enroll", "--gallery", str(gallery), "--input-dir", str(people),
                                           "--model", str(run_dir), "--no-progress"], capsys)
    assert code == 0
    assert "added 3 (Aaron_Peirsol, Abdullah_Gul, Amelie_Mauresmo)" in out and "6 photos read, 1 failed" in out
    assert str(people / "Abdullah_Gul" / "wall.png") in out and "Nobody: no image files" in out
    enrolled = Gallery.load(gallery)
    assert enrolled.image_counts == [2, 2, 1] and enrolled.sources[2] == [str(people / "Amelie_Mauresmo" /
                                                                                 "Amelie_Mauresmo_0001.jpg")]

    # An enrolled photo finds its person first (cosine 1); a stranger is unknown under a strict threshold.
    enrolled_photo = photo(lfw_dir, "Amelie_Mauresmo", 1)
    stranger = photo(lfw_dir, "Adrien_Brody", 1)
    code, out, _ = run_cli(identify.main, ["search", "--gallery", str(gallery), enrolled_photo, stranger,
                                           odd_files["not_image"], "--threshold", "0.999", "--top-k", "2", "--json",
                                           "--no-progress"], capsys)
    assert code == 0
    found, unknown, failed = (json.loads(line) for line in out.splitlines())
    assert found["name"] == "Amelie_Mauresmo" and found["candidates"][0][1] > 0.999 and len(found["candidates"]) == 2
    assert unknown["name"] == "unknown" and unknown["candidates"][0][1] <= 0.999
    assert failed["name"] is None and failed["status"] == "failed" and "not in an image format" in failed["detail"]
    code, out, _ = run_cli(identify.main, ["search", "--gallery", str(gallery), stranger, "--no-progress"], capsys)
    assert code == 0 and "from the model's evaluation on pairs.txt" in out and "  1. " in out

    # Re-enroll: one new person, one replaced; the others are kept as they were, not recomputed.
    more = tmp_path / "more"
    for name, number in (("Adrien_Brody", 3), ("Aaron_Peirsol", 3)):
        (more / name).mkdir(parents=True)
        shutil.copy(photo(lfw_dir, name, number), more / name)
    code, out, _ = run_cli(identify.main, ["enroll", "--gallery", str(gallery), "--input-dir", str(more),
                                           "--no-progress"], capsys)  # model: the gallery's own
    assert code == 0
    assert "added 1 (Adrien_Brody), replaced 1 (Aaron_Peirsol), kept 2 unchanged; 2 photos read" in out
    updated = Gallery.load(gallery)
    assert updated.names == ["Aaron_Peirsol", "Abdullah_Gul", "Amelie_Mauresmo", "Adrien_Brody"]
    np.testing.assert_array_equal(updated.templates[1:3], enrolled.templates[1:3])
    assert not np.array_equal(updated.templates[0], enrolled.templates[0]) and updated.image_counts[0] == 1

    # Another model (other weights) is refused; a missing gallery is named with the command that makes one.
    other = tmp_path / "other" / "export"
    other.mkdir(parents=True)
    embedding_model("mobilefacenet", (112, 96), 64, seed=1).save(other / "best.keras")
    for argv in (["search", "--gallery", str(gallery), stranger, "--model", str(other.parent)],
                 ["enroll", "--gallery", str(gallery), "--input-dir", str(more), "--model", str(other.parent)]):
        code, _, err = run_cli(identify.main, argv + ["--no-progress"], capsys)
        assert code == 1 and "was enrolled with another model" in err and err.count("\n") == 1
    code, _, err = run_cli(identify.main, ["search", "--gallery", str(tmp_path / "none.gallery"), stranger,
                                           "--no-progress"], capsys)
    assert code == 1 and "gallery not found" in err and "identify.py enroll" in err


def test_api_features_of_photos_and_of_crops_agree(run_dir, lfw_dir, odd_files):
    from inference import PhotoError, embed_aligned, embed_photos, load_model
    from inference.embedding import align_photo, default_detector

    paths = [photo(lfw_dir, "Abdullah_Gul", 1), odd_files["no_face"], photo(lfw_dir, "Abdullah_Gul", 2)]
    features, report = embed_photos(paths, run_dir)
    assert features.shape == (3, 128) and features.dtype == np.float32
    assert [r.status for r in report] == ["aligned", "failed", "aligned"] and report[1].reason == "no face"
    assert np.isnan(features[1]).all()
    np.testing.assert_allclose(np.linalg.norm(features[[0, 2]], axis=1), 1.0, atol=1e-6)
    crops = np.stack([align_photo(p, (112, 96), default_detector())[1] for p in (paths[0], paths[2])])
    np.testing.assert_allclose(embed_aligned(crops, run_dir), features[[0, 2]], atol=1e-6)
    # The Keras graph and the fast graph agree to float rounding.
    keras_features = embed_aligned(crops, load_model(run_dir, engine="keras"))
    assert np.abs(keras_features - features[[0, 2]]).max() <= 2e-6
    with pytest.raises(PhotoError, match="wall.png: no face detected"):
        embed_photos(paths, run_dir, on_failure="raise")
    with pytest.raises(ValueError, match=r"needs \[N, 112, 96, 3\]"):
        embed_aligned(crops[:, :96], run_dir)


def test_export_onnx_then_the_onnx_engine_decides_the_same(run_dir, lfw_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)  # the other tests keep a run without an ONNX export
    code, out, err = run_cli(export_onnx.main, ["--model", str(run)], capsys)
    assert code == 0, err
    assert (run / "export" / "best.onnx").is_file() and "max |difference|" in out
    a, b = photo(lfw_dir, "Abdullah_Gul", 1), photo(lfw_dir, "Amelie_Mauresmo", 2)

    def verify_json(*extra):
        code, out, err = run_cli(verify.main, [a, b, "--model", str(run), "--json", "--no-progress", *extra], capsys)
        assert code == 0, err
        return json.loads(out)

    fast, onnx, auto = verify_json("--engine", "fast"), verify_json("--engine", "onnx"), verify_json()
    assert "best.onnx (onnx engine)" in onnx["model"] and "best.keras (fast engine)" in fast["model"]
    assert onnx["cosine"] == pytest.approx(fast["cosine"], abs=1e-5) and onnx["same"] == fast["same"]
    assert onnx["threshold_report"] == fast["threshold_report"]  # the same fingerprint finds the same report
    assert auto["model"] == onnx["model"]  # its own export beside the .keras: ONNX Runtime, faster per photo
    # A .keras that changed after the export (other weights) is no longer run through the stale ONNX file.
    embedding_model("mobilefacenet", (112, 96), 64, seed=2).save(run / "export" / "best.keras")
    code, out, err = run_cli(verify.main, [a, b, "--model", str(run), "--threshold", "0.2", "--json", "--no-progress"],
                             capsys)
    assert code == 0 and "best.keras (fast engine)" in json.loads(out)["model"]


def test_face_quality_is_the_feature_norm_and_min_quality_refuses_a_probe(run_dir, lfw_dir, tmp_path, capsys):
    """embed_photos reports each photo's quality (the L2 norm of its crop's raw embedding: MagFace's and
    AdaFace's quality score); verify.py and identify.py print it and refuse a probe below --min-quality."""
    from inference import embed_photos, load_model
    from inference.embedding import align_photo, default_detector

    a, b = photo(lfw_dir, "Aaron_Peirsol", 1), photo(lfw_dir, "Abdullah_Gul", 1)
    _, records = embed_photos([a, b], run_dir)
    model = load_model(run_dir)
    for path, record in zip((a, b), records):
        crop = align_photo(path, (112, 96), default_detector())[1]
        raw = np.asarray(model.embed_fn(crop[None].astype(np.float32)))[0]
        assert record.quality == pytest.approx(float(np.linalg.norm(raw)), rel=1e-5)
    qa, qb = records[0].quality, records[1].quality
    low, high = sorted((qa, qb))
    between = (low + high) / 2
    lowest = a if qa < qb else b

    code, out, _ = run_cli(verify.main, [a, b, "--model", str(run_dir), "--no-progress", "--threshold", "0.5"],
                           capsys)
    assert code == 0 and f"{a} {qa:.2f}" in out and f"{b} {qb:.2f}" in out
    code, out, err = run_cli(verify.main, [a, b, "--model", str(run_dir), "--no-progress", "--threshold", "0.5",
                                           "--min-quality", f"{between}"], capsys)
    assert code == 1 and not out
    assert f"{lowest}: face quality {low:.2f} (the feature norm) is below --min-quality {between:g}" in err
    code, out, _ = run_cli(verify.main, [a, b, "--model", str(run_dir), "--no-progress", "--threshold", "0.5",
                                         "--min-quality", f"{low - 0.01}", "--json"], capsys)
    assert code == 0 and json.loads(out)["quality"] == [qa, qb]

    people = tmp_path / "people" / "Aaron_Peirsol"
    people.mkdir(parents=True)
    shutil.copy(photo(lfw_dir, "Aaron_Peirsol", 2), people)
    gallery = tmp_path / "g.gallery"
    assert run_cli(identify.main, ["enroll", "--gallery", str(gallery), "--input-dir", str(people.parent),
                                   "--model", str(run_dir), "--no-progress"], capsys)[0] == 0
    code, out, _ = run_cli(identify.main, ["search", "--gallery", str(gallery), a, b, "--threshold", "0.5",
                                           "--min-quality", f"{between}", "--no-progress", "--json"], capsys)
    rows = {row["photo"]: row for row in map(json.loads, out.splitlines())}
    assert code == 0
    kept = b if lowest == a else a
    assert rows[lowest]["name"] is None and "below --min-quality" in rows[lowest]["detail"]
    assert rows[kept]["name"] is not None and rows[kept]["quality"] == pytest.approx(high)


def test_far_thresholds_are_used_by_both_commands_and_a_loose_one_is_flagged(run_dir, lfw_dir, tmp_path, capsys):
    """--far 1e-2: the report's threshold for that FAR, in verify.py and identify.py search; the accuracy-optimal
    threshold is flagged by verify.py when it accepted more than 1 % of impostors."""
    report = json.loads((run_dir / "eval" / "lfw_pairs.json").read_text())
    row = next(r for r in report["far_thresholds"] if r["far_target"] == 1e-2)
    a, b = photo(lfw_dir, "Aaron_Peirsol", 1), photo(lfw_dir, "Abdullah_Gul", 1)
    code, out, err = run_cli(verify.main, [a, b, "--model", str(run_dir), "--far", "1e-2", "--no-progress", "--json"],
                             capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["threshold"] == pytest.approx(row["threshold_cosine"]) and result["far_target"] == 1e-2
    assert result["far_at_threshold"] == pytest.approx(row["heldout_far"])
    code, out, _ = run_cli(verify.main, [a, b, "--model", str(run_dir), "--far", "1e-2", "--no-progress"], capsys)
    assert code == 0 and "for FAR 0.01 from the model's evaluation on pairs.txt" in out
    assert "different pairs cannot measure a FAR of 0.01" in out   # 8 different pairs here
    code, out, _ = run_cli(verify.main, [a, b, "--model", str(run_dir), "--no-progress"], capsys)
    assert (f"warning: this threshold accepted {100 * report['far_at_threshold']:.1f} % of impostors" in out) == (
        report["far_at_threshold"] > 0.01)
    code, _, err = run_cli(verify.main, [a, b, "--model", str(run_dir), "--far", "1e-2", "--threshold", "0.5",
                                         "--no-progress"], capsys)
    assert code == 1 and "--threshold or --far, not both" in err

    people = tmp_path / "people"
    for name in ("Aaron_Peirsol", "Abdullah_Gul"):
        (people / name).mkdir(parents=True)
        shutil.copy(photo(lfw_dir, name, 2), people / name)
    gallery = tmp_path / "g.gallery"
    code, out, _ = run_cli(identify.main, ["enroll", "--gallery", str(gallery), "--input-dir", str(people), "--model",
                                           str(run_dir), "--no-progress"], capsys)
    assert code == 0 and f"model: {run_dir / 'export' / 'best.keras'}" in out
    code, out, _ = run_cli(identify.main, ["search", "--gallery", str(gallery), a, "--far", "1e-2", "--json",
                                           "--no-progress"], capsys)
    assert code == 0
    found = json.loads(out.splitlines()[0])
    assert found["threshold"] == pytest.approx(row["threshold_cosine"]) and found["far_target"] == 1e-2


def test_without_a_model_or_run_the_commands_use_the_starter_model_and_say_so(run_dir, lfw_dir, tmp_path,
                                                                              monkeypatch, capsys):
    """No --model, no run under --runs-dir: the starter model (here a copy of the test model, named by
    FACEID_STARTER_MODEL) with the report shipped beside it; absent, one line says so."""
    from engines.starter import STARTER_ENV

    starter = tmp_path / "starter" / "mobilefacenet_lfw_devtrain.keras"
    starter.parent.mkdir()
    shutil.copy(run_dir / "export" / "best.keras", starter)
    shutil.copy(run_dir / "eval" / "lfw_pairs.json", starter.parent / "report.json")
    monkeypatch.setenv(STARTER_ENV, str(starter))
    a, b = photo(lfw_dir, "Aaron_Peirsol", 1), photo(lfw_dir, "Aaron_Peirsol", 2)
    code, out, err = run_cli(verify.main, [a, b, "--runs-dir", str(tmp_path / "no_runs"), "--no-progress"], capsys)
    assert code == 0, err
    assert f"model: the starter model (trained on LFW DevTrain people; docs/using-a-model.md) {starter}" in out
    assert f"{starter.parent / 'report.json'}" in out
    code, out, err = run_cli(verify.main, [a, b, "--model", "starter", "--no-progress"], capsys)
    assert code == 0 and "the starter model" in out
    monkeypatch.setenv(STARTER_ENV, str(tmp_path / "gone.keras"))
    code, out, err = run_cli(verify.main, [a, b, "--model", "starter", "--no-progress"], capsys)
    assert code == 1 and err.count("\n") == 1 and "the starter model is not installed" in err
