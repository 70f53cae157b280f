"""IJB-B/C evaluation (evaluation.ijb*, evaluate.py --ijb) on a miniature IJB-C-format set made from real
LFW photos: the raw 250x250 photos are the loose crops, their five landmarks and detector scores come
from MTCNN (align.FaceDetector), 6 people x 6 photos, templates of 1-6 images in several media, a G1/G2
gallery and mixed probes. The numbers are checked against a plainly written implementation here
(insightface's loops, sklearn's roc_curve) to 1e-9.
"""

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluation.ijb import FLIPS, FeatureCache, crop_loader, evaluate_features, image_features
from evaluation.ijb_meta import read_ijb
from evaluation.ijb_metrics import roc_curve, tar_at_far

PEOPLE = ("Ariel_Sharon", "Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder", "Tony_Blair")
PHOTOS = 6
X_LABELS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


@pytest.fixture(scope="session")
def mini_ijb(lfw_dir, tmp_path_factory):
    """IJB_DIR of a miniature IJB-C: 36 LFW photos as 48 loose crops (some photos in two templates)."""
    from align import FaceDetector, pick_face
    from evaluation.images import read_rgb

    root = tmp_path_factory.mktemp("mini") / "IJBC"
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    detector = FaceDetector()
    photos = {}
    for p, person in enumerate(PEOPLE):
        for k in range(PHOTOS):
            src = lfw_dir / "images" / person / f"{person}_{k + 1:04d}.jpg"
            image = read_rgb(src)
            faces = detector.detect(image)
            face = faces[pick_face(faces, image.shape)]
            photos[p, k] = (src, face.landmarks, face.score)
    number, media = itertools.count(1), itertools.count(5000)
    rows, landmark_lines, csv = [], [], {"G1": [], "G2": [], "probe": []}

    def add(p, k, template, media_id, role):
        name = f"{next(number)}.jpg"
        src, landmarks, score = photos[p, k]
        shutil.copy(src, root / "loose_crop" / name)
        rows.append(f"{name} {template} {media_id}")
        landmark_lines.append(name + " " + " ".join(f"{v:.3f}" for v in np.ravel(landmarks)) + f" {score:.6f}")
        csv[role].append(f"{template},{1000 + p},{name}")

    for p in range(len(PEOPLE)):
        g = "G1" if p < 3 else "G2"
        video = next(media)
        add(p, 0, 100 + p, video, g)  # a gallery template of 3 images: two frames of one video and a still
        add(p, 1, 100 + p, video, g)
        add(p, 2, 100 + p, next(media), g)
        add(p, 3, 200 + p, next(media), "probe")  # a 1-image probe
        if p % 2 == 0:  # a 6-image probe: all the person's photos again, in 3 media of 2
            m = [next(media) for _ in range(3)]
            for k in range(PHOTOS):
                add(p, k, 300 + p, m[k // 2], "probe")
        else:
            add(p, 4, 300 + p, next(media), "probe")
            add(p, 5, 300 + p, next(media), "probe")
    meta = root / "meta"
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(rows) + "\n")
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(landmark_lines) + "\n")
    pairs = [f"{100 + g} {t + q} {int(g == q)}" for g in range(6) for t in (200, 300) for q in range(6)]
    (meta / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    for role, lines in csv.items():
        name = "ijbc_1N_probe_mixed.csv" if role == "probe" else f"ijbc_1N_gallery_{role}.csv"
        (meta / name).write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n" + "\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------ the plain implementation to check against


def plain_ijb(root, names, emb, emb_flip, flip="sum", norm="keep", detector="weight"):
    """What insightface's eval_ijbc.py / ijb_1n.py compute, written out with loops and sklearn."""
    from sklearn.metrics import auc
    from sklearn.metrics import roc_curve as sk_roc_curve

    meta = Path(root) / "meta"
    def lines(name):
        return (meta / name).read_text().splitlines()

    score_of = {line.split()[0]: float(line.split()[-1]) for line in lines("ijbc_name_5pts_score.txt")}
    row_of = {n: i for i, n in enumerate(names)}
    media_feats = {}  # template -> media -> [features]
    for line in lines("ijbc_face_tid_mid.txt"):
        name, template, media = line.split()
        e = np.asarray(emb[row_of[name]], np.float64)
        ef = np.asarray(emb_flip[row_of[name]], np.float64)
        f = {"sum": e + ef, "none": e, "concat": np.concatenate([e, ef])}[flip]
        if norm == "unit":
            f = f / np.sqrt(np.sum(f ** 2))
        if detector == "weight":
            f = f * score_of[name]
        media_feats.setdefault(int(template), {}).setdefault(int(media), []).append(f)
    templates = {}
    for t, medias in media_feats.items():
        total = sum(np.mean(fs, axis=0) for fs in medias.values())
        templates[t] = total / np.sqrt(np.sum(total ** 2))
    labels, scores = [], []
    for line in lines("ijbc_template_pair_label.txt"):
        t1, t2, label = (int(v) for v in line.split())
        scores.append(float(np.sum(templates[t1] * templates[t2])))
        labels.append(label)
    fpr, tpr, _ = sk_roc_curve(labels, scores)
    out = {"auc": auc(fpr, tpr), "scores": np.array(scores), "tar": []}
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    for x in X_LABELS:
        _, min_index = min(list(zip(abs(fpr - x), range(len(fpr)))))
        out["tar"].append(tpr[min_index])

    def read_csv(name):
        found = {}
        for line in lines(name)[1:]:
            t, s = line.split(",")[:2]
            found.setdefault(int(t), int(s))
        return list(found.items())

    probes = read_csv("ijbc_1N_probe_mixed.csv")
    for g in ("G1", "G2"):
        gallery = read_csv(f"ijbc_1N_gallery_{g}.csv")
        gallery_subjects = [s for _, s in gallery]
        ranks, mate_scores, non_mated_top = [], [], []
        for t, s in probes:
            sims = [float(np.dot(templates[t], templates[gt])) for gt, _ in gallery]
            if s in gallery_subjects:
                order = sorted(range(len(gallery)), key=lambda j: -sims[j])
                ranks.append(order.index(gallery_subjects.index(s)) + 1)
                mate_scores.append(sims[gallery_subjects.index(s)])
            else:
                non_mated_top.append(max(sims))
        result = {f"rank{k}": sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
        tops = sorted(non_mated_top, reverse=True)
        result["tpir"] = []
        for f in (1e-2, 1e-1):
            threshold = tops[math.floor(f * len(tops))]
            hits = sum(1 for r, m in zip(ranks, mate_scores) if r == 1 and m > threshold)
            result["tpir"].append(hits / len(ranks))
        out[g] = result
    return out


def assert_matches_plain(result, scores, plain):
    np.testing.assert_allclose(scores, plain["scores"], rtol=0, atol=1e-9)
    assert abs(result["verification"]["auc"] - plain["auc"]) < 1e-9
    assert [r["tar"] for r in result["verification"]["tar_at_far"]] == pytest.approx(plain["tar"], abs=1e-9)
    for g in ("G1", "G2"):
        ours = result["identification"][g]
        for k in (1, 5, 10):
            assert abs(ours[f"rank{k}"] - plain[g][f"rank{k}"]) < 1e-9, (g, k)
        assert [r["tpir"] for r in ours["tpir_at_fpir"]] == pytest.approx(plain[g]["tpir"], abs=1e-9)
    mean = result["identification"]["mean"]
    assert mean["rank1"] == pytest.approx((plain["G1"]["rank1"] + plain["G2"]["rank1"]) / 2, abs=1e-12)


def random_embeddings(meta, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    n = len(meta.image_names)
    return rng.standard_normal((n, dim)).astype(np.float32), rng.standard_normal((n, dim)).astype(np.float32)


# ------------------------------------------------------------------------------------------- tests


def test_reads_the_miniature_protocol(mini_ijb):
    meta = read_ijb(mini_ijb, "IJBC")
    assert len(meta.image_names) == 48 and len(meta.row_image) == 48
    assert len(np.unique(meta.row_template)) == 18
    assert len(meta.pair_label) == 72 and meta.pair_label.sum() == 12
    assert list(meta.galleries) == ["G1", "G2"] and len(meta.probe.templates) == 12
    assert meta.landmarks.shape == (48, 5, 2) and (meta.detector_scores > 0.9).all()  # MTCNN found each face


@pytest.mark.parametrize("norm", ["keep", "unit"])
@pytest.mark.parametrize("detector", ["weight", "ignore"])
def test_every_mode_equals_the_plain_implementation(mini_ijb, norm, detector):
    meta = read_ijb(mini_ijb, "IJBC")
    emb, emb_flip = random_embeddings(meta)
    for flip in FLIPS:
        result, _, scores = evaluate_features(meta, emb, emb_flip, flip, norm, detector)
        assert_matches_plain(result, scores, plain_ijb(mini_ijb, meta.image_names, emb, emb_flip, flip, norm, detector))


def test_each_mode_changes_only_what_it_should(mini_ijb):
    meta = read_ijb(mini_ijb, "IJBC")
    emb, emb_flip = random_embeddings(meta)
    rng = np.random.default_rng(1)
    other_flip = rng.standard_normal(emb_flip.shape).astype(np.float32)
    scale = (2.0 ** rng.integers(-3, 4, (len(emb), 1))).astype(np.float32)  # powers of 2: exact in float32

    def scores(e=emb, ef=emb_flip, **modes):
        return evaluate_features(meta, e, ef, **modes)[2]

    base = scores()
    # F0 ignores the mirror images' embeddings; F1 uses them
    np.testing.assert_array_equal(scores(flip="none"), scores(ef=other_flip, flip="none"))
    assert np.abs(scores(ef=other_flip) - base).max() > 1e-3
    # N0 ignores each image's feature norm; N1 keeps it (it weights images within a template)
    np.testing.assert_allclose(scores(emb * scale, emb_flip * scale, norm="unit"), scores(norm="unit"), atol=1e-12)
    assert np.abs(scores(emb * scale, emb_flip * scale) - base).max() > 1e-3
    # D0 ignores the detector scores; D1 uses them, but one common factor cancels in the template norm
    saved = meta.detector_scores.copy()
    d0 = scores(detector="ignore")
    meta.detector_scores = rng.uniform(0.1, 1.0, len(saved))
    try:
        np.testing.assert_array_equal(scores(detector="ignore"), d0)
        assert np.abs(scores() - base).max() > 1e-3
        meta.detector_scores = np.full(len(saved), 0.37)
        np.testing.assert_allclose(scores(), d0, atol=1e-12)
    finally:
        meta.detector_scores = saved
    # a 1-image template's feature is the same in every N and D mode (the template norm undoes both)
    single = image_features(emb[:1], emb_flip[:1], [0.5], norm="unit", detector="weight")
    np.testing.assert_allclose(single / np.linalg.norm(single), (emb[:1] + emb_flip[:1]) / np.linalg.norm(
        emb[:1] + emb_flip[:1]), atol=1e-6)


def test_roc_equals_sklearn_with_ties_and_the_nearest_point_rule():
    from sklearn.metrics import auc
    from sklearn.metrics import roc_curve as sk_roc_curve

    rng = np.random.default_rng(2)
    labels = rng.random(20000) < 0.05
    scores = np.round(rng.standard_normal(20000) + 2.0 * labels, 2)  # many tied scores
    fpr, tpr, thr = roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(labels, scores)
    np.testing.assert_array_equal(fpr, sk_fpr)
    np.testing.assert_array_equal(tpr, sk_tpr)
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc(sk_fpr, sk_tpr), abs=1e-12)
    flipped_fpr, flipped_tpr = np.flipud(sk_fpr), np.flipud(sk_tpr)
    for x, row in zip(X_LABELS, tar_at_far(fpr, tpr, thr, X_LABELS)):
        _, k = min(list(zip(abs(flipped_fpr - x), range(len(flipped_fpr)))))
        assert row["tar"] == flipped_tpr[k] and row["far"] == flipped_fpr[k]


class OracleModel:
    """An embedding function that knows who each aligned crop shows (by its exact pixels): a model that
    separates the people perfectly, to check that the plumbing keeps templates, media and labels together."""

    def __init__(self, meta, image_size):
        load = crop_loader(meta, image_size)
        person = {}
        for name, row_template in zip(meta.image_names, meta.row_template[np.argsort(meta.row_image)]):
            crop = load(name)
            p = int(row_template) % 100
            person[crop.tobytes()] = person[crop[:, ::-1].tobytes()] = p
        self.person = person

    def __call__(self, batch):
        out = np.zeros((len(batch), 8), np.float32)
        for i, image in enumerate(np.asarray(batch).astype(np.uint8)):
            out[i, self.person[image.tobytes()]] = 1.0
        return out + 0.01


def test_a_model_that_separates_people_scores_far_above_chance(mini_ijb, tmp_path):
    from engines import EmbeddingModel
    from evaluation.ijb import evaluate_model_on_ijb

    meta = read_ijb(mini_ijb, "IJBC")
    model = EmbeddingModel(path=tmp_path / "oracle.keras", engine="keras", image_size=(112, 112),
                           fingerprint="sha256:oracle", embed_fn=OracleModel(meta, (112, 112)), eval_dir=tmp_path)
    result, _, _ = evaluate_model_on_ijb(mini_ijb, "IJBC", model, progress=False)
    assert result["verification"]["auc"] == 1.0
    assert all(r["tar"] == 1.0 for r in result["verification"]["tar_at_far"])
    for g in ("G1", "G2", "mean"):
        assert result["identification"][g]["rank1"] == 1.0
        assert all(r["tpir"] == 1.0 for r in result["identification"][g]["tpir_at_fpir"])
    # chance for comparison: the same function with the people shuffled over the crops
    shuffled = OracleModel(meta, (112, 112))
    keys = list(shuffled.person)
    values = np.random.default_rng(3).permutation([shuffled.person[k] for k in keys])
    shuffled.person = dict(zip(keys, values.tolist()))
    model.embed_fn, model.fingerprint = shuffled, "sha256:shuffled"
    chance, _, _ = evaluate_model_on_ijb(mini_ijb, "IJBC", model, progress=False)
    assert chance["verification"]["auc"] < 0.8


def test_cache_resumes_an_interrupted_embedding(mini_ijb, tmp_path):
    meta = read_ijb(mini_ijb, "IJBC")
    load = crop_loader(meta, (112, 96))
    calls, kill_at = [], [3]

    class Killed(Exception):
        pass

    def embed(batch):
        calls.append(len(batch))
        if len(calls) == kill_at[0]:
            raise Killed  # the run dies during the third chunk
        return np.asarray(batch, np.float32).reshape(len(batch), -1)[:, ::211] / 255.0

    def cache(directory):
        return FeatureCache(directory, "sha256:x", (112, 96), meta.files["landmarks"], len(meta.image_names), chunk=8)

    with pytest.raises(Killed):
        cache(tmp_path / "a").load_or_embed(meta.image_names, load, embed, progress=False)
    assert sorted(p.name for p in (tmp_path / "a").glob("chunk_*.npz")) == ["chunk_00000.npz", "chunk_00001.npz"]
    kill_at[0] = 0
    emb, emb_flip, embedded = cache(tmp_path / "a").load_or_embed(meta.image_names, load, embed, progress=False)
    assert embedded == 48 - 16 and not list((tmp_path / "a").glob("chunk_*"))
    calls.clear()
    fresh = cache(tmp_path / "b").load_or_embed(meta.image_names, load, embed, progress=False)
    np.testing.assert_array_equal(fresh[0], emb)
    np.testing.assert_array_equal(fresh[1], emb_flip)
    calls.clear()
    assert cache(tmp_path / "a").load_or_embed(meta.image_names, load, embed, progress=False)[2] == 0 and not calls
    other = FeatureCache(tmp_path / "a", "sha256:other", (112, 96), meta.files["landmarks"], 48, chunk=8)
    with pytest.raises(ValueError, match="another model_fingerprint"):
        other.load_or_embed(meta.image_names, load, embed, progress=False)


def test_cli_runs_end_to_end_with_an_exported_model(mini_ijb, tmp_path, capsys):
    import keras

    import evaluate

    inputs = keras.Input((112, 96, 3))
    x = keras.layers.AveragePooling2D(8)(keras.layers.Rescaling(1 / 127.5, -1.0)(inputs))
    x = keras.layers.Dense(4, kernel_initializer=keras.initializers.RandomNormal(seed=0))(x)
    model_path = tmp_path / "run" / "export" / "embedding.keras"
    model_path.parent.mkdir(parents=True)
    keras.Model(inputs, keras.layers.Flatten()(x)).save(model_path)
    args = ["--ijb", str(mini_ijb), "--target", "IJBC", "--model", str(model_path), "--engine", "keras",
            "--no-progress"]
    assert evaluate.main(args) == 0
    out = capsys.readouterr().out
    assert "TAR %" in out and "G1" in out and "G2" in out and "mean" in out and "FAR 0.0001" in out
    report = tmp_path / "run" / "eval" / "ijbc_F1N1D1.json"
    assert report.is_file() and report.with_name("ijbc_F1N1D1_roc.png").stat().st_size > 0
    result = json.loads(report.read_text())
    assert result["images_embedded"] == 48 and result["image_size"] == [112, 96]
    with np.load(Path(result["cache_dir"]) / "features.npz") as data:
        names, emb, emb_flip = list(data["names"]), data["emb"], data["emb_flip"]
        np.testing.assert_array_equal(data["detector_scores"], read_ijb(mini_ijb).detector_scores)
    plain = plain_ijb(mini_ijb, names, emb, emb_flip)
    assert result["verification"]["auc"] == pytest.approx(plain["auc"], abs=1e-9)
    assert [r["tar"] for r in result["verification"]["tar_at_far"]] == pytest.approx(plain["tar"], abs=1e-9)
    assert result["identification"]["G2"]["rank5"] == pytest.approx(plain["G2"]["rank5"], abs=1e-9)
    # another mode rescored from the cache: nothing embedded
    assert evaluate.main([*args, "--ijb-norm", "unit", "--flip", "none", "--no-plots"]) == 0
    assert json.loads((report.parent / "ijbc_F0N0D1.json").read_text())["images_embedded"] == 0


# ------------------------------------------------------------------------------------------- bad inputs


def _copy_meta(mini_ijb, tmp_path, crops=None):
    root = tmp_path / "IJBC"
    shutil.copytree(mini_ijb / "meta", root / "meta")
    (root / "loose_crop").mkdir()
    for f in sorted((mini_ijb / "loose_crop").iterdir()):
        if crops is None or f.name in crops:
            (root / "loose_crop" / f.name).symlink_to(f)
    return root


def _edit(path, line_number, new_line):
    lines = path.read_text().splitlines()
    lines[line_number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


def _one_line_error(excinfo, *parts):
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


def test_missing_image_names_the_file_and_landmark_line(mini_ijb, tmp_path, capsys):
    import evaluate

    root = _copy_meta(mini_ijb, tmp_path, crops={f"{k}.jpg" for k in range(1, 49) if k != 7})
    with pytest.raises(FileNotFoundError) as excinfo:
        read_ijb(root, "IJBC")
    _one_line_error(excinfo, "loose_crop/7.jpg", "ijbc_name_5pts_score.txt line 7")
    assert evaluate.main(["--ijb", str(root), "--model", str(tmp_path / "never_loaded.keras")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "loose_crop/7.jpg" in err[-1]


def test_landmark_line_with_wrong_field_count(mini_ijb, tmp_path):
    root = _copy_meta(mini_ijb, tmp_path)
    path = root / "meta" / "ijbc_name_5pts_score.txt"
    _edit(path, 5, " ".join(path.read_text().splitlines()[4].split()[:-1]))  # the score dropped: 11 fields
    with pytest.raises(ValueError) as excinfo:
        read_ijb(root, "IJBC")
    _one_line_error(excinfo, "ijbc_name_5pts_score.txt line 5", "expected 12 fields", "got 11")


def test_pair_naming_an_absent_template(mini_ijb, tmp_path):
    root = _copy_meta(mini_ijb, tmp_path)
    _edit(root / "meta" / "ijbc_template_pair_label.txt", 9, "100 999 0")
    with pytest.raises(ValueError) as excinfo:
        read_ijb(root, "IJBC")
    _one_line_error(excinfo, "ijbc_template_pair_label.txt line 9", "template 999")
    _edit(root / "meta" / "ijbc_template_pair_label.txt", 9, "100 200")
    with pytest.raises(ValueError) as excinfo:
        read_ijb(root, "IJBC")
    _one_line_error(excinfo, "ijbc_template_pair_label.txt line 9", "expected 3 fields")


def test_empty_template_in_a_1n_list(mini_ijb, tmp_path):
    root = _copy_meta(mini_ijb, tmp_path)
    path = root / "meta" / "ijbc_1N_gallery_G1.csv"
    path.write_text(path.read_text() + "555,1999,nothing.jpg\n")
    with pytest.raises(ValueError) as excinfo:
        read_ijb(root, "IJBC")
    line = len(path.read_text().splitlines())
    _one_line_error(excinfo, f"ijbc_1N_gallery_G1.csv line {line}", "template 555 is empty")
    assert read_ijb(root, "IJBC", need_1n=False).galleries == {}  # 1:1 alone does not read the 1:N lists
