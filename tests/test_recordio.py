"""tfrecords/recordio.py and ``tfrecords.build --rec``: the RecordIO format from its specification, and
insightface packs of real aligned LFW faces imported into shards with their exact bytes and labels.

The packs are written by tests/recordio_writer.py, a writer that follows dmlc-core's WriteRecord and
mxnet's pack and shares nothing with the reader; its framing is itself checked byte for byte here.
"""

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from recordio_writer import (
    RECORDIO_MAGIC,
    PackWriter,
    frame,
    header_length,
    jpeg_with_magic,
    pack,
    read_parts,
    write_insightface_pack,
)
from tfrecords.recordio import (
    IdxFormatError,
    RecordIOError,
    iter_records,
    read_header,
    read_index,
    read_property,
    read_record,
    unpack,
)

REPO = Path(__file__).resolve().parents[1]
M = RECORDIO_MAGIC


def quiet(*_):
    pass


# -- the format, on bytes ---------------------------------------------------------------------------

def test_writer_frames_records_as_the_specification_says():
    """Hand-computed bytes: magic 0a23d7ce (0xced7230a little-endian), lrec = cflag << 29 | length."""
    assert frame(b"abcde") == bytes.fromhex("0a23d7ce 05000000 6162636465 000000")
    # the magic at aligned offset 4: two parts, cflag 1 (lrec 0x20000004) then 3 (0x60000003), magic dropped
    assert frame(b"1234" + M + b"xyz") == bytes.fromhex("0a23d7ce 04000020 31323334 0a23d7ce 03000060 78797a 00")
    # at an unaligned offset it is data
    assert frame(b"12" + M + b"xy") == bytes.fromhex("0a23d7ce 08000000 3132 0a23d7ce 7879")
    # three aligned: start, two middles, end; zero-length parts where magics touch
    assert [b[7] >> 5 for b in (frame(M + M + M)[i:i + 8] for i in (0, 8, 16, 24))] == [1, 2, 2, 3]


PAYLOADS = [b"", b"abcde", b"1234" + M + b"xyz", M + b"ab", M + M, b"wxyz" + M + M + b"tail", b"12" + M + b"xy",
            b"abc" + M, bytes(range(256)) * 3]


