"""The training section as the training jobs read it: a task's fine-tuning epochs, and the
section split into the settings files of rule ``region_settings`` (workflow/rules/settings.smk)
so that one task's epochs retrain that task alone. The section is validated, its per-task epochs
checked, by :mod:`mapper.config`."""

from __future__ import annotations

from typing import Any

from mapper.tasks import TASKS


def finetune_epochs(training: dict[str, Any], task: str) -> int:
    """``training.finetune_epochs`` for ``task``: one number for every task, or a number per task
    (checked to name every task when the region is loaded)."""
    value = training["finetune_epochs"]
    return int(value[task]) if isinstance(value, dict) else int(value)


def training_sections(training: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The validated ``training`` section as the settings files the training jobs take (rule
    ``region_settings``): ``training``, what pretraining, fine-tuning and the folds all read
    (every key but the fine-tuning epochs), and ``finetune_<task>``, the epochs of one task's
    fine-tuning. So a task's epochs, one number or per task, retrain that task alone."""
    shared = {k: v for k, v in training.items() if k != "finetune_epochs"}
    return {"training": shared,
            **{f"finetune_{task}": {"epochs": finetune_epochs(training, task)} for task in TASKS}}
