"""Margin-softmax training: configuration, data sources, the loop, validation and export.

``train.py`` parses flags and calls ``resolve_config`` and ``run_training``; nothing else.
Names are imported on first use (PEP 562), so ``import training.config`` (what ``train.py --help``
needs) does not load TensorFlow.
"""

from fileio.quiet_tensorflow import quiet_tensorflow_for_api

quiet_tensorflow_for_api()   # before any TensorFlow import below: its C++ start-up lines stay out of the terminal

import importlib

_HOMES = {
    "REFERENCE_LR_SCHEDULE": "training.config", "SYNTHETIC_DEFAULTS": "training.config",
    "TrainConfig": "training.config", "parse_option_items": "training.config", "resolve_config": "training.config",
    "reference_lr": "training.config",
    "load_run_config": "training.run_dir", "new_run_dir": "training.run_dir", "run_to_resume": "training.run_dir",
    "save_run_config": "training.run_dir", "RunWriteError": "training.run_dir",
    "FaceLRSchedule": "training.schedules", "build_lr_schedule": "training.schedules",
    "TrainingInterrupted": "training.preemption",
    "TrainingCollapsed": "training.guard", "TrainingDiverged": "training.guard",
    "run_training": "training.trainer",
    "resolve_auto_settings": "training.hardware",
}

__all__ = sorted(_HOMES)


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'training' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
