"""The starter model: a MobileFaceNet made by this project's own LFW View 1 recipe, shipped in ``starter/``.

    starter_model_path()   # REPO/starter/mobilefacenet_lfw_devtrain.keras (FACEID_STARTER_MODEL overrides it)

It was trained on LFW's DevTrain identities only (starter/README.md says how), so pairsDevTest stays a
clean test of it; ``starter/report.json`` is its evaluate.py report on pairsDevTest, thresholds included.
``--model starter`` (verify.py, identify.py, evaluate.py) and ``train.py --init-from starter`` name it;
verify.py and identify.py fall back to it when no --model is given and no run has been trained.
Standard library only: resolving the word costs no import.
"""

from __future__ import annotations

import os
from pathlib import Path

STARTER = "starter"   # the word that names it on the command line
STARTER_DIR = Path(__file__).resolve().parents[1] / "starter"
STARTER_FILE = "mobilefacenet_lfw_devtrain.keras"
STARTER_REPORT = "report.json"   # evaluate.py's report on pairsDevTest, beside the model
STARTER_ENV = "FACEID_STARTER_MODEL"   # another file to use as the starter model (tests, a moved install)


class StarterMissing(FileNotFoundError):
    """The starter model file is not there: the message says where it was looked for and what to do."""


def starter_model_path(must_exist: bool = True) -> Path:
    """The starter model's .keras file: $FACEID_STARTER_MODEL, else REPO/starter/mobilefacenet_lfw_devtrain.keras.

    Raises StarterMissing (one line, the path and the fix) when it is absent and ``must_exist``.
    """
    path = Path(os.environ[STARTER_ENV]) if os.environ.get(STARTER_ENV) else STARTER_DIR / STARTER_FILE
    if must_exist and not path.is_file():
        raise StarterMissing(f"the starter model is not installed: {path} is missing (it ships in the repository's "
                             f"starter/ folder, see docs/using-a-model.md; or set {STARTER_ENV}); "
                             f"pass --model RUN_DIR or a .keras file instead")
    return path


def is_starter(model) -> bool:
    """True for the word ``starter`` (and for the starter file itself)."""
    if model is None:
        return False
    if str(model) == STARTER:
        return True
    path = starter_model_path(must_exist=False)
    try:
        return path.is_file() and Path(model).resolve() == path.resolve()
    except (OSError, ValueError):
        return False


def starter_report_path(model_path) -> Path:
    """Where the shipped evaluation report of a starter model lies: report.json beside its file."""
    return Path(model_path).parent / STARTER_REPORT