def test_reader_returns_every_payload_split_parts_joined(tmp_path):
    writer = PackWriter(tmp_path)
    offsets = [writer.write(key, payload) for key, payload in enumerate(PAYLOADS)]
    rec = writer.close()
    assert sum(cflag == 2 for _, cflag, _ in read_parts(rec)) == 2   # the middle parts exist
    fd = os.open(rec, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert [read_record(fd, offset, size) for offset in offsets] == PAYLOADS
    finally:
        os.close(fd)
    assert list(iter_records(rec, chunk_bytes=7)) == list(zip(offsets, PAYLOADS))   # refills mid-record
    assert [(key, offset) for _, key, offset in read_index(tmp_path / "train.idx")] == list(enumerate(offsets))


def test_reader_names_what_is_wrong(tmp_path):
    writer = PackWriter(tmp_path)
    first = writer.write(0, b"1234" + M + b"xyz")
    writer.write(1, b"abcdefgh")
    rec = writer.close()
    data = rec.read_bytes()
    fd = os.open(rec, os.O_RDONLY)
    try:
        with pytest.raises(RecordIOError, match=r"no RecordIO magic at byte 4 \(found 0x20000004"):
            read_record(fd, first + 4, len(data))
        middle = read_parts(rec)[1][0]
        with pytest.raises(RecordIOError, match=f"part at byte {middle} has cflag 3, not a start of a record"):
            read_record(fd, middle, len(data))
        with pytest.raises(RecordIOError, match="truncated"):
            read_record(fd, read_parts(rec)[2][0], len(data) - 3)
    finally:
        os.close(fd)
    rec.write_bytes(data[:-3])
    with pytest.raises(RecordIOError, match="truncated"):
        list(iter_records(rec))
    (tmp_path / "bad.idx").write_text("0\t0\n1 oops\n")
    with pytest.raises(IdxFormatError, match=r"bad\.idx:2: expected 'key<TAB>byte offset'"):
        list(read_index(tmp_path / "bad.idx"))
    (tmp_path / "property").write_text("85742;112;112\n")
    with pytest.raises(ValueError, match=r"property: expected one line 'num_classes,height,width'"):
        read_property(tmp_path / "property")


def test_irheader_scalar_and_array_labels(tmp_path):
    header, image = unpack(pack(7.0, b"JPEGDATA", id1=3))
    assert (header.flag, header.labels, header.id, image) == (0, (7.0,), 3, b"JPEGDATA")
    header, image = unpack(pack([12.0, 0.5, -1.0], b"PNG"))
    assert (header.flag, header.labels, image) == (3, (12.0, 0.5, -1.0), b"PNG")
    with pytest.raises(RecordIOError, match="announces 5 labels"):
        unpack(struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"12")
    # read_header reads the same from the first bytes only, and from a split record through read_record
    writer = PackWriter(tmp_path)
    offsets = [writer.write(0, pack([4.0, 2.0], b"x" * 100)), writer.write(1, pack(9.0, M + b"abcd"))]
    writer.close()
    fd = os.open(tmp_path / "train.rec", os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert [(h.labels, n) for h, n in (read_header(fd, o, size) for o in offsets)] == [((4.0, 2.0), 100),
                                                                                            ((9.0,), 8)]
    finally:
        os.close(fd)


# -- insightface packs of real faces ------------------------------------------------------------------

def read_records(data_dir, split="train"):
    """{path: (encoded bytes, format, label, identity)} of every record of a split."""
    import tensorflow as tf

    from tfrecords import features as F
    from tfrecords.manifest import read_manifest

    manifest = read_manifest(data_dir)
    out = {}
    for shard in manifest["splits"][split]["shards"]:
        for raw in tf.data.TFRecordDataset(str(Path(data_dir) / shard["file"])):
            ex = tf.io.parse_single_example(raw, F.feature_spec())
            path = ex[F.PATH].numpy().decode()
            assert path not in out, f"{path} stored twice"
            out[path] = (ex[F.ENCODED].numpy(), ex[F.FORMAT].numpy().decode(), int(ex[F.LABEL]),
                         ex[F.IDENTITY].numpy().decode())
    return out


def as_png(jpeg):
    ok, buf = cv2.imencode(".png", cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    assert ok
    return buf.tobytes()


@pytest.fixture
def faces(lfw_faces_112):
    """[(person index, JPEG bytes)] of 6 people x 3 aligned 112x112 LFW photos."""
    return [(person, jpeg) for person, name in enumerate(sorted(lfw_faces_112)) for jpeg in lfw_faces_112[name]]


@pytest.mark.real_data
def test_insightface_pack_with_header_imports_exact_bytes_and_labels(tmp_path, faces):
    from tfrecords.build import build

    images = list(faces)
    images[4] = (images[4][0], jpeg_with_magic(images[4][1], header_length(0.0)))   # split into cflag 1, 2, 3
    images[7] = (images[7][0], as_png(images[7][1]))
    # property declares 12 classes, the faces use labels 0..5: names are padded to two digits
    rec, keys = write_insightface_pack(tmp_path / "pack", images, num_classes=12, image_size=(112, 112))
    assert [cflag for _, cflag, _ in read_parts(rec) if cflag] == [1, 2, 3]
    manifest = build(rec=rec, output_dir=tmp_path / "shards", num_shards=2, workers=2, progress=False, log=quiet)
    records = read_records(tmp_path / "shards")
    assert sorted(records) == sorted(f"train.rec#{key}" for key in keys)        # every image, once
    for key, (label, image) in keys.items():
        encoded, fmt, stored_label, identity = records[f"train.rec#{key}"]
        assert encoded == image                                                  # the packed bytes, as they were
        assert stored_label == label and identity == f"{label:02d}"
        assert fmt == ("png" if image[:4] == b"\x89PNG" else "jpeg")
    assert manifest["labels"] == [f"{label:02d}" for label in range(6)] and manifest["image_size"] == [112, 112]
    assert manifest["splits"]["train"]["formats"] == {"jpeg": 17, "png": 1}
    assert manifest["source"]["header_record"] == {"images": [1, 19], "identities": [19, 31]}
    assert manifest["source"]["declared_classes"] == 12 and "zero-padded" in manifest["source"]["identity_names"]
    assert manifest["unreadable"]["count"] == 0
    # held-out identities and the filters work on a pack as on a folder
    held = build(rec=rec, output_dir=tmp_path / "held", val_identities=2, val_pairs=10, min_images=3,
                 progress=False, log=quiet)
    assert len(held["labels"]) == 4 and len(held["splits"]["val"]["labels"]) == 2 and held["val_pairs"]
    val = read_records(tmp_path / "held", "val")
    assert {identity for _, _, _, identity in val.values()} == set(held["splits"]["val"]["labels"])
    assert all(encoded == keys[int(path.split("#")[1])][1] for path, (encoded, *_) in val.items())


@pytest.mark.real_data
def test_pack_without_header_every_bad_record_named_by_key(tmp_path, faces):
    """im2rec/RecBuilder layout (keys from 0, no header record), scalar and array labels, and one record of
    each kind that cannot be used: each is listed by key with its reason, the others imported exactly."""
    from tfrecords.build import build, main

    writer = PackWriter(tmp_path / "pack")
    good = {}
    for key, (person, jpeg) in enumerate(faces):
        # record 0 has two labels and an image: an image record, not a header (it has image bytes)
        label = [float(person), 0.25] if key % 2 == 0 else float(person)
        good[key] = (person, jpeg)
        writer.write(key, pack(label, jpeg))
    jpeg = faces[0][1]
    good[10 ** 12] = (5, jpeg)                                  # keys need not be dense (one byte per key would not do)
    writer.write(10 ** 12, pack(5.0, jpeg))
    offsets = {}
    for key, payload in {100: pack(1.0, jpeg[:400]),                          # no end of image: truncated JPEG
                         101: pack(1.0, b"\xff\xd8\xff" + bytes(200) + b"\xff\xd9"),   # JPEG that cannot decode
                         102: pack(9.0, jpeg),                                 # label beyond property's 6 classes
                         103: pack(2.5, jpeg),                                 # label not an integer
                         104: pack(2.0, b"")}.items():                         # no image at all
        offsets[key] = writer.write(key, payload)
    split_key = 105
    offsets[split_key] = writer.write(split_key, pack(3.0, jpeg_with_magic(jpeg, 24)))
    writer.rec.flush()
    writer.idx.write(f"106\t{offsets[102] + 4}\n")                             # offset inside a record
    writer.idx.write(f"107\t{read_parts(tmp_path / 'pack' / 'train.rec')[-1][0]}\n")  # the split record's last part
    writer.idx.write(f"3\t{offsets[100]}\n")                                   # a key listed twice
    last = writer.write(108, pack(4.0, jpeg))                                  # cut short below
    writer.close((6, 112, 112))
    rec = tmp_path / "pack" / "train.rec"
    rec.write_bytes(rec.read_bytes()[:last + 8 + 24 + len(jpeg) // 2])         # a truncated download
    with open(tmp_path / "pack" / "train.idx", "a") as idx:
        idx.write(f"109\t{last + 10 ** 6}\n")                                  # beyond the end of the file

    manifest = build(rec=rec, output_dir=tmp_path / "shards", num_shards=2, progress=False, log=quiet)
    records = read_records(tmp_path / "shards")
    expected = {f"train.rec#{key}": value for key, value in good.items()}
    expected["train.rec#105"] = (3, jpeg_with_magic(jpeg, 24))
    assert sorted(records) == sorted(expected)
    for path, (label, image) in expected.items():
        assert records[path][0] == image and records[path][2] == label and records[path][3] == str(label)
    assert manifest["source"]["header_record"] is None and manifest["num_classes"] == 6
    listed = dict(line.split("\t", 1) for line in (tmp_path / "shards" / "unreadable.txt").read_text().splitlines()
                  if not line.startswith("#"))
    reasons = {"100": "truncated JPEG", "101": "cannot decode jpeg|damaged JPEG data", "102": r"label 9 is outside 0\.\.5",
               "103": "label 2.5 is not a non-negative integer", "104": "no image bytes",
               "106": f"no RecordIO magic at byte {offsets[102] + 4}", "107": "has cflag 3, not a start of a record",
               "3": "duplicate key", "108": "truncated", "109": "truncated: .*past the end"}
    assert sorted(listed) == sorted(f"train.rec#{key}" for key in reasons)
    for key, reason in reasons.items():
        assert re.search(reason, listed[f"train.rec#{key}"]), (key, listed[f"train.rec#{key}"])
    assert manifest["unreadable"]["count"] == len(reasons)
    # --strict makes them fatal: exit status 2 and the list named
    assert main(["--rec", str(rec), "--output-dir", str(tmp_path / "strict"), "--no-progress", "--strict"]) == 2


@pytest.mark.real_data
def test_center_crop_keeps_exactly_the_middle_columns(tmp_path, faces):
    """--center-crop 112x96 keeps columns 8..103 of a 112x112 crop: our template is insightface's shifted 8 px."""
    from align.geometry import reference_landmarks
    from tfrecords.build import build

    np.testing.assert_allclose(reference_landmarks((112, 112)) - [8, 0], reference_landmarks((112, 96)))
    images = [faces[0], (faces[3][0], as_png(faces[3][1]))]
    rec, keys = write_insightface_pack(tmp_path / "pack", images, num_classes=2, image_size=(112, 112))
    manifest = build(rec=rec, output_dir=tmp_path / "shards", center_crop=(112, 96), progress=False, log=quiet)
    assert manifest["image_size"] == [112, 96] and manifest["center_crop"] == [112, 96]
    assert manifest["splits"]["train"]["center_cropped"] == 2
    records = read_records(tmp_path / "shards")
    for key, (_, image) in keys.items():
        original = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR).astype(int)
        stored = cv2.imdecode(np.frombuffer(records[f"train.rec#{key}"][0], np.uint8), cv2.IMREAD_COLOR).astype(int)
        assert stored.shape == (112, 96, 3)
        errors = {shift: np.abs(stored - original[:, shift:shift + 96]).mean() for shift in (7, 8, 9)}
        if image[:4] == b"\x89PNG":
            assert errors[8] == 0                                   # lossless: exactly the middle columns
        else:                                                       # re-encoded at quality 95
            assert errors[8] < 1.5 and errors[8] < min(errors[7], errors[9]) / 2, errors


def test_cli_errors_name_the_file_and_the_fix(tmp_path, capsys):
    from tfrecords.build import main

    writer = PackWriter(tmp_path / "pack")
    writer.write(0, pack(0.0, b"x"))
    rec = writer.close()
    (tmp_path / "pack" / "property").write_text("two,112,112\n")
    assert main(["--rec", str(rec), "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 1
    assert "property: expected one line 'num_classes,height,width'" in capsys.readouterr().err
    (tmp_path / "pack" / "train.idx").unlink()
    assert main(["--rec", str(rec), "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 1
    assert "train.idx: index file not found beside train.rec" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--rec", str(rec), "--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    assert "--rec reads a RecordIO pack on its own" in capsys.readouterr().err


@pytest.mark.real_data
@pytest.mark.slow
def test_rec_import_resumes_after_kill_9(tmp_path, faces):
    from tfrecords.shard_writer import KILL_HOOK_ENV

    rec, keys = write_insightface_pack(tmp_path / "pack", faces, num_classes=6, image_size=(112, 112))
    cmd = [sys.executable, "-m", "tfrecords.build", "--rec", str(rec), "--output-dir", str(tmp_path / "out"),
           "--num-shards", "3", "--workers", "2", "--no-progress"]
    killed = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, **{KILL_HOOK_ENV: "8"}), capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert len(list((tmp_path / "out").glob("train-*.tfrecord"))) == 1   # only the complete shard is visible
    resumed = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "kept 1 complete shard(s)" in resumed.stdout
    records = read_records(tmp_path / "out")
    assert {path: value[0] for path, value in records.items()} == {
        f"train.rec#{key}": image for key, (_, image) in keys.items()}


def test_every_key_and_every_record_ends_in_one_place(tmp_path):
    """An .idx that does not match its .rec (issue 37): an image key pointing at an identity record, two
    keys sharing one offset, a line dropped. Before, the records those keys should have named were lost
    without a line. Now each repeated key is listed ("packed once, under key K"), the key at an identity
    record is named as such, and every record no line points at is listed by its byte offset (with the
    fix); every other image is packed once, with its bytes. Run as the user runs the builder."""
    rng = np.random.default_rng(0)
    jpegs = [cv2.imencode(".jpg", cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (112, 112)))[1].tobytes()
             for _ in range(8)]
    rec, keys = write_insightface_pack(tmp_path / "pack", [(k % 3, jpeg) for k, jpeg in enumerate(jpegs)],
                                       num_classes=3, image_size=(112, 112))
    idx = tmp_path / "pack" / "train.idx"
    offsets = dict(line.split("\t") for line in idx.read_text().splitlines())
    offsets = {int(k): int(v) for k, v in offsets.items()}
    assert sorted(offsets) == list(range(12))   # header 0, images 1..8, identity records 9..11
    edited = dict(offsets)
    edited[3] = offsets[10]          # an image key at the identity record of label 1: image 3 unreached
    edited[6] = offsets[5]           # two keys, one offset: image 6 unreached, image 5 packed once
    del edited[8]                    # a line dropped: image 8 unreached
    idx.write_text("".join(f"{k}\t{v}\n" for k, v in edited.items()))
    result = subprocess.run([sys.executable, "-m", "tfrecords.build", "--rec", str(rec), "--output-dir",
                             str(tmp_path / "out"), "--no-progress"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    records = read_records(tmp_path / "out")
    assert sorted(records) == sorted(f"train.rec#{k}" for k in (1, 2, 4, 5, 7))
    assert all(records[f"train.rec#{k}"][0] == keys[k][1] for k in (1, 2, 4, 5, 7))   # each once, its own bytes
    listed = dict(line.split("\t", 1) for line in (tmp_path / "out" / "unreadable.txt").read_text().splitlines()
                  if not line.startswith("#"))
    fix = "train.idx does not match train.rec: use the .idx written with this .rec, or rebuild one"
    assert sorted(listed) == sorted(["train.rec#3", "train.rec#6", "train.rec#8", f"train.rec@{offsets[3]}",
                                     f"train.rec@{offsets[6]}", f"train.rec@{offsets[8]}"]), listed
    assert "is an identity record" in listed["train.rec#3"] and fix in listed["train.rec#3"]
    assert "the same record" in listed["train.rec#6"] and "packed once, under key 5" in listed["train.rec#6"]
    assert "missing from train.idx" in listed["train.rec#8"]
    for key in (3, 6, 8):
        assert f"label {keys[key][0]}" in listed[f"train.rec@{offsets[key]}"] and fix in listed[f"train.rec@{offsets[key]}"]
    # every key and every record: 5 packed + 3 keys listed + 3 records listed = 8 images, 11 image-key lines
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_images"] == 5 and manifest["unreadable"]["count"] == 6
