"""Margin-softmax training: configuration, data sources, the loop, validation and export.

``train.py`` parses flags and calls ``resolve_config`` and ``run_training``; nothing else.
"""

from training.config import (REFERENCE_LR_SCHEDULE, SYNTHETIC_DEFAULTS, TrainConfig, parse_option_items,
                             resolve_config)
from training.run_dir import load_run_config, new_run_dir, run_to_resume, save_run_config
from training.schedules import FaceLRSchedule, build_lr_schedule
from training.guard import TrainingCollapsed, TrainingDiverged
from training.trainer import run_training

__all__ = [
    "REFERENCE_LR_SCHEDULE", "SYNTHETIC_DEFAULTS", "TrainConfig", "parse_option_items", "resolve_config", "load_run_config",
    "new_run_dir", "run_to_resume", "save_run_config", "FaceLRSchedule", "build_lr_schedule",
    "TrainingCollapsed", "TrainingDiverged", "run_training",
]
