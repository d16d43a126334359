"""The training and evaluation sections as their jobs read them: a task's fine-tuning epochs, the
training section split into the settings files of rule ``region_settings``
(workflow/rules/settings.smk) so that one task's epochs retrain that task alone, what the folds
are drawn with, and what each model's cross-validation folds read, so that a setting of one
model reruns that model's folds alone. The sections are validated, the per-task epochs checked,
by :mod:`mapper.config`. A light module: the workflow imports it when it parses."""

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
    ``region_settings``): ``training``, what pretraining and fine-tuning read (every key but the
    fine-tuning epochs; MiSo's folds read theirs in ``cv_miso``, :func:`cv_sections`), and
    ``finetune_<task>``, the epochs of one task's fine-tuning. So a task's epochs, one number or
    per task, retrain that task alone."""
    shared = {k: v for k, v in training.items() if k != "finetune_epochs"}
    return {"training": shared,
            **{f"finetune_{task}": {"epochs": finetune_epochs(training, task)} for task in TASKS}}


def fold_draw(settings: dict[str, Any]) -> dict[str, int]:
    """What the cross-validation folds are drawn with beside the points (:mod:`mapper.folds`):
    ``evaluation.folds`` and ``training.seed`` of a region's validated settings."""
    return {"folds": int(settings["evaluation"]["folds"]),
            "seed": int(settings["training"]["seed"])}


PRETRAINING_ONLY = ("pretrain_epochs", "pretrain_lr", "pretrain_crops")
"""The training keys only the pretraining job reads: a MiSo fold reads the pretrained
checkpoint (its own input), or none (the ablation without pretraining)."""


def cv_sections(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the folds of each model read beside the samples, the folds and (MiSo) the model
    file and the pretrained checkpoint, as the settings files of rule ``region_settings``:
    ``cv_rf``, the forest's settings, the aspect's form (:func:`mapper.normalise.point_features`)
    and its random state; ``cv_miso``, the folds' fine-tuning epochs (null: the task's
    ``finetune_epochs``, which the folds then take from the task's file) and the training
    section without the keys of pretraining alone (so a pretraining setting reruns the folds
    that start from the pretrained checkpoint, which it remakes, and not the ablation's). Which
    folds exist (``folds``, ``splits``, ``ablation_no_pretrain``) is the workflow's plan, not a
    fold's input."""
    ev = settings["evaluation"]
    skip = ("finetune_epochs", *PRETRAINING_ONLY)
    return {
        "cv_rf": {"rf_trees": ev["rf_trees"], "rf_max_depth": ev["rf_max_depth"],
                  "rf_min_samples_split": ev["rf_min_samples_split"],
                  "aspect": settings["model"]["aspect"], "seed": settings["training"]["seed"]},
        "cv_miso": {"epochs": ev["epochs"],
                    "training": {k: v for k, v in settings["training"].items()
                                 if k not in skip}},
    }
