"""align_folder / the command: bad inputs are reported with their reason, runs resume after kill -9,
settings are validated, nothing is filtered unless asked."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skimage_data

from align import AlignError, align_folder, load_report
from align.folder import TMP_DIR_NAME

REPO_ROOT = Path(__file__).resolve().parents[1]
FACES = ["Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "George_W_Bush/George_W_Bush_0010.jpg",
         "Serena_Williams/Serena_Williams_0003.jpg"]


def _quiet(**kwargs):
    return {"workers": 1, "progress": False, "contact_sheet_size": 0, "log": lambda m: None, **kwargs}


def _copy_faces(lfw_dir, raw, names=FACES):
    for name in names:
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes((lfw_dir / "images" / name).read_bytes())


def _bad_inputs(raw, lfw_dir):
    bad = raw / "Bad_Inputs"
    bad.mkdir(parents=True)
    jpeg = (lfw_dir / "images" / FACES[0]).read_bytes()
    (bad / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (bad / "notes.jpg").write_text("this is a text file named .jpg\n")
    cv2.imwrite(str(bad / "tiny.png"), np.full((10, 10, 3), 128, np.uint8))
    cv2.imwrite(str(bad / "coffee.jpg"), cv2.cvtColor(skimage_data.coffee(), cv2.COLOR_RGB2BGR))
    return {"Bad_Inputs/corrupt.jpg": "corrupt image", "Bad_Inputs/notes.jpg": "not an image",
            "Bad_Inputs/tiny.png": "too small", "Bad_Inputs/coffee.jpg": "no face"}


def test_bad_inputs_are_reported_with_reasons_and_the_run_completes(lfw_dir, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _copy_faces(lfw_dir, raw)
    expected = _bad_inputs(raw, lfw_dir)
    summary = align_folder(raw, out, **_quiet(contact_sheet_size=50))
    report = load_report(out / "align_report.jsonl")
    assert len(report) == len(FACES) + len(expected)
    for name, reason in expected.items():
        assert report[name]["status"] == "failed" and report[name]["reason"] == reason, report[name]
        assert report[name]["output"] is None
    assert not (out / "Bad_Inputs").exists()  # no crop for any of them
    for name in FACES:
        record = report[name]
        assert record["status"] == "aligned" and record["reason"] is None
        assert np.asarray(record["landmarks"]).shape == (5, 2)
        crop = cv2.imread(str(out / record["output"]))
        assert crop.shape == (112, 96, 3)
    assert (summary["aligned"], summary["failed"], summary["fallback"]) == (3, 4, 0)
    assert summary["detection_rate"] == pytest.approx(3 / 4)  # 3 faces of the 4 images that could be searched
    assert (out / "contact_sheet.png").is_file() and (out / "align_summary.json").is_file()
    assert json.loads((out / "align_summary.json").read_text())["files"] == 7
    assert not (out / TMP_DIR_NAME).exists()
    # the report is outside the identity folders: every subfolder of ALIGNED is an identity
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted({n.split("/")[0] for n in FACES})


def test_fallback_center_writes_marked_centred_crop(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    (raw / "Coffee").mkdir(parents=True)
    cv2.imwrite(str(raw / "Coffee" / "cup.jpg"), cv2.cvtColor(skimage_data.coffee(), cv2.COLOR_RGB2BGR))
    align_folder(raw, out, **_quiet())
    assert load_report(out / "align_report.jsonl")["Coffee/cup.jpg"]["status"] == "failed"
    # rerun with the fallback: the earlier "no face" failure is redone, not skipped
    summary = align_folder(raw, out, **_quiet(fallback="center", image_size=(112, 96)))
    record = load_report(out / "align_report.jsonl")["Coffee/cup.jpg"]
    assert record["status"] == "fallback" and record["reason"] == "no face" and summary["fallback"] == 1
    assert np.asarray(record["landmarks"]).shape == (5, 2)
    assert cv2.imread(str(out / "Coffee" / "cup.jpg")).shape == (112, 96, 3)


def test_min_images_is_off_by_default_and_reports_exclusions(lfw_dir, tmp_path):
    raw = tmp_path / "raw"
    _copy_faces(lfw_dir, raw, FACES + ["George_W_Bush/George_W_Bush_0011.jpg"])
    summary = align_folder(raw, tmp_path / "all", **_quiet())
    assert summary["aligned"] == 4 and summary["excluded"] == 0
    summary = align_folder(raw, tmp_path / "two_plus", **_quiet(min_images=2))
    report = load_report(tmp_path / "two_plus" / "align_report.jsonl")
    assert summary["aligned"] == 2 and summary["excluded"] == 2 and len(report) == 4
    assert report[FACES[0]]["status"] == "excluded" and "--min-images" in report[FACES[0]]["detail"]


def test_misplaced_files_and_name_clashes_are_reported(lfw_dir, tmp_path):
    raw = tmp_path / "raw"
    _copy_faces(lfw_dir, raw, FACES[:1])
    jpeg = (lfw_dir / "images" / FACES[0]).read_bytes()
    (raw / "loose.jpg").write_bytes(jpeg)
    (raw / "Aaron_Eckhart" / "Aaron_Eckhart_0001.png").write_bytes(jpeg)  # same stem -> same output name
    report_path = tmp_path / "out" / "align_report.jsonl"
    align_folder(raw, tmp_path / "out", **_quiet())
    report = load_report(report_path)
    assert report["loose.jpg"]["reason"] == "not in an identity folder"
    assert report["Aaron_Eckhart/Aaron_Eckhart_0001.png"]["reason"] == "output name clash"
    assert report["Aaron_Eckhart/Aaron_Eckhart_0001.jpg"]["status"] == "aligned"


def test_settings_are_validated_before_work(tmp_path):
    raw = tmp_path / "raw"
    (raw / "A").mkdir(parents=True)
    with pytest.raises(AlignError, match="not a directory"):
        align_folder(tmp_path / "missing", tmp_path / "out", **_quiet())
    with pytest.raises(AlignError, match="inside --input-dir"):
        align_folder(raw, raw / "aligned", **_quiet())
    with pytest.raises(AlignError, match="no files"):
        align_folder(raw, tmp_path / "out", **_quiet())
    with pytest.raises(AlignError, match="thresholds"):
        align_folder(raw, tmp_path / "out2", **_quiet(thresholds=(0.6, 0.7, 1.5)))
    with pytest.raises(ValueError, match="112"):
        align_folder(raw, tmp_path / "out3", **_quiet(image_size=(100, 100)))


def test_changed_settings_need_overwrite(lfw_dir, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _copy_faces(lfw_dir, raw, FACES[:1])
    align_folder(raw, out, **_quiet())
    with pytest.raises(AlignError, match="image_size"):
        align_folder(raw, out, **_quiet(image_size=(112, 112)))
    summary = align_folder(raw, out, **_quiet(image_size=(112, 112), overwrite=True))
    assert summary["processed_this_run"] == 1
    assert cv2.imread(str(out / FACES[0])).shape == (112, 112, 3)


def test_resume_repairs_what_a_kill_leaves(lfw_dir, tmp_path):
    """The states a kill -9 can leave: a truncated last report line, a stray temporary file, a crop
    written but not yet recorded. A rerun redoes exactly what is missing and ends consistent."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    _copy_faces(lfw_dir, raw)
    align_folder(raw, out, **_quiet())
    report_path = out / "align_report.jsonl"
    before = {name: (out / name).read_bytes() for name in FACES}
    lines = report_path.read_text().splitlines(keepends=True)
    # drop FACES[1]'s record (crop on disk, no record) and cut FACES[2]'s line in half
    kept = [l for l in lines if FACES[1] not in l and FACES[2] not in l]
    cut = next(l for l in lines if FACES[2] in l)
    report_path.write_text("".join(kept) + cut[: len(cut) // 2])
    (out / TMP_DIR_NAME).mkdir()
    (out / TMP_DIR_NAME / "123-half.jpg").write_bytes(b"\xff\xd8 half")
    summary = align_folder(raw, out, **_quiet())
    assert summary["processed_this_run"] == 2 and summary["skipped_already_done"] == 1
    report = load_report(report_path)
    assert sorted(report) == sorted(FACES) and all(r["status"] == "aligned" for r in report.values())
    assert len(report_path.read_text().splitlines()) == len(FACES)  # compacted: one record per file
    assert not (out / TMP_DIR_NAME).exists()
    assert {name: (out / name).read_bytes() for name in FACES} == before


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_same_outputs(lfw_dir, tmp_path):
    """A real kill -9 of the command part-way, then a rerun: same crops as an uninterrupted run, a
    complete report, no temporary or half-written file left."""
    raw = tmp_path / "raw"
    names = [f"{f.parent.name}/{f.name}" for f in sorted((lfw_dir / "images").glob("Ab*/*.jpg"))[:40]]
    assert len(names) == 40
    _copy_faces(lfw_dir, raw, names)
    # PNG: lossless, so crops compare pixel for pixel (the landmarks of runs with different TF thread
    # counts differ by float rounding, ~1e-5 px, which JPEG's quantisation could amplify to 2-3 levels)
    command = [sys.executable, "align/align_lfw.py", "--input-dir", str(raw), "--workers", "2",
               "--no-progress", "--contact-sheet", "0", "--format", "png"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    killed = tmp_path / "killed"
    process = subprocess.Popen(command + ["--output-dir", str(killed)], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report_path = killed / "align_report.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if report_path.exists() and report_path.read_text().count("\n") >= 3:
            break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    recorded = report_path.read_text().count("\n")
    assert 3 <= recorded < len(names), f"kill came too late or too early ({recorded} of {len(names)} records)"

    rerun = command[:command.index("--workers")] + ["--workers", "1"] + command[command.index("--workers") + 2:]
    finished = subprocess.run(rerun + ["--output-dir", str(killed)], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"files: {len(names)}" in finished.stdout
    clean = tmp_path / "clean"
    align_folder(raw, clean, **_quiet(image_format="png"))

    resumed_report, clean_report = load_report(report_path), load_report(clean / "align_report.jsonl")
    assert sorted(resumed_report) == sorted(clean_report) == sorted(names)
    assert len(report_path.read_text().splitlines()) == len(names)
    for name in names:
        assert resumed_report[name]["status"] == clean_report[name]["status"], name
        if resumed_report[name]["landmarks"]:
            np.testing.assert_allclose(resumed_report[name]["landmarks"], clean_report[name]["landmarks"], atol=0.01)
        if resumed_report[name]["output"]:
            a = cv2.imread(str(killed / resumed_report[name]["output"]))
            b = cv2.imread(str(clean / clean_report[name]["output"]))
            assert a is not None and a.shape == b.shape == (112, 96, 3), name
            assert np.abs(a.astype(int) - b).max() <= 1, name
    assert not (killed / TMP_DIR_NAME).exists()
    leftovers = [p for p in killed.rglob("*") if p.is_file() and p.suffix not in (".png", ".json", ".jsonl")]
    assert not leftovers


def test_command_line_help_as_script_and_module():
    for command in (["align/align_lfw.py", "--help"], ["-m", "align.align_lfw", "--help"]):
        result = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        assert "--input-dir" in result.stdout and "--fallback" in result.stdout


def test_command_line_fatal_error_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "align/align_lfw.py", "--input-dir", str(tmp_path / "nope"),
                             "--output-dir", str(tmp_path / "out")], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and "not a directory" in result.stderr
