"""tfrecords/: builder round trip, filters, held-out identities, errors, resume, reader output."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfrecords import features as F
from tfrecords.build import KILL_HOOK_ENV, BuildError, build
from tfrecords.manifest import ManifestError, ShardError, open_shards, read_manifest
from tfrecords.reader import make_train_dataset, read_split_images

REPO = Path(__file__).resolve().parents[1]
H, W = 16, 12  # tiny images keep the suite fast; the code is size-agnostic


def quiet(*_):
    pass


def make_aligned(root, counts, size=(H, W), seed=0, png_every=0):
    """root/<person_i>/<k>.jpg with random content; returns {relative path: bytes}."""
    rng = np.random.default_rng(seed)
    files = {}
    for i, n in enumerate(counts):
        person = root / f"person_{i:02d}"
        person.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            ext = ".png" if png_every and k % png_every == png_every - 1 else ".jpg"
            ok, buf = cv2.imencode(ext, img)
            assert ok
            path = person / f"img_{k:03d}{ext}"
            path.write_bytes(buf.tobytes())
            files[f"{person.name}/{path.name}"] = buf.tobytes()
    return files


def read_records(data_dir, split="train"):
    """[(encoded, format, label, identity, path)] of every record of a split, in stored order."""
    manifest = read_manifest(data_dir)
    out = []
    for shard in manifest["splits"][split]["shards"]:
        for raw in tf.data.TFRecordDataset(str(Path(data_dir) / shard["file"])):
            ex = tf.io.parse_single_example(raw, F.feature_spec())
            out.append((ex[F.ENCODED].numpy(), ex[F.FORMAT].numpy().decode(), int(ex[F.LABEL]),
                        ex[F.IDENTITY].numpy().decode(), ex[F.PATH].numpy().decode()))
    return out


def test_round_trip_bytes_labels_names(tmp_path):
    files = make_aligned(tmp_path / "in", [3, 1, 4, 2], png_every=3)
    (tmp_path / "in" / "align_summary.json").write_text("{}\n")  # top-level files are not identities
    manifest = build(tmp_path / "in", tmp_path / "out", num_shards=3, progress=False, log=quiet)
    records = read_records(tmp_path / "out")
    assert sorted(r[4] for r in records) == sorted(files)  # every image once, no duplicates
    names = sorted({p.split("/")[0] for p in files})
    assert manifest["labels"] == names and manifest["num_classes"] == 4
    for encoded, fmt, label, identity, path in records:
        assert encoded == files[path]  # stored as is, never re-encoded
        assert identity == path.split("/")[0] and label == names.index(identity)
        assert fmt == ("png" if path.endswith(".png") else "jpeg")
    assert manifest["image_size"] == [H, W] and manifest["num_images"] == 10
    assert manifest["class_counts"] == [3, 1, 4, 2]
    assert manifest["splits"]["train"]["formats"] == {"jpeg": 8, "png": 2}
    for shard in manifest["splits"]["train"]["shards"]:
        data = (tmp_path / "out" / shard["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
    assert [s["file"] for s in manifest["splits"]["train"]["shards"]] == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert not list((tmp_path / "out").glob("*.tmp*"))


def test_unreadable_inputs_are_listed_not_dropped(tmp_path):
    make_aligned(tmp_path / "in", [3, 3])
    good = (tmp_path / "in" / "person_00" / "img_000.jpg").read_bytes()
    (tmp_path / "in" / "person_00" / "img_009.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "in" / "person_01" / "img_009.jpg").write_bytes(b"not an image")
    (tmp_path / "in" / "person_01" / "notes.txt").write_text("hello")
    manifest = build(tmp_path / "in", tmp_path / "out", num_shards=2, progress=False, log=quiet)
    assert manifest["num_images"] == 6 and manifest["unreadable"]["count"] == 3
    listed = (tmp_path / "out" / "unreadable.txt").read_text()
    for name in ("person_00/img_009.jpg", "person_01/img_009.jpg", "person_01/notes.txt"):
        assert name in listed
    assert "truncated" in listed


def test_wrong_size_is_an_error_naming_the_file_or_resized(tmp_path):
    make_aligned(tmp_path / "in", [2, 2])
    big = np.full((2 * H, 2 * W, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "in" / "person_01" / "img_zzz.jpg"), big)
    with pytest.raises(BuildError, match=r"person_01/img_zzz\.jpg.*--resize"):
        build(tmp_path / "in", tmp_path / "out", image_size=(H, W), progress=False, log=quiet)
    manifest = build(tmp_path / "in", tmp_path / "out", image_size=(H, W), resize=True, progress=False, log=quiet)
    assert manifest["splits"]["train"]["resized"] == 1 and manifest["num_images"] == 5
    _, images = read_split_images(open_shards(tmp_path / "out"), "train")
    assert images.shape == (5, H, W, 3)


def test_filters_and_held_out_identities(tmp_path):
    counts = [1, 2, 5, 12, 30, 3, 25, 8, 11, 4]
    make_aligned(tmp_path / "in", counts)
    people = tmp_path / "people.txt"  # LFW people-file layout: fold count lines, name<TAB>count
    people.write_text("1\n9\n" + "".join(f"person_{i:02d}\t{c}\n" for i, c in enumerate(counts) if i != 6))
    manifest = build(tmp_path / "in", tmp_path / "out", people=people, min_images=3, max_images_per_class=10,
                     val_identities=2, val_pairs=40, seed=3, progress=False, log=quiet)
    kept = ["person_02", "person_03", "person_04", "person_05", "person_07", "person_08", "person_09"]
    val = manifest["splits"]["val"]["labels"]
    assert len(val) == 2 and set(val) <= set(kept)
    assert manifest["labels"] == sorted(set(kept) - set(val))  # contiguous labels, sorted names
    train = read_records(tmp_path / "out", "train")
    held = read_records(tmp_path / "out", "val")
    assert {r[3] for r in train}.isdisjoint({r[3] for r in held})  # no held-out identity in training
    assert max(manifest["class_counts"]) <= 10 and min(manifest["class_counts"]) >= 3
    assert {r[2] for r in train} == set(range(manifest["num_classes"]))
    # val_pairs.txt: generic list over val image/path values, parsed by evaluation
    from evaluation.pairs import read_pairs

    pairs = read_pairs(tmp_path / "out" / manifest["val_pairs"])
    val_paths = {r[4] for r in held}
    assert set(pairs.paths_a) | set(pairs.paths_b) <= val_paths
    same = [a.split("/")[0] == b.split("/")[0] for a, b in zip(pairs.paths_a, pairs.paths_b)]
    assert list(pairs.issame) == same and 0 < sum(same) == len(same) - sum(same)
    paths, images = read_split_images(open_shards(tmp_path / "out"), "val")
    assert sorted(paths) == sorted(val_paths) and images.dtype == np.uint8 and images.shape[1:] == (H, W, 3)
    # max_classes keeps the first K identities (sorted) that pass the filters
    m2 = build(tmp_path / "in", tmp_path / "out2", min_images=3, max_classes=4, progress=False, log=quiet)
    assert m2["labels"] == ["person_02", "person_03", "person_04", "person_05"]


def test_list_file_input(tmp_path):
    files = make_aligned(tmp_path / "in", [2, 3])
    lines = [f"in/{p} {1 if p.startswith('person_00') else 0}" for p in sorted(files)]
    (tmp_path / "list.txt").write_text("# path label\n" + "\n".join(lines) + "\n")
    manifest = build(None, tmp_path / "out", list_file=tmp_path / "list.txt", progress=False, log=quiet)
    assert manifest["labels"] == ["0", "1"]
    records = read_records(tmp_path / "out")
    assert sorted((r[4], r[2]) for r in records) == sorted(
        (f"in/{p}", 1 if p.startswith("person_00") else 0) for p in files)
    assert all(r[0] == files[r[4][3:]] for r in records)


def test_manifest_mismatch_and_damaged_shards_give_clear_errors(tmp_path):
    make_aligned(tmp_path / "in", [4, 4, 4])
    build(tmp_path / "in", tmp_path / "out", num_shards=2, progress=False, log=quiet)
    out = tmp_path / "out"
    shards = open_shards(out)
    with pytest.raises(ManifestError, match=r"16x12.*112x96"):
        make_train_dataset(shards, 4, image_size=(112, 96))
    with pytest.raises(ManifestError, match="3 classes"):
        make_train_dataset(shards, 4, num_classes=10)
    shard = out / "train-00001-of-00002.tfrecord"
    data = shard.read_bytes()
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(corrupt))  # same size: only the checksum sees it
    make_train_dataset(open_shards(out), 4)
    with pytest.raises(ShardError, match=r"train-00001-of-00002\.tfrecord.*sha256"):
        make_train_dataset(open_shards(out), 4, verify_checksums=True)
    from tfrecords.verify import verify

    with pytest.raises(ShardError, match=r"train-00001-of-00002\.tfrecord"):
        verify(out, log=quiet)
    # --overwrite rebuilds even when inputs and options are unchanged: how a corrupt shard is fixed.
    messages = []
    build(tmp_path / "in", out, num_shards=2, overwrite=True, progress=False, log=messages.append)
    assert not any("nothing to do" in m for m in messages) and verify(out, log=quiet) == {"train": 12}
    assert shard.read_bytes() == data and not (out / ".build").exists()   # same bytes; no work folder left
    shard.write_bytes(data[:-100])  # truncated: caught at start, always
    with pytest.raises(ShardError, match=r"train-00001-of-00002\.tfrecord.*truncated"):
        open_shards(out)   # the size of every shard is checked when the shards are opened
    shard.write_bytes(data)
    assert verify(out, log=quiet) == {"train": 12}
    (out / "manifest.json").write_text('{"format_version": 1,\n "image_size": [16, 12],\n oops}')
    with pytest.raises(ManifestError, match=r"manifest\.json:3"):
        read_manifest(out)
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "in")


def test_rerun_is_a_no_op_and_other_options_need_overwrite(tmp_path):
    make_aligned(tmp_path / "in", [3, 3])
    first = build(tmp_path / "in", tmp_path / "out", num_shards=2, progress=False, log=quiet)
    messages = []
    again = build(tmp_path / "in", tmp_path / "out", num_shards=2, progress=False, log=messages.append)
    assert again["build_fingerprint"] == first["build_fingerprint"] and "nothing to do" in messages[-1]
    with pytest.raises(BuildError, match="--overwrite"):
        build(tmp_path / "in", tmp_path / "out", num_shards=3, progress=False, log=quiet)
    third = build(tmp_path / "in", tmp_path / "out", num_shards=3, overwrite=True, progress=False, log=quiet)
    assert len(third["splits"]["train"]["shards"]) == 3
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tfrecord")) == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)]


def _cli_build(tmp_path, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    cmd = [sys.executable, "-m", "tfrecords.build", "--input-dir", str(tmp_path / "in"), "--output-dir",
           str(tmp_path / "out"), "--num-shards", "4", "--workers", "2", "--no-progress"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path):
    files = make_aligned(tmp_path / "in", [5, 6, 7, 8, 9, 5])  # 40 images, 4 shards of 10
    killed = _cli_build(tmp_path, {KILL_HOOK_ENV: "25"})  # SIGKILL inside the third shard
    assert killed.returncode == -9, killed.stderr[-2000:]
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists()
    visible = sorted(p.name for p in out.glob("*.tfrecord"))
    assert visible == ["train-00000-of-00004.tfrecord", "train-00001-of-00004.tfrecord"]  # complete ones only
    assert list(out.glob(".*.tmp-*"))  # the half-written shard kept its temporary name
    resumed = _cli_build(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "kept 2 complete shard(s)" in resumed.stdout
    records = read_records(out)
    assert sorted(r[4] for r in records) == sorted(files)  # all images, none twice
    assert all(r[0] == files[r[4]] for r in records)
    assert not list(out.glob(".*.tmp-*"))


def test_deterministic_order_with_seed(tmp_path):
    make_aligned(tmp_path / "in", [5, 6, 7, 8])
    build(tmp_path / "in", tmp_path / "out", num_shards=3, progress=False, log=quiet)

    def first_batches(seed):
        ds = make_train_dataset(open_shards(tmp_path / "out"), 8, seed=seed, deterministic=True, shuffle_buffer=16)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(6)]

    a, b, c = first_batches(7), first_batches(7), first_batches(8)
    assert all(np.array_equal(xa, xb) and np.array_equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(np.array_equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


def test_dataset_yields_raw_pixel_float_batches(tmp_path):
    """Pixels as decoded, in [0, 255]: the trained model scales its own input (models/scaling.py)."""
    files = make_aligned(tmp_path / "in", [1] * 12)  # one image per class: a label names its image
    build(tmp_path / "in", tmp_path / "out", num_shards=2, progress=False, log=quiet)
    expected = {}
    for path, data in files.items():
        label = int(path.split("/")[0].split("_")[1])
        # the reader decodes exactly as cv2 does (accurate IDCT), so training sees what evaluation sees
        expected[label] = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32)
    ds = make_train_dataset(open_shards(tmp_path / "out"), 12, seed=1, repeat=False, flip=False)
    (x, y), = list(ds)
    assert x.dtype == tf.float32 and x.shape == (12, H, W, 3) and y.dtype == tf.int32
    assert sorted(y.numpy()) == list(range(12))
    for image, label in zip(x.numpy(), y.numpy()):
        np.testing.assert_allclose(image, expected[label], atol=1e-6)
    flips = 0
    ds = make_train_dataset(open_shards(tmp_path / "out"), 12, seed=2, repeat=True)
    for x, y in ds.take(4):
        for image, label in zip(x.numpy(), y.numpy()):
            plain = expected[label]
            mirrored = plain[:, ::-1]
            assert np.allclose(image, plain, atol=1e-6) or np.allclose(image, mirrored, atol=1e-6)
            flips += not np.allclose(image, plain, atol=1e-6)
    assert 0 < flips < 48  # random horizontal flips happen, not always
    assert 0.0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 255.0


MIRRORED_SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfrecords.manifest import open_shards
from tfrecords.reader import make_train_dataset
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = {}
for data_dir in sys.argv[1:]:
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: make_train_dataset(open_shards(data_dir), ctx.get_per_replica_batch_size(8), input_context=ctx,
                                       seed=0, repeat=True))
    batch = next(iter(dist))
    shapes = [list(t.shape) for t in strategy.experimental_local_results(batch[0])]
    labels = [t.numpy().tolist() for t in strategy.experimental_local_results(batch[1])]
    result[data_dir] = {"replicas": strategy.num_replicas_in_sync, "shapes": shapes, "labels": labels}
print("RESULT" + json.dumps(result))
"""


