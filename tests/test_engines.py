"""Every export format against the Keras model, the engines in the commands, and bad model files.

Faces: eight real LFW photos (two each of four people) through the alignment of training when
../shared is there, else smooth synthetic crops (the same checks, on other inputs). The int8 formats
are calibrated on those crops. Tolerances, for this untrained MobileFaceNet (random weights with
trained-like batch statistics, 64-d):
- onnx, litert (float32): max |difference| of raw embeddings <= 1e-4 (the ONNX test's bound);
- litert-fp16 (float16 weights, float32 compute): every weight rounded to 11 significant bits, so
  raw embeddings move by ~1e-3 of their norm: cosine(Keras, fp16) >= 0.9999 per image, and no
  same/different decision flips on the 28 pairs of the eight faces;
- onnx-int8, litert-int8, litert-int8-mixed: int8 activations carry ~8 bits per layer through ~50 layers; on this
  untrained model cosine(Keras, int8) >= 0.8 per image, and at most 7 of 28 decisions (25 %) flip
  at the median-cosine threshold (measured: stated in the assertion message). A trained model's
  figures are in benchmarks/export_formats.py's results (docs/using-a-model.md).
"""

import itertools
import json

import cv2
import numpy as np
import pytest

from engines.base import EXPORT_FORMATS, INT8_FORMATS
from engines.registry import ENGINE_NAMES, FLOAT32_ENGINES
from inference_helpers import embedding_model

PHOTOS = [f"{name}/{name}_{i:04d}.jpg" for name in ("Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Amelie_Mauresmo")
          for i in (1, 2)]
FLOAT32 = tuple(e for e in FLOAT32_ENGINES if e not in ("keras", "fast"))   # the exports checked to 1e-4 below
INT8 = INT8_FORMATS


def synthetic_faces(count=8, seed=0):
    """uint8 [count, 112, 96, 3]: smooth random images (blurred noise), a stand-in without ../shared."""
    rng = np.random.default_rng(seed)
    faces = [cv2.GaussianBlur(rng.uniform(0, 255, (112, 96, 3)).astype(np.float32), (0, 0), 4) for _ in range(count)]
    return np.stack([np.clip((f - f.mean()) * 4 + 128, 0, 255) for f in faces]).astype(np.uint8)


@pytest.fixture(scope="module")
def faces(request):
    """(uint8 [8, 112, 96, 3], "real" or "synthetic")."""
    try:
        lfw_dir = request.getfixturevalue("lfw_dir")
    except pytest.skip.Exception:
        return synthetic_faces(), "synthetic"
    from inference.embedding import align_photo, default_detector

    crops = []
    for rel in PHOTOS:
        record, crop = align_photo(lfw_dir / "images" / rel, (112, 96), default_detector())
        assert record.status == "aligned", record
        crops.append(crop)
    return np.stack(crops), "real"


@pytest.fixture(scope="module")
def exported(faces, tmp_path_factory):
    """RUN/export/best.keras and its exports, every format (the int8 ones calibrated on the faces); RUN/aligned/."""
    import export

    run = tmp_path_factory.mktemp("engines") / "run"
    (run / "export").mkdir(parents=True)
    embedding_model("mobilefacenet", (112, 96), 64, seed=3).save(run / "export" / "best.keras")
    aligned = run.parent / "aligned"
    for i, crop in enumerate(faces[0]):
        (aligned / f"p{i // 2}").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(aligned / f"p{i // 2}" / f"p{i // 2}_{i % 2 + 1:04d}.png"), crop[:, :, ::-1])
    for fmt in EXPORT_FORMATS:
        extra = ["--calibration-dir", str(aligned)] if fmt in INT8 else []
        assert export.main(["--model", str(run), "--format", fmt, *extra]) == 0, fmt
    return run, aligned


def features(embed_fn, x):
    from evaluation import combine_flips

    return combine_flips(embed_fn(x), embed_fn(x[:, :, ::-1]))


