"""The training loop MiSo's pretraining and fine-tuning share (:mod:`mapper.train`).

    with deterministic(device):
        history = fit(model, dataset, task, stream, optimisation(training, ...), seed, partial,
                      fingerprint, device)

:func:`fit` runs ``opt.epochs`` epochs over :class:`mapper.dataset.CropDataset` batches: AdamW
(weight decay, fused), a learning rate set per iteration by :class:`mapper.schedule.Schedule`
(warm-up from ``warmup_lr`` to the peak, cosine down to the floor), gradient clipping at
``grad_clip`` (total norm) and the reference's task losses (:func:`mapper.losses.task_loss`).
It stops at the first non-finite loss or gradient, with the fix. With a ``partial`` path it
saves the full state after every epoch and resumes from a partial of the same fingerprint
(:mod:`mapper.training_resume`); every epoch reseeds torch from ``(seed, epoch)``.
Its lines are logged under ``mapper.train``, as the rest of a training job's.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mapper.dataset import CropDataset
from mapper.devices import prepare_deterministic
from mapper.errors import CheckpointError, TrainingError
from mapper.losses import task_loss
from mapper.models.checkpoint import save_torch
from mapper.models.miso import MiSo
from mapper.normalise import Normaliser
from mapper.progress import bar as progress_bar
from mapper.schedule import Schedule
from mapper.training_resume import load_partial
from mapper.training_settings import finetune_epochs

logger = logging.getLogger("mapper.train")  # a training job's lines, under one logger


@dataclass(frozen=True)
class Optimisation:
    """What the loop needs besides data: epochs, schedule bounds, optimiser settings."""

    epochs: int
    lr_max: float
    lr_min: float
    warmup_lr: float
    warmup_fraction: float
    weight_decay: float
    grad_clip: float
    geo_alignment: bool = True  # the visual-geo InfoNCE pair in the loss (training.geo_alignment)


@contextlib.contextmanager
def deterministic(device: torch.device | None = None) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` for the block, restored afterwards (on CUDA
    with ``warn_only``: :func:`mapper.devices.prepare_deterministic`)."""
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    warn_only = prepare_deterministic(device or torch.device("cpu"))
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


def _seed_epoch(seed: int, epoch: int) -> None:
    torch.manual_seed(int(np.random.default_rng([seed, 99, epoch]).integers(2**62)))


def optimisation(training: dict[str, Any], pretraining: bool, epochs: int | None,
                 task: str | None = None) -> Optimisation:
    """The loop's settings from the region's ``training`` section: pretraining peaks at
    ``pretrain_lr`` and decays to ``pretrain_lr * lr_min / lr_max``, fine-tuning uses ``lr_max``
    and ``lr_min``; ``epochs`` None takes the section's (per task when fine-tuning)."""
    if pretraining:
        peak = float(training["pretrain_lr"])
        floor = peak * float(training["lr_min"]) / float(training["lr_max"])
        warm = min(float(training["warmup_lr"]), peak)
        n = int(training["pretrain_epochs"]) if epochs is None else epochs
    else:
        peak, floor = float(training["lr_max"]), float(training["lr_min"])
        warm = float(training["warmup_lr"])
        n = finetune_epochs(training, str(task)) if epochs is None else epochs
    return Optimisation(
        epochs=n, lr_max=peak, lr_min=floor, warmup_lr=warm,
        warmup_fraction=float(training["warmup_fraction"]),
        weight_decay=float(training["weight_decay"]), grad_clip=float(training["grad_clip"]),
        geo_alignment=bool(training["geo_alignment"]),
    )


def _diverged(what: str, stream: str, task: str, epoch: int, step: int) -> TrainingError:
    """The error of a non-finite loss or gradient: NaN weights would map nodata everywhere."""
    return TrainingError(
        f"{stream if task == stream else f'{stream} {task}'}: non-finite {what} at epoch "
        f"{epoch + 1}, step {step + 1} (the training diverged); lower training.lr_max (or "
        "training.grad_clip) in the region file"
    )


