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
