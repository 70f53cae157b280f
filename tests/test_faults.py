"""The fault suite (issue 14): hostile inputs and faults at every stage end in exactly one place:
packed/aligned, or a report line with its reason, or one error line naming the file and the fix.
Never a hang, never a traceback, never a silent loss.

Small inputs throughout; real LFW faces (``lfw_dir``) where alignment needs a face.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def quiet(*_):
    pass


def damage_middle(data: bytes) -> bytes:
    """16 bytes scrambled at 60 % of a JPEG: libjpeg warns (naming no file) and fills in grey."""
    data = bytearray(data)
    start = int(len(data) * 0.6)
    for k in range(start, start + 16):
        data[k] = (data[k] * 7 + 13) & 0xFF
    return bytes(data)


def smooth_jpeg(path, size=(16, 12), seed=0):
    """A small JPEG with smooth content (so damaged middle bytes break the entropy coding)."""
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (4, 3, 3), dtype=np.uint8), size[::-1], interpolation=cv2.INTER_LINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def unreadable_lines(out):
    """{path: reason} of SHARDS/unreadable.txt."""
    path = Path(out) / "unreadable.txt"
    if not path.exists():
        return {}
    return dict(line.split("\t", 1) for line in path.read_text().splitlines() if not line.startswith("#"))


# ---- #5: a JPEG with damaged middle bytes ------------------------------------------------------------
def test_damaged_jpeg_is_listed_by_the_build_and_caught_by_verify(lfw_dir, tmp_path, monkeypatch):
    from fileio import jpeg_damage
    from tfrecords import image_check
    from tfrecords.build import build
    from tfrecords.manifest import ShardError
    from tfrecords.verify import verify

    good = (lfw_dir / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg").read_bytes()
    bad = damage_middle(good)
    assert cv2.imdecode(np.frombuffer(bad, np.uint8), cv2.IMREAD_COLOR) is not None  # OpenCV takes it
    assert jpeg_damage(good) is None and jpeg_damage(bad)
    from align.image_io import ImageError, read_image_rgb
    (tmp_path / "bad.jpg").write_bytes(bad)
    with pytest.raises(ImageError, match="damaged JPEG") as refused:   # align reports it too
        read_image_rgb(tmp_path / "bad.jpg")
    assert refused.value.reason == "corrupt image"
    for person in ("A", "B"):
        for k in range(2):
            (tmp_path / "in" / person).mkdir(parents=True, exist_ok=True)
            (tmp_path / "in" / person / f"{k}.jpg").write_bytes(good)
    (tmp_path / "in" / "B" / "1.jpg").write_bytes(bad)
    manifest = build(tmp_path / "in", tmp_path / "out", progress=False, log=quiet)
    assert manifest["num_images"] == 3
    assert "damaged JPEG" in unreadable_lines(tmp_path / "out")["B/1.jpg"]
    # Shards packed before this check existed: verify finds the record and names it.
    monkeypatch.setattr(image_check, "jpeg_damage", lambda data: None)
    build(tmp_path / "in", tmp_path / "old", progress=False, log=quiet)
    with pytest.raises(ShardError, match=r"B/1\.jpg.*damaged JPEG.*--overwrite"):
        verify(tmp_path / "old", log=quiet)
    assert verify(tmp_path / "out", log=quiet) == {"train": 3}


# ---- align ---------------------------------------------------------------------------------------------
FACES = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "George_W_Bush/George_W_Bush_0010.jpg",
         "George_W_Bush/George_W_Bush_0011.jpg", "Serena_Williams/Serena_Williams_0003.jpg"]


def copy_faces(lfw_dir, raw, names=FACES):
    for name in names:
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes((lfw_dir / "images" / name).read_bytes())


def align_quietly(raw, out, **kwargs):
    from align import align_folder

    return align_folder(raw, out, **{"workers": 1, "progress": False, "contact_sheet_size": 0,
                                     "log": quiet, **kwargs})


def align_cli(raw, out, *extra, env=None, preexec_fn=None, timeout=300):
    command = [sys.executable, "align/align_lfw.py", "--input-dir", str(raw), "--output-dir", str(out),
               "--no-progress", "--contact-sheet", "0", *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {})), preexec_fn=preexec_fn)


def one_error_line(stderr):
    """The command's stderr holds one error line and no traceback."""
    lines = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-3000:]
    return lines[0]


