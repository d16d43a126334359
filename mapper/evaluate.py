"""One cross-validation fold: train a model on the fold's training points, predict its test points.

    cv_fold(region, FoldSpec(task, model, split, fold), samples=..., folds=..., stacks=...,
            out=..., pretrained=None)

Models, all on the rows given by :func:`mapper.splits.train_test_indices` (identical folds, from
the folds table of the samples, :mod:`mapper.folds`):

- ``rf``: scikit-learn's RandomForestClassifier on the stack's values at each point
  (:func:`mapper.normalise.point_features`: 19, or 20 with ``model.aspect: components``;
  ``evaluation.rf_trees``, ``rf_max_depth``, ``rf_min_samples_split``; ``random_state`` =
  ``training.seed``; grown on the job's threads, queried on one), missing values imputed with
  the training median of the band.
- ``miso``: fine-tuned on the fold from the pretrained checkpoint (``evaluation.epochs``, or
  ``training.finetune_epochs`` when null), then queried at each test point in a crop centred on
  it (:func:`mapper.dataset.predict_points`).
- ``miso_nopretrain``: the same without the pretrained checkpoint (SatlasPretrain or random
  start): the ablation.

Output: a Parquet table, one row per test point: ``obs_id, x, y, y_true, p_<class>...,
y_pred`` (the task's classes, :mod:`mapper.tasks`: ``absent, present`` for a binary task such as
NSP; ``y_pred`` the most probable class, i.e. a 0.5 threshold for a binary task), plus ``task,
model, split, fold, n_train``. A fold whose training set is empty (a spatial holdout wider than
the region) keeps its test rows with NaN probabilities and ``y_pred`` -1, and says so in the
metadata and the log. The metadata also holds the training points per class (``train_counts``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mapper.bands import STACK_BANDS
from mapper.config import Region
from mapper.errors import ConfigError, InputError, TrainingError
from mapper.experiment import MODELS
from mapper.files import atomic_path
from mapper.folds import samples_with_folds
from mapper.normalise import point_features, valid_pixels
from mapper.splits import check_split, train_test_indices
from mapper.tasks import Task, get_task
from mapper.threads import job_threads
from mapper.training_settings import finetune_epochs

logger = logging.getLogger(__name__)

METADATA_KEY = b"mapper"


@dataclass(frozen=True)
class FoldSpec:
    """One cross-validation job: ``model`` trained for ``task`` on fold ``fold`` of ``split``.

    Checked when made: a one-line ConfigError names an unknown model, split or task."""

    task: str
    model: str
    split: str
    fold: int

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        check_split(self.split)
        get_task(self.task)


# -- models ---------------------------------------------------------------------------------------


def random_forest_probabilities(
    features: np.ndarray, labels: np.ndarray, test: np.ndarray, n_classes: int,
    evaluation: dict[str, Any], seed: int,
) -> np.ndarray:
    """RF class probabilities [n_test, n_classes] (classes absent from training get 0)."""
    from sklearn.ensemble import RandomForestClassifier

    median = np.nanmedian(np.where(np.isfinite(features), features, np.nan), axis=0)
    median = np.where(np.isfinite(median), median, 0.0)

    def impute(x: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(x), x, median[None, :])

    rf = RandomForestClassifier(
        n_estimators=int(evaluation["rf_trees"]),
        max_depth=evaluation["rf_max_depth"],
        min_samples_split=int(evaluation["rf_min_samples_split"]),
        random_state=seed,
        n_jobs=job_threads() or os.cpu_count() or 1,  # by hand: every CPU
    )
    rf.fit(impute(features), labels)
    # the trees are the same at any n_jobs (each draws from its own seed), but predict_proba
    # sums them in the order the threads finish: one thread keeps the sum, and the fold, exact
    rf.set_params(n_jobs=1)
    proba = np.zeros((len(test), n_classes))
    proba[:, rf.classes_.astype(np.int64)] = rf.predict_proba(impute(test))
    return proba


def miso_probabilities(
    region: Region, task: Task, table: pd.DataFrame, train: np.ndarray, test: np.ndarray,
    stacks: list[str | Path], pretrained: str | Path | None, device: str | None = None,
) -> np.ndarray:
    """Fine-tune MiSo on the training rows (on ``device``: default CUDA when present), then class
    probabilities at the test rows."""
    import torch

    from mapper.dataset import predict_points
    from mapper.train import finetune
    from mapper.windows import StackReader, stacks_by_tile

    ev, training = region.settings["evaluation"], region.settings["training"]
    epochs = ev["epochs"] or finetune_epochs(training, task.name)
    result = finetune(region, task.name, table, stacks, None, pretrained, train, int(epochs),
                      device=device)
    with StackReader(stacks_by_tile(stacks), region.lattice) as reader:
        logits = predict_points(
            result.model, result.normaliser, reader, table[["x", "y"]].to_numpy()[test],
            int(training["crop_px"]), batch_size=max(int(training["batch_size"]), 32),
        )
    proba = task.probabilities(torch.from_numpy(logits).double()).numpy()
    return np.concatenate([1.0 - proba, proba], axis=1) if task.binary else proba


# -- one fold -------------------------------------------------------------------------------------


def cv_fold(
    region: Region,
    spec: FoldSpec,
    *,
    samples: str | Path,
    folds: str | Path,
    stacks: list[str | Path],
    out: str | Path,
    pretrained: str | Path | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Train the model of ``spec`` on its fold of the folds table ``folds`` (drawn from the
    samples table ``samples``) and write its test predictions (module doc); ``device``: MiSo's
    torch device (default: CUDA when present, else the CPU)."""
    task, model, split, fold = get_task(spec.task), spec.model, spec.split, spec.fold
    classes = list(task.classes)
    if model == "miso" and pretrained is None and region.settings["training"]["pretrain"]:
        raise ConfigError(
            f"model miso needs --pretrained (training.pretrain is on in region {region.name}); "
            "pass the pretrained checkpoint, or use miso_nopretrain"
        )
    if model != "rf" and not stacks:
        raise ConfigError(f"model {model} reads the region's stacks (its crops); pass them")
    if model != "miso" and pretrained is not None:
        logger.warning("model %s ignores the pretrained checkpoint %s", model, pretrained)
        pretrained = None
    table = samples_with_folds(region, samples, folds)
    train, test = train_test_indices(table, split, fold, task.name)
    labels = table[task.label_column].to_numpy()
    y_true = np.asarray(labels[test], dtype=np.int64)
    seed = int(region.settings["training"]["seed"])
    note = ""
    if len(test) == 0:
        proba = np.zeros((0, len(classes)))
        note = "no test point"
    elif len(train) == 0:
        proba = np.full((len(test), len(classes)), np.nan)
        note = "no training point outside the holdout distance of the test points"
        logger.warning("%s fold %d (%s): %s; predictions left empty", split, fold, task.name,
                       note)
    elif model == "rf":
        feats = point_features(table[STACK_BANDS].to_numpy(np.float64),
                               region.settings["model"]["aspect"])
        proba = random_forest_probabilities(
            feats[train], np.asarray(labels[train], dtype=np.int64), feats[test], len(classes),
            region.settings["evaluation"], seed,
        )
    else:
        _refuse_test_points_without_data(region, table, test, stacks, samples,
                                         f"{model} on {task.name}, {split} fold {fold}")
        proba = miso_probabilities(region, task, table, train, test, stacks,
                                   pretrained if model == "miso" else None, device)
        bad = int((~np.isfinite(proba).all(axis=1)).sum())
        if bad:  # never an empty holdout: the fold's fine-tuning diverged
            raise TrainingError(
                f"{model} on {task.name}, {split} fold {fold}: {bad} of {len(test)} test points "
                "have non-finite probabilities (the fine-tuning diverged; see its loss in the "
                f"log); lower training.lr_max (or training.grad_clip) in {region.path}"
            )
    y_pred = np.where(np.isfinite(proba).all(axis=1) & (len(classes) > 0),
                      np.nan_to_num(proba, nan=-1.0).argmax(axis=1), -1)
    result = pd.DataFrame({
        "obs_id": table["obs_id"].to_numpy()[test].astype(str),
        "x": table["x"].to_numpy()[test],
        "y": table["y"].to_numpy()[test],
        "y_true": y_true,
    })
    for i, col in enumerate(task.probability_columns):
        result[col] = proba[:, i]
    result["y_pred"] = y_pred.astype(np.int64)
    result["task"], result["model"], result["split"] = task.name, model, split
    result["fold"], result["n_train"] = int(fold), len(train)
    train_counts = np.bincount(np.asarray(labels[train], dtype=np.int64), minlength=len(classes))
    from mapper.samples import samples_metadata

    synthetic = region.synthetic or bool(samples_metadata(samples).get("synthetic"))
    info = {"region": region.name, "synthetic": synthetic, "task": task.name, "model": model,
            "split": split, "fold": int(fold), "n_train": len(train), "n_test": len(test),
            "train_counts": train_counts.tolist(),
            "classes": classes, "note": note,
            "pretrained": str(pretrained) if pretrained else None}
    _write(result, Path(out), info)
    if len(test) and len(train):
        acc = float((y_pred == y_true).mean())
        logger.info("%s %s %s fold %d: %d training, %d test points, accuracy %.3f", task.name,
                    model, split, fold, len(train), len(test), acc)
    return result


