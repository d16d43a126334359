"""Contrastive pretraining and supervised fine-tuning of MiSo, resumable and deterministic.

    pretrain(region, samples, stacks, out)                      -> out (task "pretrain")
    finetune(region, task, samples, stacks, out, pretrained)    -> TrainResult (+ out written)

Both run the same loop (:mod:`mapper.training_loop`) over :class:`mapper.dataset.CropDataset`
batches: AdamW (weight decay),
a learning rate set per iteration by :class:`mapper.schedule.Schedule` (warm-up from
``warmup_lr`` to the peak, cosine down to the floor), gradient clipping at ``grad_clip``
(total norm), and the reference's task losses (:func:`mapper.losses.task_loss`). Pretraining
peaks at ``pretrain_lr`` and decays to ``pretrain_lr * lr_min / lr_max``; fine-tuning uses
``lr_max`` and ``lr_min``.

Fine-tuning starts from the pretrained checkpoint (every tensor except the two prediction
heads, whose widths depend on the task; its normalisation is kept), or, without one, from
SatlasPretrain weights for the satellite encoder (``model.satlas_weights``) or random weights,
with a normalisation fitted on pixels of the training crops (Sentinel-2 standardised unless the
satellite encoder starts from SatlasPretrain weights; see :mod:`mapper.normalise`).

Resuming. With an output path, the full state (model, optimiser, step of the schedule, epoch,
loss history, normalisation) is saved atomically to ``<out>.partial`` after every epoch, with a
fingerprint of the run (settings, task, training rows, their positions and labels, the stacks'
names, sizes and times, the mapped area, starting checkpoint or weights:
:mod:`mapper.training_resume`). A run finding a
partial with the same fingerprint continues after its last epoch; a partial of another run is
ignored and overwritten. The final checkpoint (:func:`mapper.models.checkpoint.save_checkpoint`:
config, bands, normalisation, classes, task, and the loss history in ``extra``) replaces it.

Determinism. Model initialisation draws from ``torch.manual_seed(seed)``; every epoch reseeds
torch (dropout, drop-path) and numpy (crops, query points) from ``(seed, epoch)``, so the state
at an epoch boundary depends only on the epoch, and a resumed run equals an uninterrupted one.
Training runs with ``torch.use_deterministic_algorithms(True)`` in one process (no loader
workers). Two runs with the same seed, thread count and machine write identical checkpoint
files (the checkpoint holds no time stamps; ``torch.save`` is byte-stable). Results may differ
across thread counts or CPU types (floating-point summation order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mapper.bands import input_bands
from mapper.config import Region
from mapper.dataset import CropDataset, CropSettings, PointSet
from mapper.devices import choose_device
from mapper.errors import CheckpointError, InputError, first_few
from mapper.files import file_sha256
from mapper.models.checkpoint import load_checkpoint, save_checkpoint
from mapper.models.config import ModelConfig
from mapper.models.miso import MiSo, build_model
from mapper.normalise import Normaliser, s2_scaling_for
from mapper.samples import observed_in, read_samples, region_samples_metadata
from mapper.tasks import PRETRAIN, Task, get_task
from mapper.training_loop import deterministic, fit, optimisation
from mapper.training_resume import data_digest, inputs_digest
from mapper.training_resume import fingerprint as run_fingerprint
from mapper.training_settings import training_sections
from mapper.windows import StackReader, stacks_by_tile

logger = logging.getLogger(__name__)

HEADS = ("head.", "geo_head.")
"""State-dict prefixes of the task heads: not carried from a pretrained checkpoint."""

NORMALISER_CROPS = 64
"""The fewest crops whose pixels fit the normalisation when no pretrained checkpoint provides
one; a region of more than 64 x :data:`NORMALISER_KM2` adds one per that much mapped area."""
NORMALISER_KM2 = 25.0
"""Mapped area per normaliser crop beyond the first 64: a 5 km square, the scale at which the
covariates vary (the 2 km climate grids, ridges and valleys), so that the clipping percentiles of
a large region rest on its whole range of climate and terrain, not on 64 places."""
NORMALISER_MAX_CROPS = 4096
NORMALISER_PIXELS = 64 * 256 * 256
"""Pixels read whole at most (64 crops of the reference's 256 px, 0.3 GB of float32 x 19 bands);
more crops give each a random share of that many."""


def normaliser_crops(area_km2: float) -> int:
    """Crops the normalisation is fitted on for a mapped area of ``area_km2``: 64 up to
    1600 km^2 (the demo's 420 km^2), then one per 25 km^2, at most 4096 (Alaska's)."""
    return int(min(NORMALISER_MAX_CROPS,
                   max(NORMALISER_CROPS, math.ceil(area_km2 / NORMALISER_KM2))))


@dataclass
class TrainResult:
    """A trained model, the normalisation it expects, and the per-epoch loss history."""

    model: MiSo
    normaliser: Normaliser
    history: list[dict[str, float]] = field(default_factory=list)


# -- helpers --------------------------------------------------------------------------------------


def model_config(region: Region) -> ModelConfig:
    """The region's model config; SatlasPretrain weights given by URL are read from where the
    workflow downloads them (:func:`mapper.sources.weights.weights_path`)."""
    from mapper.sources.weights import weights_path

    m = region.settings["model"]
    cfg = ModelConfig.named(m["size"], satlas_weights=weights_path(m["satlas_weights"]))
    if m["pixel_query"]:  # with the stage-1 query's widths (README "The model: ...")
        cfg = dataclasses.replace(cfg, pixel_query=cfg.query_hidden[0])
    return cfg.with_aspect(m["aspect"])


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy through JSON: pickling shares repeated objects (e.g. dict keys) by identity,
    so the same values built in different ways (a resumed history) would pickle differently."""
    return json.loads(json.dumps(data, sort_keys=True))


def _points(table: pd.DataFrame, task: str, rows: np.ndarray) -> PointSet:
    spec = get_task(task)
    labels = table[spec.label_column].to_numpy()[rows]
    return PointSet(
        xy=table[["x", "y"]].to_numpy(np.float64)[rows],
        rowcol=table[["row", "col"]].to_numpy(np.int64)[rows],
        labels=np.asarray(labels, dtype=spec.label_dtype),
    )


def _fit_normaliser(dataset: CropDataset, cfg: ModelConfig, seed: int,
                    region: Region) -> Normaliser:
    """The normalisation fitted on pixels of crops drawn from their own seeded stream (the
    dataset's ``"normalise"`` stream, not a training epoch's; how many: :func:`normaliser_crops`
    of the mapped area); Sentinel-2 scaled for the encoder's start
    (SatlasPretrain's fixed scaling for its weights, else standardised; see
    :mod:`mapper.normalise`)."""
    n_crops = normaliser_crops(dataset.boundary.area / 1e6)
    pixels = dataset.normaliser_pixels(n_crops, NORMALISER_PIXELS, seed)
    try:
        normaliser = Normaliser.fit(pixels, seed=seed,
                                    s2_scaling=s2_scaling_for(cfg.satlas_weights),
                                    aspect=cfg.aspect)
    except InputError as exc:  # say where the crops were drawn
        raise InputError(f"region {region.name}: {exc} (read in {n_crops} crops drawn in its "
                         "mapped area)") from None
    logger.info("normalisation fitted on %d valid pixels of up to %d crops", normaliser.n_pixels,
                n_crops)
    return normaliser


def _open_reader(region: Region, stacks: list[str | Path]) -> StackReader:
    """The reader of the given stacks, which must hold every stacked tile's, mapped or context
    (:meth:`mapper.config.Region.stacked_tiles`), as prediction's must: a tile not given reads as
    nodata, so its crops (and the labelled points in it) would train on blank input, and a crop
    at the area's edge would see nodata where the sources have data (what prediction's crops of
    the same pixels see instead)."""
    given = stacks_by_tile(stacks)
    missing = region.missing_tiles(given, stacked=True)
    if missing:
        raise InputError(
            f"region {region.name}: no stack given for its stacked tiles {first_few(missing)} "
            "(mapped tiles and the context tiles within the crops' reach); pass every stack of "
            f"the region (the workflow passes them all), e.g. results/{region.name}/stack/*.tif"
        )
    return StackReader(given, region.lattice)


def _table(samples: str | Path | pd.DataFrame, region: Region) -> pd.DataFrame:
    if isinstance(samples, pd.DataFrame):
        return samples
    region_samples_metadata(samples, region.name)
    return read_samples(samples)


# -- pretraining ----------------------------------------------------------------------------------


def _shared(training: dict[str, Any]) -> dict[str, Any]:
    """What a run's resume fingerprint takes of the training section: every key but the tasks'
    fine-tuning epochs (the run's own are in it apart), so that a partial of a pretraining, or
    of one task's fine-tuning, still resumes after another task's epochs changed (the workflow
    reruns neither for it: :func:`mapper.training_settings.training_sections`)."""
    return training_sections(training)["training"]


def pretrain(
    region: Region,
    samples: str | Path | pd.DataFrame,
    stacks: list[str | Path],
    out: str | Path,
    epochs: int | None = None,
    device: str | None = None,
) -> Path:
    """Contrastive pretraining on ``training.pretrain_crops`` random crops per epoch.

    Losses: InfoNCE(sat, cov) + InfoNCE(visual, geo) at every query point of unlabelled crops
    in the region. The normalisation is fitted on pixels of crops of its own seeded stream.
    ``samples`` is checked to be of this region (no label is used). ``device``: a torch device
    name (default: CUDA when present, else the CPU; :func:`mapper.devices.choose_device`).
    """
    out = Path(out)
    training = region.settings["training"]
    table = _table(samples, region)
    if len(table) == 0:
        raise InputError(f"{samples}: empty samples table; check the observations")
    settings = CropSettings.from_training(training)
    opt = optimisation(training, pretraining=True, epochs=epochs)
    seed = settings.seed
    cfg = model_config(region)
    where = choose_device(device)
    with deterministic(where), _open_reader(region, stacks) as reader:
        dataset = CropDataset(reader, None, settings, region.area(), PRETRAIN,
                              unlabelled_crops=int(training["pretrain_crops"]))
        normaliser = _fit_normaliser(dataset, cfg, seed, region)
        dataset.normaliser = normaliser
        torch.manual_seed(seed)
        model = build_model(cfg, 1).to(where)
        fingerprint = run_fingerprint({"stage": "pretrain", "training": _shared(training),
                                       "model": cfg.to_dict(), "epochs": opt.epochs,
                                       "region": region.name, "data": data_digest(stacks),
                                       **inputs_digest(region, cfg)})
        partial = out.with_name(out.name + ".partial")
        history = fit(model, dataset, PRETRAIN, "pretrain", opt, seed, partial, fingerprint,
                       where)
        normaliser = dataset.normaliser
    save_checkpoint(out, model, task=PRETRAIN, bands=input_bands(cfg.aspect),
                    normalisation=_plain(normaliser.to_dict()), classes=[],
                    extra=_plain({"history": history, "training": training, "epochs": opt.epochs,
                                  "region": region.name, "synthetic": region.synthetic}))
    partial.unlink(missing_ok=True)
    logger.info("wrote %s", out)
    return out


# -- fine-tuning ----------------------------------------------------------------------------------


def _start_model(cfg: ModelConfig, task: Task, pretrained: str | Path | None,
                 seed: int) -> tuple[MiSo, Normaliser | None]:
    """The model fine-tuning starts from, and the pretrained normalisation (None: fit one)."""
    torch.manual_seed(seed)
    if pretrained is None:
        return build_model(cfg, task.n_outputs), None
    source, meta = load_checkpoint(pretrained, expect_task=PRETRAIN, expect_size=cfg.name)
    if source.cfg.aspect != cfg.aspect:
        raise CheckpointError(
            f"{pretrained}: pretrained with the aspect as {source.cfg.aspect}, but model.aspect "
            f"is {cfg.aspect}; pretrain again with the region's settings"
        )
    differ = [f"{f.name} {getattr(source.cfg, f.name)!r} (now {getattr(cfg, f.name)!r})"
              for f in dataclasses.fields(cfg)
              if f.compare and getattr(source.cfg, f.name) != getattr(cfg, f.name)]
    if differ:
        raise CheckpointError(
            f"{pretrained}: pretrained with other model settings: {'; '.join(differ)}; pretrain "
            "again with the region's settings"
        )
    model = MiSo(cfg, task.n_outputs)
    carried = {k: v for k, v in source.state_dict().items() if not k.startswith(HEADS)}
    try:
        missing, unexpected = model.load_state_dict(carried, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(
            f"{pretrained}: tensors do not fit a {cfg.name} model ({reason}); retrain"
        ) from None
    if unexpected or any(not k.startswith(HEADS) for k in missing):
        raise CheckpointError(f"{pretrained}: tensors do not fit a {cfg.name} model; retrain")
    return model, Normaliser.from_dict(meta.normalisation, pretrained)


def finetune(
    region: Region,
    task: str,
    samples: str | Path | pd.DataFrame,
    stacks: list[str | Path],
    out: str | Path | None = None,
    pretrained: str | Path | None = None,
    train_idx: np.ndarray | None = None,
    epochs: int | None = None,
    device: str | None = None,
) -> TrainResult:
    """Supervised fine-tuning for ``task`` (a name in :data:`mapper.tasks.TASKS`) on the samples'
    labelled points.

    ``train_idx``: row positions of the training points (default: every point labelled for the
    task; cross-validation passes a fold's training rows). ``epochs``: default
    ``training.finetune_epochs`` (:func:`finetune_epochs`). With ``out``, writes the checkpoint
    (resumable, module doc); without, trains in memory only. ``device``: as :func:`pretrain`'s;
    the model returned is on it.
    """
    spec = get_task(task)
    training = region.settings["training"]
    table = _table(samples, region)
    label = table[spec.label_column]
    rows = np.flatnonzero(label.notna().to_numpy()) if train_idx is None else np.asarray(
        train_idx, dtype=np.int64)
    if len(rows) == 0:
        raise InputError(f"{samples}: no training point has a {spec.label_column} label"
                         f"{observed_in(samples)}; add {task} labels to the observation table "
                         f"and run the same target again, or make only the other tasks' maps")
    if label.iloc[rows].isna().any():
        raise InputError(f"{samples}: training rows without a {task} label were passed")
    settings = CropSettings.from_training(training)
    opt = optimisation(training, pretraining=False, epochs=epochs, task=task)
    seed = settings.seed
    cfg = model_config(region)
    model, normaliser = _start_model(cfg, spec, pretrained, seed)
    where = choose_device(device)
    model = model.to(where)
    points = _points(table, task, rows)
    with deterministic(where), _open_reader(region, stacks) as reader:
        dataset = CropDataset(reader, normaliser, settings, region.area(), task, points)
        if normaliser is None:
            normaliser = _fit_normaliser(dataset, cfg, seed, region)
            dataset.normaliser = normaliser
        partial = None
        fingerprint = run_fingerprint({
            "stage": "finetune", "task": task, "training": _shared(training),
            "model": cfg.to_dict(),
            "epochs": opt.epochs, "rows": hashlib.sha256(rows.tobytes()).hexdigest(),
            "obs": hashlib.sha256("\n".join(table["obs_id"].astype(str)).encode()).hexdigest(),
            "pretrained": file_sha256(pretrained) if pretrained else None,
            "data": data_digest(stacks, points), **inputs_digest(region, cfg),
        })
        if out is not None:
            out = Path(out)
            partial = out.with_name(out.name + ".partial")
        logger.info("fine-tuning %s on %d points (%s), %d epochs, from %s", task, len(rows),
                    _label_counts(points, spec), opt.epochs, pretrained or
                    (cfg.satlas_weights or "random weights"))
        history = fit(model, dataset, task, "finetune", opt, seed, partial, fingerprint, where)
        normaliser = dataset.normaliser
    if out is not None:
        save_checkpoint(out, model, task=task, bands=input_bands(cfg.aspect),
                        normalisation=_plain(normaliser.to_dict()), classes=spec.output_names,
                        extra=_plain({"history": history, "training": training,
                                      "epochs": opt.epochs, "points": len(rows),
                                      "pretrained": str(pretrained or ""), "region": region.name,
                                      "synthetic": region.synthetic}))
        partial.unlink(missing_ok=True)
        logger.info("wrote %s", out)
    model.eval()
    return TrainResult(model, normaliser, history)


def _label_counts(points: PointSet, task: Task) -> str:
    values, counts = np.unique(points.labels, return_counts=True)
    return ", ".join(f"{task.classes[int(v)]} {c}" for v, c in zip(values, counts, strict=True))