def test_killed_align_worker_is_reported_and_the_run_finishes(lfw_dir, tmp_path):
    """#2: kill -9 of one pool worker (what the OOM killer does): no hang; the file it held is reported
    as `worker died`, a fresh worker takes over, every other file is aligned."""
    from align import load_report
    from align.workers import KILL_HOOK_ENV

    raw, out = tmp_path / "raw", tmp_path / "out"
    copy_faces(lfw_dir, raw)
    killed = FACES[1]
    result = align_cli(raw, out, "--workers", "2", env={KILL_HOOK_ENV: killed}, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = load_report(out / "align_report.jsonl")
    assert sorted(report) == sorted(FACES)
    assert report[killed]["status"] == "failed" and report[killed]["reason"] == "worker died"
    assert "SIGKILL" in report[killed]["detail"] and not (out / killed).exists()
    assert all(report[name]["status"] == "aligned" for name in FACES if name != killed)
    # --retry-failed redoes it (nothing kills it now)
    summary = align_quietly(raw, out, retry_failed=True)
    assert summary["processed_this_run"] == 1 and summary["aligned"] == len(FACES)


def huge_png_header(path, width=30000, height=30000):
    """A 100-byte PNG whose header claims width x height px (its data would not even decode)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_huge_dimensions_are_refused_from_the_header(lfw_dir, tmp_path):
    """#2: a small file claiming 30000x30000 px is refused before decoding (900 MP would need ~90 GB
    in the detector), reported as its own reason; a larger --max-megapixels admits what it covers."""
    import resource

    from align import load_report
    from align.image_io import ImageError, read_image_rgb

    raw, out = tmp_path / "raw", tmp_path / "out"
    copy_faces(lfw_dir, raw, FACES[:1])
    bomb = huge_png_header(raw / "Big" / "bomb.png")
    assert bomb.stat().st_size < 200
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError) as refused:
        read_image_rgb(bomb, max_megapixels=25)
    assert refused.value.reason == "too many pixels" and refused.value.input_size == [30000, 30000]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000   # KiB: nothing decoded
    huge_png_header(raw / "Big" / "mid.png", 6000, 6000)   # 36 MP
    align_quietly(raw, out)
    report = load_report(out / "align_report.jsonl")
    assert report["Big/bomb.png"]["reason"] == report["Big/mid.png"]["reason"] == "too many pixels"
    assert "900.0 megapixels" in report["Big/bomb.png"]["detail"] and "--max-megapixels" in report["Big/bomb.png"]["detail"]
    assert report[FACES[0]]["status"] == "aligned"
    summary = align_quietly(raw, out, max_megapixels=40)   # admits mid.png only: it is decoded now
    report = load_report(out / "align_report.jsonl")
    assert summary["processed_this_run"] == 1
    assert report["Big/mid.png"]["reason"] == "corrupt image" and report["Big/bomb.png"]["reason"] == "too many pixels"


def test_disk_full_in_align_is_one_line_naming_the_file_then_resumes(lfw_dir, tmp_path):
    """#7: a file-size limit (EFBIG, as ENOSPC would) stops align with one line naming the file it could
    not write and the fix; rerun without the limit, it resumes and completes."""
    import resource
    import signal

    from align import load_report

    raw, out = tmp_path / "raw", tmp_path / "out"
    copy_faces(lfw_dir, raw, FACES[:2])

    def tiny_file_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # then the write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))

    result = align_cli(raw, out, "--workers", "1", preexec_fn=tiny_file_limit)
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert "File too large" in line and str(out) in line and "rerun" in line
    summary = align_quietly(raw, out)
    assert summary["aligned"] == 2 and sorted(load_report(out / "align_report.jsonl")) == sorted(FACES[:2])
    assert not (out / ".align_tmp").exists()


# ---- #4: stale and orphan crops ----------------------------------------------------------------------
def packed(shards):
    """{image path: stored bytes} of a shard folder's train split."""
    import tensorflow as tf

    from tfrecords import features as F
    from tfrecords.manifest import read_manifest

    manifest = read_manifest(shards)
    images = {}
    for shard in manifest["splits"]["train"]["shards"]:
        for raw in tf.data.TFRecordDataset(str(Path(shards) / shard["file"])):
            example = tf.io.parse_single_example(raw, F.feature_spec())
            images[example[F.PATH].numpy().decode()] = example[F.ENCODED].numpy()
    return images


def packed_paths(shards):
    return sorted(packed(shards))