def test_every_format_against_keras(exported, faces):
    from engines import load_model
    from engines.keras_engine import make_embed_fn

    run, _ = exported
    x = faces[0].astype(np.float32)
    keras_model = load_model(run, "keras")
    want = make_embed_fn(keras_model.keras_model)(x)
    keras_features = features(keras_model.embed_fn, x)
    pairs = np.array(list(itertools.combinations(range(len(x)), 2)))

    def cosines(f):
        return np.sum(f[pairs[:, 0]] * f[pairs[:, 1]], axis=1)

    threshold = float(np.median(cosines(keras_features)))
    assert np.abs(cosines(keras_features) - threshold).min() > 1e-5, "a pair sits on the threshold"
    flips = {}
    for fmt in EXPORT_FORMATS:
        model = load_model(run, fmt)
        assert model.engine == fmt and model.image_size == (112, 96)
        assert model.fingerprint == keras_model.fingerprint  # reports and galleries carry over
        for batch in (x, x[:1], x[:3]):  # the batch size is free
            got = model.embed_fn(batch)
            assert got.shape == (len(batch), 64) and got.dtype == np.float32
        got = model.embed_fn(x)
        cosine = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        flips[fmt] = int(np.sum((cosines(features(model.embed_fn, x)) > threshold) !=
                                (cosines(keras_features) > threshold)))
        if fmt in FLOAT32:
            assert np.abs(got - want).max() <= 1e-4, (fmt, np.abs(got - want).max())
            assert flips[fmt] == 0
        elif fmt == "litert-fp16":
            assert cosine.min() >= 0.9999, (fmt, cosine.min())
            assert flips[fmt] == 0
        else:
            assert cosine.min() >= 0.8, (fmt, faces[1], cosine.min())
            assert flips[fmt] <= 7, (fmt, faces[1], flips)