def _refuse_test_points_without_data(region: Region, table: pd.DataFrame, test: np.ndarray,
                                     stacks: list[str | Path], samples: str | Path,
                                     what: str) -> None:
    """One InputError if a test point's pixel is not valid in the stacks now
    (:func:`mapper.normalise.valid`): the samples keep only valid points, so a tile was stacked
    again since (the folds read stacks and samples as ancient), and MiSo would be scored on a crop
    of zeros at that point, where the map holds nodata."""
    from mapper.samples import sample_stacks
    from mapper.windows import StackReader, stacks_by_tile

    rows, cols = region.lattice.pixels_of(table["x"].to_numpy()[test], table["y"].to_numpy()[test])
    with StackReader(stacks_by_tile(stacks), region.lattice) as reader:
        ok = valid_pixels(sample_stacks(reader, rows, cols))
    if not ok.all():
        ids = table["obs_id"].to_numpy()[test][~ok]
        raise InputError(
            f"{samples}: {what}: {int((~ok).sum())} of {len(test)} test points (obs_id "
            f"{', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''}) lie on pixels the "
            "stacks now leave without data (a tile stacked again since the samples were made); "
            f"make the samples again (snakemake --cores 1 -f {samples}), then run the same "
            "target again"
        )


def _write(df: pd.DataFrame, out: Path, info: dict[str, Any]) -> None:
    arrow = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(info, sort_keys=True).encode()
    with atomic_path(out) as tmp:
        pq.write_table(arrow.replace_schema_metadata(meta), tmp)


def read_fold(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A fold's predictions and metadata (written by :func:`cv_fold`)."""
    path = Path(path)
    try:
        df = pd.read_parquet(path)
        meta = pq.read_schema(path).metadata or {}
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: not a readable fold table ({exc}); rerun its cv-fold") from None
    if METADATA_KEY not in meta:
        raise InputError(f"{path}: not written by `mapper cv-fold` (no metadata); rerun it")
    return df, json.loads(meta[METADATA_KEY])