def test_changed_and_removed_sources_are_realigned_and_never_packed_stale(lfw_dir, tmp_path):
    """A replaced source is re-aligned on rerun, a removed one's crop is removed, one that no longer
    aligns loses its crop; until the rerun, the builder packs none of those crops (nor a crop that no
    record writes) and says why for each."""
    from skimage import data as skimage_data

    from align import load_report
    from tfrecords.build import build

    raw, out = tmp_path / "raw", tmp_path / "aligned"
    copy_faces(lfw_dir, raw)
    align_quietly(raw, out)
    # A report from before source stamps: its crops are newer than their sources, so they still count.
    report_path = out / "align_report.jsonl"
    stamped = report_path.read_text()
    report_path.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if not k.startswith("source_")})
                                   + "\n" for line in stamped.splitlines()))
    build(out, tmp_path / "unstamped", progress=False, log=quiet)
    assert packed_paths(tmp_path / "unstamped") == sorted(FACES)
    assert align_quietly(raw, out)["processed_this_run"] == 0 and report_path.read_text() == stamped
    old_crop = (out / FACES[0]).read_bytes()
    shutil.copy(out / FACES[1], out / "George_W_Bush" / "by_hand.jpg")   # no record writes it
    (raw / FACES[0]).write_bytes((lfw_dir / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg").read_bytes())
    cv2.imwrite(str(raw / FACES[2]), cv2.cvtColor(skimage_data.coffee(), cv2.COLOR_RGB2BGR))  # now: no face
    (raw / FACES[3]).unlink()

    build(out, tmp_path / "before", progress=False, log=quiet)
    assert packed_paths(tmp_path / "before") == [FACES[1]]
    left_out = unreadable_lines(tmp_path / "before")
    assert "changed after alignment" in left_out[FACES[0]] and "changed after alignment" in left_out[FACES[2]]
    assert "removed after alignment" in left_out[FACES[3]]
    assert "no aligned record" in left_out["George_W_Bush/by_hand.jpg"]

    summary = align_quietly(raw, out)
    report = load_report(out / "align_report.jsonl")
    assert summary["processed_this_run"] == 2 and summary["removed_crops"] == 2
    assert FACES[3] not in report and not (out / FACES[3]).exists()
    assert report[FACES[2]]["reason"] == "no face" and not (out / FACES[2]).exists()
    assert report[FACES[0]]["status"] == "aligned" and (out / FACES[0]).read_bytes() != old_crop
    build(out, tmp_path / "after", progress=False, log=quiet)
    assert packed_paths(tmp_path / "after") == sorted(FACES[:2])
    assert list(unreadable_lines(tmp_path / "after")) == ["George_W_Bush/by_hand.jpg"]


def test_touched_or_copied_sources_are_not_realigned_but_same_size_edits_are(lfw_dir, tmp_path):
    """A new modification time with the same bytes (cp without -p, a restore, touch) keeps the crops:
    the recorded sha256 decides; a same-size edit of the bytes is re-aligned and not packed before."""
    from align import load_report
    from tfrecords.build import build

    raw, out = tmp_path / "raw", tmp_path / "aligned"
    copy_faces(lfw_dir, raw, FACES[:2])
    align_quietly(raw, out)
    report_path = out / "align_report.jsonl"
    before = load_report(report_path)
    later = before[FACES[0]]["source_mtime_ns"] + 3_600 * 10**9
    for name in FACES[:2]:
        os.utime(raw / name, ns=(later, later))
    build(out, tmp_path / "touched", progress=False, log=quiet)
    assert packed_paths(tmp_path / "touched") == sorted(FACES[:2])
    assert align_quietly(raw, out)["processed_this_run"] == 0
    after = load_report(report_path)   # today's times recorded, so the next run does not hash again
    assert all(after[n]["source_mtime_ns"] == later and after[n]["source_sha256"] == before[n]["source_sha256"]
               for n in FACES[:2])
    edited = bytearray((raw / FACES[1]).read_bytes())
    edited[len(edited) // 2] ^= 0x01
    (raw / FACES[1]).write_bytes(bytes(edited))
    os.utime(raw / FACES[1], ns=(later + 10**9, later + 10**9))   # a new time, the same size: the hash decides
    build(out, tmp_path / "edited", progress=False, log=quiet)
    assert packed_paths(tmp_path / "edited") == [FACES[0]]
    assert "changed after alignment" in unreadable_lines(tmp_path / "edited")[FACES[1]]
    assert align_quietly(raw, out)["processed_this_run"] == 1


def test_symlinked_identity_folder_is_followed_by_align_and_build_alike(lfw_dir, tmp_path):
    """#5: a linked identity folder is an identity for both stages (a link loop ends the walk)."""
    from align import load_report
    from tfrecords.build import build

    raw, out = tmp_path / "raw", tmp_path / "aligned"
    copy_faces(lfw_dir, tmp_path / "elsewhere", FACES[1:3])
    copy_faces(lfw_dir, raw, FACES[:1])
    (raw / "George_W_Bush").symlink_to(tmp_path / "elsewhere" / "George_W_Bush", target_is_directory=True)
    (raw / "Aaron_Eckhart" / "loop").symlink_to(raw, target_is_directory=True)
    align_quietly(raw, out)
    report = load_report(out / "align_report.jsonl")
    assert sorted(report) == sorted(FACES[:3]) and all(r["status"] == "aligned" for r in report.values())
    build(out, tmp_path / "shards", progress=False, log=quiet)
    assert packed_paths(tmp_path / "shards") == sorted(FACES[:3])


# ---- #5: the builder accounts for every input file ----------------------------------------------------
def test_build_accounts_for_every_input_file(tmp_path):
    """Nested folders, dangling links (file or identity), loose images, non-images: each gets a line
    in unreadable.txt with its reason; a linked identity folder is packed. Nothing vanishes."""
    from tfrecords.build import build

    inp = tmp_path / "in"
    for name in ("A/0.jpg", "A/1.jpg", "A/sub/2.jpg", "A/sub/deeper/3.jpg", "loose.jpg"):
        smooth_jpeg(inp / name)
    for name in ("0.jpg", "1.jpg"):
        smooth_jpeg(tmp_path / "elsewhere" / "B" / name)
    (inp / "A" / "notes.txt").write_text("not an image")
    (inp / "A" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (inp / "B").symlink_to(tmp_path / "elsewhere" / "B", target_is_directory=True)
    (inp / "C").symlink_to(tmp_path / "missing_folder", target_is_directory=True)
    build(inp, tmp_path / "out", progress=False, log=quiet)
    packed = packed_paths(tmp_path / "out")
    listed = unreadable_lines(tmp_path / "out")
    assert packed == ["A/0.jpg", "A/1.jpg", "B/0.jpg", "B/1.jpg"]
    assert "nested below an identity" in listed["A/sub/2.jpg"] and "nested" in listed["A/sub/deeper/3.jpg"]
    assert "dangling" in listed["A/gone.jpg"] and "dangling" in listed["C"]
    assert "not in an identity folder" in listed["loose.jpg"] and "not an image" in listed["A/notes.txt"]
    everything = {str(p.relative_to(inp)) for p in inp.rglob("*") if p.is_symlink() and not p.exists()}
    for root, _, files in os.walk(inp, followlinks=True):
        everything |= {os.path.relpath(os.path.join(root, f), inp) for f in files}
    assert set(packed) | set(listed) == everything and not set(packed) & set(listed)   # exactly one place each


def test_build_resume_compares_contents_not_names(tmp_path):
    """#4: an input replaced under the same name is not 'nothing to do': the rerun is refused until
    --overwrite, which packs the new bytes."""
    from tfrecords.build import BuildError, build

    inp = tmp_path / "in"
    for k in range(2):
        smooth_jpeg(inp / "A" / f"{k}.jpg", seed=k)
    build(inp, tmp_path / "out", progress=False, log=quiet)
    replaced = smooth_jpeg(inp / "A" / "0.jpg", seed=7).read_bytes()
    with pytest.raises(BuildError, match="other inputs or options.*--overwrite"):
        build(inp, tmp_path / "out", progress=False, log=quiet)
    build(inp, tmp_path / "out", overwrite=True, progress=False, log=quiet)
    assert packed(tmp_path / "out")["A/0.jpg"] == replaced


# ---- #6: --list labels ---------------------------------------------------------------------------------
def test_list_labels_are_integers_in_numeric_order_or_names_never_mixed(tmp_path):
    """Integer labels keep their values ("10" is class 10, not class 2 by text order); a list that
    mixes integers and names, or spells one integer two ways, is refused at the line, before work."""
    from tfrecords.build import build
    from tfrecords.sources import SourceError

    lines = []
    for label in range(11):
        lines.append(f"img/{label}.jpg {label}")
        smooth_jpeg(tmp_path / "img" / f"{label}.jpg", seed=label)
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    manifest = build(None, tmp_path / "out", list_file=tmp_path / "list.txt", progress=False, log=quiet)
    assert manifest["labels"] == [str(k) for k in range(11)]
    import tensorflow as tf

    from tfrecords import features as F
    for shard in manifest["splits"]["train"]["shards"]:
        for raw in tf.data.TFRecordDataset(str(tmp_path / "out" / shard["file"])):
            example = tf.io.parse_single_example(raw, F.feature_spec())
            assert f"img/{int(example[F.LABEL])}.jpg" == example[F.PATH].numpy().decode()
    (tmp_path / "mixed.txt").write_text("img/0.jpg 0\n# a comment\nimg/1.jpg 1\nimg/2.jpg George_W_Bush\n")
    with pytest.raises(SourceError, match=r"mixed\.txt:4: label 'George_W_Bush' is a name, but line 1 has an integer"):
        build(None, tmp_path / "out2", list_file=tmp_path / "mixed.txt", progress=False, log=quiet)
    (tmp_path / "spelled.txt").write_text("img/0.jpg 7\nimg/1.jpg 007\n")
    with pytest.raises(SourceError, match=r"spelled\.txt:2: label '007' is the class number of '7'"):
        build(None, tmp_path / "out3", list_file=tmp_path / "spelled.txt", progress=False, log=quiet)
    assert not (tmp_path / "out2" / "manifest.json").exists()


# ---- training: disk full, damaged checkpoint, truncated .keras ------------------------------------------
TINY = {"backbone": "mobilefacenet", "image_size": "32x32", "embedding_size": 32, "batch_size": 4,
        "num_classes": 10, "synthetic_images": 64, "log_every": 1, "exports": "keras"}


def tiny_train_cli(run_dir, *extra):
    args = [sys.executable, str(REPO / "train.py"), "--output-dir", str(run_dir)]
    for key, value in TINY.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args + list(extra)


def test_disk_full_while_checkpointing_is_one_line_naming_the_run(tmp_path):
    """#7: a checkpoint that cannot be written (EFBIG from a file-size limit; ENOSPC alike) stops
    training with one line naming the run directory and how to continue; no partial save is left."""
    import resource
    import signal

    def small_file_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))   # the weights are ~4 MB

    run = tmp_path / "run"
    result = subprocess.run(tiny_train_cli(run, "--max-steps", "3", "--checkpoint-every", "2"), capture_output=True,
                            text=True, timeout=300, preexec_fn=small_file_limit,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert result.returncode == 1, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert "checkpoint of step 2" in line and "File too large" in line and str(run) in line, line
    assert not list((run / "checkpoints").glob("*_temp*"))


def test_damaged_checkpoint_and_truncated_model_are_named_with_the_fix(tmp_path, capsys):
    """#7: --resume skips a damaged newest checkpoint (one warning line naming it) for the older one;
    none readable is one error line. A truncated .keras is named as such (Keras says "File not found"),
    with the fix, which works: --resume of the finished run exports it again."""
    import evaluate
    from engines.model_file import load_embedding_model
    from training.config import resolve_config
    from training.run_dir import new_run_dir
    from training.trainer import run_training

    run = tmp_path / "run"
    config = dict(TINY, max_steps=4, checkpoint_every=2, lr_schedule="constant")
    run_training(resolve_config(config), new_run_dir(run, "m", "l"), log=quiet)
    model = run / "export" / "embedding.keras"
    model.write_bytes(model.read_bytes()[:4000])
    with pytest.raises(ValueError, match=r"embedding\.keras is not a complete \.keras file.*--resume --output-dir"):
        load_embedding_model(model)
    images = tmp_path / "faces"
    for name in ("A/A_0001.jpg", "B/B_0001.jpg"):
        smooth_jpeg(images / name, size=(32, 32))
    smooth_jpeg(images / "A/A_0002.jpg", size=(32, 32), seed=2)
    (tmp_path / "pairs.txt").write_text("# generic pairs\nA/A_0001.jpg\tA/A_0002.jpg\t1\nA/A_0001.jpg\tB/B_0001.jpg\t0\n")
    assert evaluate.main(["--model", str(model), "--lfw-pairs", str(tmp_path / "pairs.txt"),
                          "--lfw-dir", str(images), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "not a complete .keras file" in one_error_line(err)

    newest = min((run / "checkpoints").glob("ckpt-4.data-*"))
    newest.write_bytes(newest.read_bytes()[:1000])
    messages = []
    summary = run_training(resolve_config(dict(config, resume=True)), run, log=messages.append)
    assert summary["start_step"] == 2 and summary["last_step"] == 4
    assert any("ckpt-4" in m and "cannot be read" in m and "resuming from the older ckpt-2" in m for m in messages)
    load_embedding_model(model)   # exported again by the resumed run
    for data in (run / "checkpoints").glob("ckpt-*.data-*"):
        data.write_bytes(b"")
    with pytest.raises(ValueError, match=r"no checkpoint in .*checkpoints can be read: ckpt-4 .*ckpt-2"):
        run_training(resolve_config(dict(config, resume=True)), run, log=quiet)


# ---- our .bin writer and reader agree for every pairs format --------------------------------------------
def test_bin_written_from_view1_and_generic_pairs_is_read_with_the_files_own_folds(lfw_dir, tmp_path):
    """A View 1 file lists its same pairs, then its different pairs: the writer used to keep that order,
    so the reader's contiguous fold 0 held only same pairs ('fold 0 has 2 same and 0 different
    pairs'). Now pairs go in fold by fold and the .bin evaluates exactly as its pairs file does."""
    import hashlib

    from evaluation.binset import bin_pairset, load_bin
    from evaluation.binset import main as binset_main
    from evaluation.metrics import verification_metrics
    from evaluation.pairs import read_pairs

    generic = tmp_path / "generic.txt"
    names = sorted(p.relative_to(lfw_dir / "images").as_posix() for p in (lfw_dir / "images").glob("A[a-b]*/*.jpg"))
    pairs = [(names[i], names[i + 1], 1) for i in range(13)] + [(names[i], names[-1 - i], 0) for i in range(17)]
    generic.write_text("# generic pairs\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in pairs))

    def feature(image_bytes):   # any fixed function of the image will do: the folds are what is compared
        return np.random.default_rng(int.from_bytes(hashlib.sha256(image_bytes).digest()[:8], "little")).normal(size=8)

    for pairs_file in (lfw_dir / "pairsDevTest.txt", generic):
        out = tmp_path / f"{pairs_file.stem}.bin"
        assert binset_main(["--aligned-dir", str(lfw_dir / "images"), "--pairs", str(pairs_file),
                            "--output", str(out)]) == 0
        from_file = read_pairs(pairs_file)
        bins, issame = load_bin(out)
        from_bin = bin_pairset(out, issame)
        emb = np.array([feature(b) for b in bins])
        bin_result = verification_metrics(emb[0::2], emb[1::2], from_bin.issame, from_bin.folds)
        images = lfw_dir / "images"

        def read(path, images=images):
            return (images / (path if path.endswith(".jpg") else path + ".jpg")).read_bytes()

        file_result = verification_metrics(np.array([feature(read(p)) for p in from_file.paths_a]),
                                           np.array([feature(read(p)) for p in from_file.paths_b]),
                                           from_file.issame, from_file.folds)
        assert bin_result["num_folds"] == file_result["num_folds"] == min(10, int(issame.sum()), int((~issame).sum()))
        assert bin_result["fold_accuracies"] == file_result["fold_accuracies"]


# ---- round three (issue 37): inputs no earlier test tried ------------------------------------------------
def fifo_and_device_link(folder, stem="pipe"):
    """FOLDER/STEM.jpg a FIFO (open() of it blocks forever) and FOLDER/zero.jpg a link to /dev/zero (endless)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / f"{stem}.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")


def cli(args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"), check=False, **kwargs)


def test_fifos_and_devices_are_reported_by_the_build_never_read(tmp_path):
    """A FIFO or a link to /dev/zero in an identity folder and in a --list: one unreadable.txt line each
    naming what it is, never a hang (the commands run under a timeout). The same --list also starts
    with a byte-order mark (its first entry must not be lost) and lists one file twice under two
    spellings and labels (packed once, the repeat reported with both lines)."""
    inp = tmp_path / "in"
    for name in ("A/0.jpg", "A/1.jpg", "B/0.jpg", "B/1.jpg"):
        smooth_jpeg(inp / name, seed=len(name) + ord(name[0]))
    fifo_and_device_link(inp / "A")
    result = cli(["-m", "tfrecords.build", "--input-dir", str(inp), "--output-dir", str(tmp_path / "out"),
                  "--no-progress"])
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    listed = unreadable_lines(tmp_path / "out")
    assert packed_paths(tmp_path / "out") == ["A/0.jpg", "A/1.jpg", "B/0.jpg", "B/1.jpg"]
    assert all("not a regular file" in listed[n] for n in ("A/pipe.jpg", "A/zero.jpg")) and len(listed) == 2

    (tmp_path / "list.txt").write_bytes("\ufeffin/A/0.jpg 0\nin/A/1.jpg 0\nin/A/pipe.jpg 0\nin/A/zero.jpg 0\n"
                                        "in/B/0.jpg 1\nin/B/1.jpg 1\n./in/A/1.jpg 1\n".encode("utf-8"))
    result = cli(["-m", "tfrecords.build", "--list", str(tmp_path / "list.txt"), "--output-dir",
                  str(tmp_path / "listed"), "--no-progress"])
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    listed = unreadable_lines(tmp_path / "listed")
    assert packed_paths(tmp_path / "listed") == ["in/A/0.jpg", "in/A/1.jpg", "in/B/0.jpg", "in/B/1.jpg"]
    assert "FIFO" in listed["in/A/pipe.jpg"] and "character device" in listed["in/A/zero.jpg"]
    assert "list.txt:7: the same file as line 2 with label '0', not '1' (listed twice)" in listed["in/A/1.jpg"]
    assert len(listed) == 3


def test_fifos_devices_and_non_utf8_names_in_align_and_its_links(lfw_dir, tmp_path):
    """align: a FIFO and a /dev/zero link are `unreadable` records naming what they are (no hang); a
    photo whose name is not UTF-8 is aligned and drawn on the contact sheet (cv2.imread crashed on it),
    then listed by the builder with the fix (it was a UnicodeEncodeError). An output folder inside the
    input given through a link is refused like one inside the input itself."""
    from align import load_report
    from tfrecords.build import build

    raw, out = tmp_path / "raw", tmp_path / "aligned"
    copy_faces(lfw_dir, raw, FACES[:1])
    latin1 = os.fsdecode(b"caf\xe9.jpg")
    (raw / "George_W_Bush").mkdir()
    (raw / "George_W_Bush" / latin1).write_bytes((lfw_dir / "images" / FACES[1]).read_bytes())
    fifo_and_device_link(raw / "Aaron_Eckhart")
    result = align_cli(raw, out, "--workers", "1", "--contact-sheet", "10", timeout=240)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    report = load_report(out / "align_report.jsonl")
    assert report["Aaron_Eckhart/pipe.jpg"]["reason"] == report["Aaron_Eckhart/zero.jpg"]["reason"] == "unreadable"
    assert "a FIFO" in report["Aaron_Eckhart/pipe.jpg"]["detail"]
    assert "character device" in report["Aaron_Eckhart/zero.jpg"]["detail"]
    assert report[f"George_W_Bush/{latin1}"]["status"] == "aligned" and (out / "contact_sheet.png").is_file()
    assert cv2.imread(str(out / "contact_sheet.png")).shape[1] == 2 * (96 + 2)   # both crops drawn

    build(out, tmp_path / "shards", progress=False, log=quiet)
    assert packed_paths(tmp_path / "shards") == [FACES[0]]
    assert "not valid UTF-8" in unreadable_lines(tmp_path / "shards")["George_W_Bush/caf\\xe9.jpg"]

    (tmp_path / "link").symlink_to(raw, target_is_directory=True)
    result = align_cli(tmp_path / "link", raw / "crops", timeout=120)
    assert result.returncode == 2 and "is inside --input-dir" in one_error_line(result.stderr)
    assert not (raw / "crops" / "align_report.jsonl").exists()


def test_photo_commands_refuse_fifos_devices_and_pixel_bombs(tmp_path):
    """verify.py / identify.py read a photo through inference.embedding.align_photo: a FIFO or a device
    is a failed record naming it (never a hang: run under a timeout), a 100-byte PNG claiming
    30000x30000 px is refused from its header with align's megapixel limit (it was decoded); the
    manifest's checksum (sha256_of_file) refuses a device too."""
    fifo_and_device_link(tmp_path)
    bomb = huge_png_header(tmp_path / "bomb.png")
    script = ("import sys\nfrom inference.embedding import align_photo\nfrom fileio import sha256_of_file\n"
              "for p in sys.argv[1:]:\n    record, crop = align_photo(p, (112, 96), None)\n"
              "    print(record.reason, '|', record.detail)\n"
              "try:\n    sha256_of_file(sys.argv[2])\nexcept OSError as e:\n    print(type(e).__name__, e)\n")
    result = cli(["-c", script, str(tmp_path / "pipe.jpg"), str(tmp_path / "zero.jpg"), str(bomb)], timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("unreadable |") and "FIFO" in lines[0] and "pipe.jpg" in lines[0]
    assert lines[1].startswith("unreadable |") and "character device" in lines[1]
    assert lines[2].startswith("too many pixels |") and "900.0 megapixels" in lines[2]
    assert lines[3].startswith("NotRegularFile") and "zero.jpg" in lines[3]


def test_sigterm_during_training_saves_a_checkpoint_and_exits_143(tmp_path):
    """SIGTERM (a scheduler, `docker stop`) mid-run: the step finishes, its checkpoint is saved, one
    line says so and how to continue, exit status 143 (128 + 15), as a shell expects. Before, the
    process ended with no word and lost up to --checkpoint-every steps."""
    import signal
    import time

    run = tmp_path / "run"
    process = subprocess.Popen(tiny_train_cli(run, "--max-steps", "100000", "--checkpoint-every", "100000",
                                              "--val-every", "100000"),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    try:
        log, deadline = run / "train_log.jsonl", time.monotonic() + 240
        while not (log.exists() and len(log.read_text().splitlines()) >= 2):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr
    line = next(line for line in stderr.splitlines() if "SIGTERM" in line)
    step = int(line.split("stopped after step ")[1].split(",")[0])
    assert step >= 2 and f"ckpt-{step} saved" in line and f"--resume --output-dir {run}" in line
    assert (run / "checkpoints" / f"ckpt-{step}.index").is_file()


def test_sigint_is_caught_only_while_training():
    """The handler sets a flag (the loop saves and stops after the step) and the previous handler comes back."""
    import signal

    from training.preemption import StopRequest

    before = signal.getsignal(signal.SIGINT)
    stop = StopRequest()
    with stop.installed():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)   # a second signal does not replace the first
    assert stop.signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is before


def test_resume_refuses_shards_rebuilt_with_other_people(tmp_path):
    """Shards rebuilt in place with the same class count but other identities: --resume stops with one
    line naming the label map (the path and the class count alone did not notice)."""
    from tfrecords.build import build
    from training.config import resolve_config
    from training.run_dir import new_run_dir
    from training.trainer import run_training

    for people, folder in ((("A", "B"), "first"), (("C", "D"), "second")):
        for person in people:
            for k in range(3):
                smooth_jpeg(tmp_path / folder / person / f"{k}.jpg", size=(32, 32), seed=ord(person) * 10 + k)
    shards = tmp_path / "shards"
    build(tmp_path / "first", shards, progress=False, log=quiet)
    config = {"backbone": "mobilefacenet", "image_size": "32x32", "embedding_size": 32, "batch_size": 4,
              "data": str(shards), "max_steps": 2, "checkpoint_every": 2, "log_every": 1, "exports": "keras",
              "lr_schedule": "constant"}
    run = tmp_path / "run"
    run_training(resolve_config(config), new_run_dir(run, "m", "l"), log=quiet)
    build(tmp_path / "second", shards, overwrite=True, progress=False, log=quiet)
    with pytest.raises(ValueError, match=r"--resume: .*shards is not the data run .* label map .*differs"):
        run_training(resolve_config(dict(config, resume=True, max_steps=4)), run, log=quiet)


def test_numbers_that_mean_nothing_are_refused_with_one_line(tmp_path, capsys):
    """--lr-schedule 0:-0.5 (trained at a negative rate), --shard-size-mb nan (a traceback),
    --val-identities 1.0 (meant one identity, not all), export_onnx.py --opset 1 (a traceback deep in
    tf2onnx): each refused before any work with one line naming the flag."""
    import export_onnx
    from tfrecords import build as build_cli
    from training.schedules import build_lr_schedule

    with pytest.raises(ValueError, match="learning rates must be finite and >= 0"):
        build_lr_schedule("0:-0.5", 0.1, 100)
    for flag, value in (("--shard-size-mb", "nan"), ("--val-identities", "1.0"), ("--val-identities", "nan")):
        with pytest.raises(SystemExit) as stopped:
            build_cli.parse_args(["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "o"), flag, value])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}: '{value}'" in one_error_line(err)
    assert build_cli.parse_args(["--input-dir", "x", "--output-dir", "y", "--val-identities", "1"]).val_identities == 1
    assert export_onnx.main(["--opset", "1", "--model", str(tmp_path / "none.keras")]) == 1
    assert "--opset 1 is not supported: give an ONNX opset from 13 to 18" in one_error_line(capsys.readouterr().err)


def test_one_png_among_jpegs_leaves_every_jpeg_pixel_identical_to_opencv(lfw_dir):
    """The reader decodes per image: a split with one PNG used to move every JPEG to decode_image
    (INTEGER_FAST IDCT, up to 16 levels off OpenCV)."""
    from tfrecords.reader import _decoder

    data = (lfw_dir / "images" / FACES[0]).read_bytes()
    opencv = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    png = cv2.imencode(".png", opencv[:, :, ::-1])[1].tobytes()
    decode = _decoder({"splits": {"train": {"formats": {"jpeg": 3, "png": 1}}}}, "train")
    assert np.array_equal(decode(data).numpy(), opencv)
    assert np.array_equal(decode(png).numpy(), opencv)


def test_config_files_of_the_wrong_types_or_syntax_are_one_line_with_the_line(tmp_path, capsys):
    """--config with a quoted number, a YAML syntax error, a YAML tag, an integer key, bad JSON: one
    line naming the file, the line and the key (they were tracebacks); nothing runs."""
    import train

    cases = {"quoted.json": ('{"lr": 0.1,\n "batch_size": "64"}', "quoted.json:2: batch_size: expected an integer"),
             "syntax.yaml": ("lr: 0.1\nbatch_size: [64\n", "syntax.yaml:3: not valid YAML"),
             "tag.yaml": ("lr: !!python/object/apply:os.system [ls]\n", "tag.yaml:1: not valid YAML"),
             "intkey.yaml": ("lr: 0.1\n1: 2\n", "intkey.yaml:2: option name 1 is not a name"),
             "comma.json": ('{"lr": 0.1,,}', "comma.json:1: not valid JSON")}
    for name, (text, says) in cases.items():
        (tmp_path / name).write_text(text)
        assert train.main(["--config", str(tmp_path / name), "--output-dir", str(tmp_path / "run")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert says in line, line
    assert not (tmp_path / "run").exists()


def test_gallery_files_are_checked_for_everything_they_claim(tmp_path):
    """A truncated gallery (BadZipFile), one whose arrays were edited out of shape (IndexError), one whose
    template is not unit length or not finite: GalleryError naming the file and the fix, never a
    traceback or a silently wrong ranking."""
    from inference.gallery import Gallery, GalleryError

    gallery = Gallery("fp", "model.keras", (112, 96))
    rng = np.random.default_rng(0)
    for name in ("ann", "bob"):
        features = rng.normal(size=(2, 8))
        gallery.enroll(name, features / np.linalg.norm(features, axis=1, keepdims=True), [f"{name}1", f"{name}2"])
    good = gallery.save(tmp_path / "good.npz")
    assert Gallery.load(good).names == ["ann", "bob"]
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:300])
    with pytest.raises(GalleryError, match=r"cut\.npz is not a gallery file \(BadZipFile.*enroll the people again"):
        Gallery.load(tmp_path / "cut.npz")
    arrays = dict(np.load(good))

    def edited(name, **changes):
        np.savez(tmp_path / name, **{**arrays, **changes})
        return tmp_path / name

    with pytest.raises(GalleryError, match=r"scaled\.npz: the template\(s\) of \['ann'\] are not finite unit"):
        Gallery.load(edited("scaled.npz", templates=arrays["templates"] * np.array([[3.0], [1.0]])))
    with pytest.raises(GalleryError, match=r"nan\.npz: the template\(s\) of \['bob'\]"):
        Gallery.load(edited("nan.npz", templates=np.where([[False], [True]], np.nan, arrays["templates"])))
    with pytest.raises(GalleryError, match=r"shape\.npz: a damaged or hand-edited gallery \(TypeError"):
        Gallery.load(edited("shape.npz", image_counts=np.array(2)))


def test_a_pair_naming_one_image_twice_is_refused(tmp_path):
    """Such a pair scores 1 whatever the model: a free correct "same" that inflated accuracy."""
    from evaluation.pairs import PairsFormatError, read_pairs

    (tmp_path / "pairs.txt").write_text("# generic pairs\nA/1.jpg\tA/2.jpg\t1\nA/1.jpg\tA/1.jpg\t1\nA/1.jpg\tB/1.jpg\t0\n")
    with pytest.raises(PairsFormatError, match=r"pairs\.txt:3: the pair 'A/1\.jpg' - 'A/1\.jpg' names the same image"):
        read_pairs(tmp_path / "pairs.txt")
    same = "".join(f"P\t1\t{k}\n" for k in range(1, 11))   # its first line: P 1 1
    (tmp_path / "view1.txt").write_text("10\n" + same + "".join(f"P\t{k}\tQ\t1\n" for k in range(1, 11)))
    with pytest.raises(PairsFormatError, match="names the same image twice"):
        read_pairs(tmp_path / "view1.txt")


def test_photo_commands_take_max_megapixels_as_align_does(tmp_path):
    """verify.py and identify.py refuse a photo whose header says more than --max-megapixels (align's
    flag and default, one home: fileio.reading), and the refusal's fix names the flag they now have;
    a larger --max-megapixels admits the photo (it is decoded, and this one, a header only, fails as
    corrupt). Run as a user runs them."""
    from inference_helpers import embedding_model

    model = tmp_path / "model.keras"
    embedding_model("mobilefacenet", (112, 96), 32, seed=0).save(model)
    photo = huge_png_header(tmp_path / "people" / "Big" / "mid.png", 6000, 6000)   # 36 MP, 25 MP by default
    common = ["--model", str(model), "--threshold", "0.3", "--no-progress"]
    refused = cli(["verify.py", str(photo), str(photo), *common], timeout=240)
    assert refused.returncode == 1 and refused.stdout == "", refused.stderr[-3000:]
    line = one_error_line(refused.stderr)
    assert line.startswith("verify: error: ") and str(photo) in line and "36.0 megapixels" in line
    assert "above the 25 megapixel limit" in line and "raise --max-megapixels" in line
    admitted = cli(["verify.py", str(photo), str(photo), *common, "--max-megapixels", "40"], timeout=240)
    line = one_error_line(admitted.stderr)
    assert admitted.returncode == 1 and "does not decode" in line and "megapixel" not in line, line
    bad = cli(["verify.py", str(photo), str(photo), *common, "--max-megapixels", "nan"], timeout=60)
    assert bad.returncode == 2 and "--max-megapixels: expected a number of megapixels > 0" in bad.stderr
    enroll = cli(["identify.py", "enroll", "--gallery", str(tmp_path / "g.gallery"), "--input-dir",
                  str(tmp_path / "people"), "--model", str(model), "--no-progress", "--max-megapixels", "30"],
                 timeout=240)
    assert enroll.returncode == 1, enroll.stderr[-3000:]
    assert "above the 30 megapixel limit" in enroll.stdout and "not enrolled" in enroll.stdout


def test_a_pair_listed_twice_is_refused_naming_the_lines(tmp_path):
    """The same pair twice (in either order) counts twice in the accuracy. evaluate.py refuses the file
    with one line naming it, the lines and the fix (generic, View 1 and View 2 alike); the builder's
    writer refuses to write one; LFW's own pairs files have no repeat and still load."""
    from evaluation.pairs import PairsFormatError, read_pairs
    from fileio import format_generic_pairs

    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    for name in ("A/1.jpg", "A/2.jpg", "B/1.jpg"):
        (tmp_path / name).write_bytes(b"")
    model = tmp_path / "model.keras"
    model.write_bytes(b"")   # never loaded: the pairs file is read first
    generic = tmp_path / "pairs.txt"
    generic.write_text("# generic pairs\nA/1.jpg\tA/2.jpg\t1\nA/1.jpg\tB/1.jpg\t0\nA/2.jpg\tA/1.jpg\t1\n")
    result = cli(["evaluate.py", "--model", str(model), "--lfw-pairs", str(generic), "--lfw-dir", str(tmp_path),
                  "--no-plots", "--no-progress"], timeout=120)
    line = one_error_line(result.stderr)
    assert result.returncode == 1 and f"{generic}:4: the pair 'A/2.jpg' - 'A/1.jpg' repeats line 2" in line, line
    assert "list each pair once" in line
    view1 = tmp_path / "view1.txt"
    same = "".join(f"P\t1\t{k}\n" for k in range(2, 12))
    view1.write_text("10\n" + same + "".join(f"P\t{k}\tQ\t1\n" for k in range(1, 10)) + "Q\t1\tP\t3\n")
    with pytest.raises(PairsFormatError, match=r"view1\.txt:21: the pair 'Q/Q_0001' - 'P/P_0003' repeats line 14"):
        read_pairs(view1)
    view2 = tmp_path / "view2.txt"
    view2.write_text("10\t1\n" + "".join(f"P{f}\t1\t2\nP{f}\t1\tQ\t1\n" for f in range(9)) + "P9\t1\t2\nP0\t1\tQ\t1\n")
    with pytest.raises(PairsFormatError, match=r"view2\.txt:21: .* repeats line 3 "):
        read_pairs(view2)
    with pytest.raises(ValueError, match=r"pair 3 \('b', 'a'\) repeats pair 1"):
        format_generic_pairs([("a", "b", 1), ("a", "c", 0), ("b", "a", 1)])
    lfw = REPO.parent / "shared" / "data" / "lfw"
    if (lfw / "pairs.txt").is_file():
        assert [len(read_pairs(lfw / name)) for name in ("pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt")] == [
            6000, 2200, 1000]


def test_list_names_with_spaces_never_make_an_empty_class(tmp_path):
    """`img.jpg George W Bush` split at the last space made path 'img.jpg George W', label 'Bush': the
    image was lost and an empty class 'Bush' created. Now a tab line keeps spaces (path<TAB>label,
    or insightface's .lst flag<TAB>path<TAB>label); a space-separated line of more fields is split
    where the path names an existing file, else listed with the fix; a missing file is listed when
    the list is counted, so its label gets no class. Run as the user runs the builder."""
    for name in ("a.jpg", "b.jpg", "my photo.jpg", "c.jpg", "d.jpg"):
        smooth_jpeg(tmp_path / "img" / name, seed=len(name))
    (tmp_path / "list.txt").write_text("img/a.jpg George W Bush\n"          # split where the file exists
                                       "img/my photo.jpg\tGeorge W Bush\n"  # tab: spaces in both fields
                                       "1\timg/b.jpg\tLaura Bush\n"         # insightface .lst
                                       "img/c.jpg Laura Bush\n"
                                       "img/nowhere.jpg Nobody At All\n"    # no split names a file
                                       "img/missing.jpg Ghost\n"            # a missing file: no class 'Ghost'
                                       "img/d.jpg Dick\n")
    result = cli(["-m", "tfrecords.build", "--list", str(tmp_path / "list.txt"), "--output-dir",
                  str(tmp_path / "out"), "--no-progress"])
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["labels"] == ["Dick", "George W Bush", "Laura Bush"] and "empty_classes" not in manifest
    assert manifest["class_counts"] == [1, 2, 2]
    assert packed_paths(tmp_path / "out") == ["img/a.jpg", "img/b.jpg", "img/c.jpg", "img/d.jpg", "img/my photo.jpg"]
    listed = unreadable_lines(tmp_path / "out")
    assert sorted(listed) == ["img/missing.jpg", "img/nowhere.jpg Nobody At All"]
    assert "list.txt:5:" in listed["img/nowhere.jpg Nobody At All"] and "no split of it names an existing file" in \
        listed["img/nowhere.jpg Nobody At All"] and "with a tab" in listed["img/nowhere.jpg Nobody At All"]
    assert "list.txt:6: No such file or directory (label 'Ghost')" in listed["img/missing.jpg"]
    # a class whose every image fails later (here: not an image) is named on the console, not only in the manifest
    (tmp_path / "img" / "e.jpg").write_text("not a photo")
    (tmp_path / "bad.txt").write_text("img/a.jpg\tA\nimg/e.jpg\tE\n")
    result = cli(["-m", "tfrecords.build", "--list", str(tmp_path / "bad.txt"), "--output-dir",
                  str(tmp_path / "bad"), "--no-progress"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: 1 class(es) have no image (E)" in result.stdout + result.stderr


def test_lying_exif_orientation_is_overridden_by_the_face(lfw_dir, tmp_path):
    """A tag that lies (pixels turned 180° or 90° with tag 1; upright pixels with tag 3) still gives an
    upright crop recorded aligned, with the turn used and the override in the record; an upright photo
    without a tag is aligned at the first try (orientation 0, no note)."""
    from PIL import Image

    raw, out = tmp_path / "raw", tmp_path / "out"
    (raw / "P").mkdir(parents=True)
    cases = {}  # file -> (exif tag written, orientation expected)
    for name in ("Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "Serena_Williams/Serena_Williams_0003.jpg"):
        # 250 wide × 200 high: a quarter turn changes the shape, so mapping back must use the right one
        image, stem = Image.open(lfw_dir / "images" / name).crop((0, 25, 250, 225)), Path(name).stem
        for label, pixels, tag, expected in (
                ("up", image, None, 0), ("turned180_tag1", image.rotate(180), 1, 180),
                ("turned90_tag1", image.transpose(Image.Transpose.ROTATE_90), 1, 270), ("up_tag3", image, 3, 180)):
            exif = Image.Exif()
            if tag:
                exif[0x0112] = tag
            pixels.save(raw / "P" / f"{stem}_{label}.jpg", quality=95, exif=exif)
            cases[f"P/{stem}_{label}.jpg"] = (tag, expected)
    run = align_cli(raw, out)
    assert run.returncode == 0, run.stderr[-2000:]
    report = {r["input"]: r for r in map(json.loads, (out / "align_report.jsonl").read_text().splitlines())}

    def crop(rel):
        return cv2.imread(str(out / report[rel]["output"])).astype(np.float64)

    for rel, (tag, expected) in cases.items():
        record = report[rel]
        assert record["status"] == "aligned" and record["orientation"] == expected, record
        assert record["exif_orientation"] == tag
        if expected:
            assert f"EXIF orientation {tag} overridden" in record["detail"], record
        else:
            assert record["detail"] is None
        upright = crop(rel.rsplit("_", 2)[0] + "_up.jpg" if "turned" in rel else rel.replace("_tag3", ""))
        difference, flipped = np.abs(crop(rel) - upright).mean(), np.abs(crop(rel) - upright[::-1, ::-1]).mean()
        assert difference < 4 and flipped > 25, (rel, difference, flipped)   # measured: ≤ 2.0 and ≥ 40
