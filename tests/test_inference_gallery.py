"""Gallery file and search, and where thresholds come from (numpy only: no model, no TensorFlow)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from inference.gallery import Gallery, GalleryError
from inference.identification import open_set_note
from inference.thresholds import Threshold, ThresholdError, model_threshold


def unit(rows):
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def fake_model(fingerprint="sha256:aaa", path="runs/r/export/best.keras", eval_dir="runs/r/eval"):
    return SimpleNamespace(fingerprint=fingerprint, path=Path(path), image_size=(112, 96), eval_dir=Path(eval_dir),
                           engine="fast")


def test_template_is_the_normalised_mean_and_search_is_exact_top_k():
    rng = np.random.default_rng(0)
    gallery = Gallery.for_model(fake_model())
    photos = {f"person {i}": unit(rng.normal(size=(i + 1, 16))) for i in range(7)}
    for name, features in photos.items():
        assert gallery.enroll(name, features, [f"{name}/{k}.jpg" for k in range(len(features))]) == "added"
    mean = photos["person 3"].mean(axis=0)
    np.testing.assert_allclose(gallery.templates[3], mean / np.linalg.norm(mean), rtol=1e-6)
    probes = unit(rng.normal(size=(5, 16))).astype(np.float32)
    rows, cosines = gallery.search(probes, top_k=3)
    brute = probes @ gallery.templates.T
    for q in range(5):
        want = np.argsort(-brute[q], kind="stable")[:3]
        assert list(rows[q]) == list(want)
        np.testing.assert_allclose(cosines[q], brute[q][want], rtol=1e-6)
    rows, _ = gallery.search(probes, top_k=50)  # more than enrolled: everyone, best first
    assert rows.shape == (5, 7)


def test_save_load_round_trip_replace_and_refusals(tmp_path):
    rng = np.random.default_rng(1)
    gallery = Gallery.for_model(fake_model())
    gallery.enroll("Zoë Ångström", unit(rng.normal(size=(2, 8))), ["a/1.jpg", "a/2.png"])
    gallery.enroll("B", unit(rng.normal(size=(1, 8))), ["b/1.jpg"])
    path = tmp_path / "staff.gallery"  # any name: not renamed to .npz
    gallery.save(path)
    loaded = Gallery.load(path)
    assert loaded.names == ["Zoë Ångström", "B"] and loaded.sources == [["a/1.jpg", "a/2.png"], ["b/1.jpg"]]
    assert loaded.image_counts == [2, 1] and loaded.model_fingerprint == "sha256:aaa" and loaded.image_size == (112, 96)
    np.testing.assert_array_equal(loaded.templates, gallery.templates)
    before_b = loaded.templates[1].copy()
    assert loaded.enroll("Zoë Ångström", unit(rng.normal(size=(3, 8))), ["c", "d", "e"]) == "replaced"
    assert len(loaded) == 2 and loaded.image_counts == [3, 1]
    np.testing.assert_array_equal(loaded.templates[1], before_b)  # the others are left as they were

    with pytest.raises(GalleryError, match="enrolled with another model"):
        loaded.check_model(fake_model("sha256:bbb", "other.keras"), path)
    with pytest.raises(GalleryError, match="gallery not found: .*identify.py enroll"):
        Gallery.load(tmp_path / "missing.gallery")
    (tmp_path / "junk.gallery").write_text("not a gallery")
    with pytest.raises(GalleryError, match="junk.gallery is not a gallery"):
        Gallery.load(tmp_path / "junk.gallery")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(GalleryError, match="not a faceid-gallery-1"):
        Gallery.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="NaN"):
        loaded.enroll("C", np.full((1, 8), np.nan), ["c.jpg"])


def test_a_failed_save_leaves_the_old_gallery(tmp_path, monkeypatch):
    gallery = Gallery.for_model(fake_model())
    gallery.enroll("A", unit(np.ones((1, 4))), ["a.jpg"])
    path = gallery.save(tmp_path / "g.gallery")
    before = path.read_bytes()
    gallery.enroll("B", unit(np.eye(4)[:1]), ["b.jpg"])

    def broken_savez(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        gallery.save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["g.gallery"]


def write_report(path, **fields):
    report = {"threshold_cosine": 0.25, "num_pairs": 1000, "num_folds": 10, "accuracy_mean": 0.85,
              "far_at_threshold": 0.114, "pairs": "/data/pairsDevTest.txt", **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))


def test_threshold_from_the_models_own_report(tmp_path):
    model = fake_model(eval_dir=tmp_path / "eval", path=tmp_path / "export" / "best.keras")
    with pytest.raises(ThresholdError, match="no evaluation report .*evaluate.py --model .*--threshold"):
        model_threshold(model)
    write_report(tmp_path / "eval" / "lfw_pairsDevTest.json", model_fingerprint="sha256:aaa")
    write_report(tmp_path / "eval" / "lfw_pairs.json", model_fingerprint="sha256:other", num_pairs=6000,
                 threshold_cosine=0.9)  # another model's report (e.g. an older best.keras): ignored
    write_report(tmp_path / "eval" / "notes.json", unrelated=True)
    (tmp_path / "eval" / "notes.json").write_text('{"unrelated": true}')
    chosen = model_threshold(model)
    assert chosen.cosine == 0.25 and chosen.source == "evaluation" and chosen.far == pytest.approx(0.114)
    assert "pairsDevTest.txt" in chosen.description and "false accept rate 11.40 %" in chosen.description
    # More pairs win among this model's reports; a report written before fingerprints counts by model path.
    write_report(tmp_path / "eval" / "lfw_pairs.json", model=str(model.path), num_pairs=6000, threshold_cosine=0.3,
                 pairs="pairs.txt")
    assert model_threshold(model).cosine == 0.3
    given = model_threshold(model, threshold=0.5)
    assert given.cosine == 0.5 and given.source == "--threshold" and given.far is None
    with pytest.raises(ThresholdError, match=r"\[-1, 1\]"):
        model_threshold(model, threshold=1.5)
    write_report(tmp_path / "r.json", model_fingerprint="sha256:other", model="m2.keras")
    with pytest.raises(ThresholdError, match="evaluated another model"):
        model_threshold(model, report_path=tmp_path / "r.json")


def test_a_quantised_engine_prefers_its_own_report_and_float32_engines_share_theirs(tmp_path):
    eval_dir = tmp_path / "eval"
    write_report(eval_dir / "lfw_pairs.json", engine="keras", num_pairs=6000, threshold_cosine=0.30,
                 model_fingerprint="sha256:aaa")
    write_report(eval_dir / "lfw_pairsDevTest_litert-int8.json", engine="litert-int8", threshold_cosine=0.20,
                 model_fingerprint="sha256:aaa")
    write_report(eval_dir / "lfw_pairs_onnx-int8.json", engine="onnx-int8", num_pairs=9000,
                 threshold_cosine=0.10, model_fingerprint="sha256:aaa")
    for engine, cosine in (("litert-int8", 0.20), ("onnx-int8", 0.10), ("fast", 0.30), ("litert", 0.30),
                           ("litert-fp16", 0.30)):   # fp16 has no report of its own: the float32 one, with more pairs
        model = SimpleNamespace(**{**vars(fake_model(eval_dir=eval_dir)), "engine": engine})
        assert model_threshold(model).cosine == cosine, engine


def test_open_set_note_warns_when_a_pairwise_threshold_guards_a_large_gallery():
    verification = Threshold(0.201, "evaluation", Path("r.json"), 0.114, "")
    assert "100 % of strangers will match someone" in open_set_note(verification, 496)  # 1 - 0.886^496
    assert "about 30 % of strangers" in open_set_note(verification, 3)
    assert open_set_note(verification, 2) is None  # 21 %: not much above the pairwise 11 %
    assert open_set_note(Threshold(0.6, "--threshold", None, None, ""), 496) is None  # the user chose it