@pytest.mark.slow
def test_works_under_mirrored_strategy(tmp_path):
    make_aligned(tmp_path / "in", [4] * 6)
    build(tmp_path / "in", tmp_path / "many", num_shards=4, progress=False, log=quiet)  # file sharding path
    build(tmp_path / "in", tmp_path / "one", num_shards=1, progress=False, log=quiet)  # data sharding path
    # Logical CPU devices must be set before TF initialises: a fresh interpreter.
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path / "many"), str(tmp_path / "one")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    for entry in result.values():
        assert entry["replicas"] == 2
        assert entry["shapes"] == [[4, H, W, 3], [4, H, W, 3]]  # global batch 8 -> 4 per replica
        assert all(0 <= v < 6 for labels in entry["labels"] for v in labels)


def test_cli_help_names_top_level_files_rule():
    proc = subprocess.run([sys.executable, "-m", "tfrecords.build", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "top-level files" in text and "are ignored" in text and "--val-identities" in text


@pytest.mark.parametrize("num_shards", [4, 1])  # by file (shards >= pipelines), by record (fewer shards)
def test_input_context_splits_the_data_between_pipelines(tmp_path, num_shards):
    make_aligned(tmp_path / "in", [1] * 20)  # one image per class: labels identify images
    build(tmp_path / "in", tmp_path / "out", num_shards=num_shards, progress=False, log=quiet)
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        ds = make_train_dataset(open_shards(tmp_path / "out"), 3, input_context=ctx, repeat=False, drop_remainder=False,
                                          seed=0)
        seen.append([int(v) for _, y in ds for v in y.numpy()])
    assert seen[0] and seen[1] and set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(20))  # every image once per epoch, over both pipelines


@pytest.mark.real_data
def test_real_lfw_people_file_excludes_test_identities(tmp_path, lfw_dir):
    """peopleDevTrain.txt restricts a build to View 1 training people (none of peopleDevTest.txt)."""
    from tfrecords.sources import read_people_file

    train_people = read_people_file(lfw_dir / "peopleDevTrain.txt")
    test_people = read_people_file(lfw_dir / "peopleDevTest.txt")
    assert len(train_people) == 4038 and len(test_people) == 1711 and train_people.isdisjoint(test_people)
    manifest = build(lfw_dir / "images", tmp_path / "out", people=lfw_dir / "peopleDevTrain.txt", min_images=5,
                     max_classes=6, max_images_per_class=3, image_size=(56, 48), resize=True, progress=False,
                     log=quiet)
    assert manifest["num_classes"] == 6 and set(manifest["labels"]) <= train_people
    assert manifest["labels"] == sorted(manifest["labels"]) and manifest["num_images"] == 18
    _, images = read_split_images(open_shards(tmp_path / "out"), "train")
    assert images.shape == (18, 56, 48, 3)


def test_second_builder_on_the_same_directory_is_refused(tmp_path):
    import fcntl

    make_aligned(tmp_path / "in", [2, 2])
    (tmp_path / "out" / ".build").mkdir(parents=True)
    with open(tmp_path / "out" / ".build" / "lock", "w") as held:  # as a running build holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BuildError, match="another build"):
            build(tmp_path / "in", tmp_path / "out", progress=False, log=quiet)
    assert build(tmp_path / "in", tmp_path / "out", progress=False, log=quiet)["num_images"] == 4


def test_image_size_comes_from_the_aligned_folders_align_config(tmp_path):
    """An aligned folder's align_config.json names the crop size; the builder takes it rather than the size
    of whichever image it reads first (here every image is twice that size, so only --resize packs them)."""
    make_aligned(tmp_path / "in", [2, 2], size=(2 * H, 2 * W))
    (tmp_path / "in" / "align_config.json").write_text(json.dumps({"image_size": [H, W]}))
    lines = []
    manifest = build(tmp_path / "in", tmp_path / "out", resize=True, progress=False, log=lines.append)
    assert manifest["image_size"] == [H, W] and manifest["splits"]["train"]["resized"] == 4
    assert any("align_config.json" in line for line in lines)
    with pytest.raises(BuildError, match=r"align_config\.json says the crops are 16x12.*is 32x24.*--resize"):
        build(tmp_path / "in", tmp_path / "out2", progress=False, log=quiet)   # checked before any shard is written
    assert not list((tmp_path / "out2").glob("*.tfrecord"))
    (tmp_path / "in" / "align_config.json").write_text(json.dumps({"image_size": "16x12"}))
    with pytest.raises(BuildError, match=r"align_config\.json: cannot read the crops' image_size"):
        build(tmp_path / "in", tmp_path / "out3", progress=False, log=quiet)
    (tmp_path / "in" / "align_config.json").unlink()   # no config: the first image's size, said to be a guess
    lines = []
    assert build(tmp_path / "in", tmp_path / "out4", progress=False, log=lines.append)["image_size"] == [2 * H, 2 * W]
    assert any("no align_config.json" in line and "guessed" in line for line in lines)
def test_a_validation_split_by_default_when_there_are_enough_identities(tmp_path):
    """--val-identities auto (the default): 60 people with 2 images -> 5 % = 3, raised to 5, held out, said
    in one line; 40 people -> none held out, said too; --val-identities 0 -> none, without the line."""
    from tfrecords.plan import AUTO_VAL_MIN, AUTO_VAL_MIN_IDENTITIES, auto_val_count

    assert auto_val_count(AUTO_VAL_MIN_IDENTITIES - 1) == 0 and auto_val_count(AUTO_VAL_MIN_IDENTITIES) == AUTO_VAL_MIN
    assert auto_val_count(1000) == 50 and auto_val_count(100_000) == 200
    make_aligned(tmp_path / "many", [2] * 60 + [1] * 5, size=(16, 16))
    lines = []
    manifest = build(tmp_path / "many", tmp_path / "out", num_shards=1, val_pairs=20, progress=False, log=lines.append)
    held = [line for line in lines if line.startswith("validation: held out")]
    assert held == ["validation: held out 5 of the 60 identities with >= 2 images (identity-disjoint; "
                    "--val-identities auto takes 5% of them when there are >= 50); --val-identities 0 trains "
                    "on all of them"]
    assert manifest["num_classes"] == 60 and manifest["val_identities"] == 5 and manifest["val_pairs"]
    val_people = {Path(p).parts[0] for p in read_split_images(open_shards(tmp_path / "out"), "val")[0]}
    assert len(val_people) == 5 and val_people.isdisjoint(manifest["labels"])

    lines = []
    manifest = build(tmp_path / "many", tmp_path / "none", num_shards=1, val_identities=0, progress=False,
                     log=lines.append)
    assert manifest["num_classes"] == 65 and not manifest.get("val_pairs")
    assert not any(line.startswith(("validation:", "no validation")) for line in lines)

    make_aligned(tmp_path / "few", [3] * 40, size=(16, 16))
    lines = []
    manifest = build(tmp_path / "few", tmp_path / "few_out", num_shards=1, progress=False, log=lines.append)
    assert manifest["num_classes"] == 40 and not manifest.get("val_pairs")
    assert any(line.startswith("no validation split: only 40 identities have >= 2 images") for line in lines)