def test_a_mixed_precision_model_exports_to_every_format(tmp_path):
    import keras

    import export
    from engines import load_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = embedding_model("mobilefacenet", (112, 96), 32, seed=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    (tmp_path / "export").mkdir()
    model.save(tmp_path / "export" / "best.keras")
    aligned = tmp_path / "aligned" / "p"
    aligned.mkdir(parents=True)
    for i, crop in enumerate(synthetic_faces(4)):
        cv2.imwrite(str(aligned / f"{i}.png"), crop)
    x = synthetic_faces(2, seed=1).astype(np.float32)
    reference = load_model(tmp_path, "fast").embed_fn(x)  # the float32 function the exports compute
    for fmt in EXPORT_FORMATS:
        extra = ["--calibration-dir", str(aligned.parent), "--calibration-count", "4"] if fmt in INT8 else []
        assert export.main(["--model", str(tmp_path), "--format", fmt, *extra]) == 0, fmt
        got = load_model(tmp_path, fmt).embed_fn(x)
        if fmt in FLOAT32:
            assert np.abs(got - reference).max() <= 1e-4, fmt


def test_the_commands_run_every_engine(exported, capsys):
    import evaluate
    from fileio import format_generic_pairs

    run, aligned = exported
    names = [f"p{i}/p{i}_{k:04d}.png" for i in range(4) for k in (1, 2)]
    same = [(names[2 * i], names[2 * i + 1], True) for i in range(4)]
    different = [(names[2 * i], names[2 * i + 3], False) for i in range(3)] + [(names[7], names[0], False)]
    pairs = run.parent / "pairs.txt"
    pairs.write_text(format_generic_pairs(same + different))
    accuracies = {}
    for engine in ENGINE_NAMES:
        output = run.parent / f"{engine}.json"
        assert evaluate.main(["--model", str(run), "--engine", engine, "--lfw-pairs", str(pairs), "--lfw-dir",
                              str(aligned), "--no-plots", "--no-progress", "--output", str(output)]) == 0, engine
        report = json.loads(output.read_text())
        assert report["engine"] == engine
        accuracies[engine] = report["accuracy_mean"]
    assert accuracies["litert"] == accuracies["keras"] == accuracies["onnx"]
    # an export given as --model runs with its own engine; the default report name says the engine
    assert evaluate.main(["--model", str(run / "export" / "best.int8.tflite"), "--lfw-pairs", str(pairs),
                          "--lfw-dir", str(aligned), "--no-plots", "--no-progress"]) == 0
    assert json.loads((run / "eval" / "lfw_pairs_litert-int8.json").read_text())["engine"] == "litert-int8"
    capsys.readouterr()


def one_error_line(err):
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_and_mismatched_model_files_get_one_line(exported, tmp_path, capsys):
    import evaluate
    import verify

    run, aligned = exported
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all" * 10)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x00garbage")
    photo = str(aligned / "p0" / "p0_0001.png")
    cases = [
        ([photo, photo, "--model", str(bad), "--threshold", "0.3"], f"cannot load LiteRT model {bad}"),
        ([photo, photo, "--model", str(bad_onnx), "--threshold", "0.3"], f"cannot load ONNX model {bad_onnx}"),
        ([photo, photo, "--model", str(run / "export" / "best.int8.tflite"), "--engine", "litert", "--threshold",
          "0.3"], "is a litert-int8 export, not litert: pass --engine litert-int8"),
        ([photo, photo, "--model", str(run / "export" / "best.tflite"), "--engine", "onnx", "--threshold", "0.3"],
         "is a LiteRT export: it runs with --engine litert or litert-fp16 or litert-int8 or litert-int8-mixed"),
    ]
    for argv, message in cases:
        assert verify.main(argv) == 1
        line = one_error_line(capsys.readouterr().err)
        assert message in line, line
    # no export of that format beside the .keras: the file it looked for and the command that writes it
    lonely = tmp_path / "lonely" / "export"
    lonely.mkdir(parents=True)
    (lonely / "best.keras").write_bytes((run / "export" / "best.keras").read_bytes())
    assert evaluate.main(["--model", str(lonely.parent), "--engine", "onnx-int8", "--lfw-pairs",
                          str(run.parent / "pairs.txt"), "--lfw-dir", str(aligned), "--no-plots"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "best.int8.onnx" in line and "python export.py --format onnx-int8" in line


def test_export_needs_calibration_for_int8_only(exported, tmp_path, capsys):
    import export

    run, aligned = exported
    assert export.main(["--model", str(run), "--format", "litert-int8", "--output", str(tmp_path / "x.tflite")]) == 1
    assert "--calibration-shards SHARDS" in one_error_line(capsys.readouterr().err)
    assert export.main(["--model", str(run), "--format", "litert", "--calibration-dir", str(aligned)]) == 1
    assert "is not quantised" in one_error_line(capsys.readouterr().err)
    assert export.main(["--model", str(run), "--format", "litert", "--output", str(tmp_path / "x.onnx")]) == 1
    assert "--output must be a .tflite file" in one_error_line(capsys.readouterr().err)


def test_int8_calibration_reads_the_training_shards(exported, tmp_path):
    """--calibration-shards: the faces come from the train shards, bit for bit the crops they were built from."""
    from engines.calibration import calibration_faces
    from tfrecords.build import build

    _run, aligned = exported
    build(aligned, tmp_path / "shards", num_shards=2, workers=1, progress=False, log=lambda *_: None)
    from_shards = calibration_faces((112, 96), shards=tmp_path / "shards", count=4)
    from_dir = calibration_faces((112, 96), aligned_dir=aligned, count=100)
    assert from_shards.shape == (4, 112, 96, 3) and from_shards.dtype == np.uint8
    assert all(any(np.array_equal(face, crop) for crop in from_dir) for face in from_shards)
    with pytest.raises(ValueError, match="manifest"):
        calibration_faces((112, 96), shards=tmp_path, count=4)


def xnnpack_partitions_and_prelu_types(path):
    """(XNNPACK partitions of a .tflite under the LiteRT interpreter, the dtypes PReLU computes in)."""
    from engines.litert_engine import interpreter_class

    interpreter = interpreter_class()[0](model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    prelu = {dtypes[op["inputs"][0]] for op in ops if op["op_name"] == "PRELU"}
    return sum(op["op_name"] == "DELEGATE" for op in ops), prelu


def test_litert_int8_mixed_keeps_prelu_in_float32_and_the_graph_in_xnnpack(exported):
    """litert-int8 runs its PReLUs in int8, outside XNNPACK (one partition between each); the mixed file
    computes them in float32, so XNNPACK takes the graph in as many partitions as the float32 file."""
    run, _ = exported
    float_partitions, float_prelu = xnnpack_partitions_and_prelu_types(run / "export" / "best.tflite")
    int8_partitions, int8_prelu = xnnpack_partitions_and_prelu_types(run / "export" / "best.int8.tflite")
    mixed_partitions, mixed_prelu = xnnpack_partitions_and_prelu_types(run / "export" / "best.int8-mixed.tflite")
    assert float_prelu == mixed_prelu == {"float32"} and int8_prelu == {"int8"}
    assert mixed_partitions == float_partitions < int8_partitions, (float_partitions, mixed_partitions,
                                                                   int8_partitions)


def test_a_tflite_without_our_metadata_runs_as_the_kind_it_is(exported, tmp_path):
    """A .tflite from elsewhere (no faceid metadata): the engine is read off its tensors and ops."""
    from engines import export_path_for, load_model
    from engines.litert_engine import LITERT_FORMATS
    from engines.litert_export import _flatbuffer_utils

    run, _ = exported
    utils = _flatbuffer_utils()
    for fmt in LITERT_FORMATS:
        source = export_path_for(run / "export" / "best.keras", fmt)
        model = utils.convert_bytearray_to_object(bytearray(source.read_bytes()))
        model.metadata = [entry for entry in model.metadata or [] if entry.name not in (b"faceid", "faceid")]
        foreign = tmp_path / f"foreign-{fmt}.tflite"
        foreign.write_bytes(bytes(utils.convert_object_to_bytearray(model)))
        loaded = load_model(foreign)
        assert loaded.engine == fmt and loaded.fingerprint.startswith("sha256-file:"), (fmt, loaded.engine)