def fit(
    model: MiSo,
    dataset: CropDataset,
    task: str,
    stream: str,
    opt: Optimisation,
    seed: int,
    partial: Path | None,
    fingerprint: str,
    device: torch.device,
) -> list[dict[str, float]]:
    """Train ``model`` (on ``device``) in place for ``opt.epochs`` epochs; returns the per-epoch
    history."""
    counts = [dataset.n_batches(e, stream) for e in range(opt.epochs)]
    schedule = Schedule.of(sum(counts), opt.warmup_fraction, opt.warmup_lr, opt.lr_max,
                           opt.lr_min)
    # fused: one kernel over all tensors (5x faster than the per-tensor loop on CPU), elementwise
    optimiser = torch.optim.AdamW(model.parameters(), lr=opt.lr_max,
                                  weight_decay=opt.weight_decay, fused=True)
    start, step, history = 0, 0, []
    state = load_partial(partial, fingerprint) if partial else None
    if state is not None:
        initial = copy.deepcopy(model.state_dict())
        try:
            model.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            start, step, history = int(state["epoch"]), int(state["step"]), list(state["history"])
            normaliser = Normaliser.from_dict(state["normalisation"], partial)
        except (KeyError, TypeError, ValueError, RuntimeError, CheckpointError) as exc:
            # same settings and data, but tensors this code does not take (a mapper or
            # torchvision updated in between): the run starts over from the initial weights
            logger.warning("%s: does not fit this model (%s); starting over", partial,
                           str(exc).splitlines()[0][:200])
            model.load_state_dict(initial)
            optimiser = torch.optim.AdamW(model.parameters(), lr=opt.lr_max,
                                          weight_decay=opt.weight_decay, fused=True)
            start, step, history = 0, 0, []
        else:
            dataset.normaliser = normaliser
        del initial
    bar = progress_bar(schedule.total, f"{stream} {task}", "step", initial=step)
    unread = 0  # training points on pixels without data, warned of
    params = [p for p in model.parameters() if p.requires_grad]
    for epoch in range(start, opt.epochs):
        _seed_epoch(seed, epoch)
        model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        n_batches = crops = labelled = 0
        for batch in dataset.batches(epoch, stream):
            batch = batch.to(device)
            lr = schedule.lr(step)
            for group in optimiser.param_groups:
                group["lr"] = lr
            out = model(batch.s2, batch.cov, batch.coords, batch.xy)
            loss, terms = task_loss(task, out, batch.target, batch.mask, batch.valid,
                                    geo_alignment=opt.geo_alignment)
            if not math.isfinite(terms["total"]):  # diverged: NaN weights would map nodata
                raise _diverged("loss", stream, task, epoch, step)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, opt.grad_clip)
            if not math.isfinite(float(norm)):  # a finite loss, but the step would write NaN
                raise _diverged("gradient", stream, task, epoch, step)
            optimiser.step()
            step += 1
            n_batches += 1
            crops += batch.s2.shape[0]
            labelled += batch.labelled
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.update(1)
            bar.set_postfix(loss=f"{terms['total']:.3f}", lr=f"{lr:.1e}", refresh=False)
        if len(dataset.unread) > unread:
            unread = len(dataset.unread)
            first = dataset.points.xy[min(dataset.unread)]
            logger.warning(
                "%s %s: %d training point(s) lie on pixels the stacks leave without data (the "
                "first at x %.0f, y %.0f) and teach nothing: a tile was stacked again since the "
                "samples were made; to train on them, make the samples again "
                "(-R results/<region>/samples/points.parquet)",
                stream, task, unread, first[0], first[1])
        record = {k: v / max(n_batches, 1) for k, v in sums.items()}
        record.update(epoch=epoch + 1, crops=crops, labelled=labelled, lr=schedule.lr(step - 1))
        history.append(record)
        logger.info(
            "%s %s epoch %d/%d: %s; %d crops, %d labelled queries, lr %.2e, %.1f s", stream,
            task, epoch + 1, opt.epochs,
            ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k in sums), crops, labelled,
            record["lr"], time.perf_counter() - t0,
        )
        if partial is not None:
            save_torch(partial, {
                "fingerprint": fingerprint, "epoch": epoch + 1, "step": step,
                "model": model.state_dict(), "optimiser": optimiser.state_dict(),
                "history": history, "normalisation": dataset.normaliser.to_dict(),
            })
    bar.close()
    return history
