"""Shared test fixtures.

Real-data tests use ``lfw_dir``: it skips (with the reason) when ../shared/data/lfw is absent,
except under CI (CI=true), where the data must be there and its absence is a failure.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
LFW_DIR = Path(os.environ.get("LFW_DIR", REPO_ROOT.parent / "shared" / "data" / "lfw"))


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    """Path to the original LFW (images/ and the protocol files)."""
    if not (LFW_DIR / "images").is_dir() or not (LFW_DIR / "pairs.txt").is_file():
        reason = f"real LFW data not found at {LFW_DIR} (set LFW_DIR or put shared/ beside the checkout)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; under CI it must be present")
        pytest.skip(reason)
    return LFW_DIR


# Six LFW people with three photos each: enough identities for held-out pairs and a 10-fold .bin.
LFW_FACE_PEOPLE = ("Ariel_Sharon", "Colin_Powell", "Donald_Rumsfeld", "George_W_Bush", "Gerhard_Schroeder", "Tony_Blair")


@pytest.fixture(scope="session")
def lfw_faces_112(lfw_dir, tmp_path_factory):
    """Real faces as insightface packs hold them: {person: [JPEG bytes of a 112x112 aligned crop]}, 6 x 3.

    Aligned here (MTCNN + our 5-point template at 112x112, a few seconds) from the original photos.
    """
    import shutil

    from align import align_folder

    root = tmp_path_factory.mktemp("lfw_faces_112")
    for name in LFW_FACE_PEOPLE:
        (root / "raw" / name).mkdir(parents=True)
        for k in range(1, 4):
            shutil.copy(lfw_dir / "images" / name / f"{name}_{k:04d}.jpg", root / "raw" / name)
    summary = align_folder(root / "raw", root / "aligned", image_size=(112, 112), workers=1, fallback="center",
                           progress=False, contact_sheet_size=0, log=lambda *_: None)
    assert summary["aligned"] + summary["fallback"] == 3 * len(LFW_FACE_PEOPLE)
    return {name: [path.read_bytes() for path in sorted((root / "aligned" / name).glob("*.jpg"))]
            for name in LFW_FACE_PEOPLE}
