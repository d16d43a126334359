"""MiSo checkpoints that carry their own spec, so prediction needs only the file.

A checkpoint is a ``torch.save``'d dict:

    format         "mapper.miso" and version (int), to refuse foreign files early
    config         ModelConfig.to_dict()
    n_out          logits per point (the task's n_outputs: 1 for NSP, 7 for soil order)
    task           a map task of mapper.tasks, or "pretrain"
    bands          the input band names, in tensor order (Sentinel-2 then covariates)
    normalisation  plain dict from mapper.normalise (stored as given, not interpreted here)
    classes        names of the logits: the task's output_names (SOIL_ORDERS; ["nsp"] for NSP),
                   [] for pretraining
    state_dict     the model's tensors
    extra          plain dict (epoch, optimiser state for resume, metrics, ...)

Files are written with :func:`save_torch` (a temporary name in the same folder, then renamed,
with the permissions of every other output), so a crash never leaves a half-written checkpoint
and a group-shared project can read it. Everything must be loadable with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mapper.errors import CheckpointError, ConfigError
from mapper.files import atomic_path, file_sha256
from mapper.models.config import ModelConfig
from mapper.models.miso import MiSo
from mapper.tasks import PRETRAIN, TASKS

FORMAT = "mapper.miso"
VERSION = 1
KINDS = (*TASKS, PRETRAIN)
"""What a checkpoint can be for: a map task, or pretraining."""
_REQUIRED = ("config", "n_out", "task", "bands", "normalisation", "classes", "state_dict")


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything in a checkpoint except the tensors of the model."""

    path: Path
    config: ModelConfig
    n_out: int
    task: str
    bands: list[str]
    normalisation: dict[str, Any]
    classes: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | Path,
    model: MiSo,
    *,
    task: str,
    bands: list[str],
    normalisation: dict[str, Any],
    classes: list[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and its spec to ``path`` atomically; returns the path.

    A map task's checkpoint must have the task's outputs (logit count and names)."""
    if task not in KINDS:
        raise ConfigError(f"checkpoint task must be one of {', '.join(KINDS)}, got {task!r}")
    outputs = _outputs_problem(task, model.n_out, list(classes))
    if outputs:
        raise ConfigError(f"{path}: {outputs}; build the model for the task")
    n_bands = model.cfg.n_s2_bands + model.cfg.n_cov_bands
    if len(bands) != n_bands:
        raise ConfigError(
            f"{path}: {len(bands)} band names for a model of {n_bands} input bands; "
            "pass the stack's band list"
        )
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "n_out": model.n_out,
        "task": task,
        "bands": list(bands),
        "normalisation": normalisation,
        "classes": list(classes),
        "state_dict": _on_cpu(model.state_dict()),
        "extra": extra or {},
    }
    return save_torch(path, payload)


def _on_cpu(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict with its tensors on the CPU (a model trained on a GPU), so that a checkpoint
    reads the same on every machine; a CPU model's own state dict as it is."""
    if all(v.device.type == "cpu" for v in state.values()):
        return state
    return type(state)((k, v.detach().cpu()) for k, v in state.items())


def save_torch(path: str | Path, obj: dict[str, Any]) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (:func:`mapper.files.atomic_path`); returns
    the path.

    Saved through an open file, not by name: given a name, torch calls the archive inside the file
    after it, and the temporary name is random, so equal objects would not give equal files.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
    return path


def _read(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """The checked payload; ``mmap``: tensors mapped, not read (for a check of the rest)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; train the model first or fix the path")
    # torch maps only its zip format; an older torch.save format is read whole
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        reason = " ".join(str(exc).split()).split(". ")[0][:100]
        raise CheckpointError(
            f"{path}: unreadable checkpoint, damaged or not a torch file "
            f"({type(exc).__name__}: {reason}); delete it and rerun training"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a mapper MiSo checkpoint (no format {FORMAT!r}); "
            "give a checkpoint written by mapper training"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('version')}, this mapper reads "
            f"version {VERSION}; retrain or use the matching mapper version"
        )
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}; delete it and rerun training")
    return payload


def load_checkpoint(
    path: str | Path,
    *,
    expect_task: str | None = None,
    expect_size: str | None = None,
) -> tuple[MiSo, CheckpointMeta]:
    """Rebuild the model from the file alone (in eval mode, fast decoder) and its metadata.

    ``expect_task`` (a map task or "pretrain") and ``expect_size`` (a ModelConfig name) are
    checked when given, and a map task's outputs against :mod:`mapper.tasks`. Every failure is a
    one-line CheckpointError naming the file.
    """
    path = Path(path)
    payload, cfg = _checked(path, expect_task, expect_size)
    model = MiSo(cfg, int(payload["n_out"]))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(
            f"{path}: tensors do not fit a {cfg.name} model ({detail}); delete it and retrain"
        ) from exc
    model.eval()
    return model, _meta(path, payload, cfg)


def check_checkpoint(
    path: str | Path,
    *,
    expect_task: str | None = None,
    expect_size: str | None = None,
) -> CheckpointMeta:
    """Every check of :func:`load_checkpoint` but the tensors' fit, without building the model
    or reading the tensors (memory-mapped): for a job that may not need the model (an empty
    tile), so that it refuses what the model's jobs refuse."""
    path = Path(path)
    payload, cfg = _checked(path, expect_task, expect_size, mmap=True)
    return _meta(path, payload, cfg)


def _meta(path: Path, payload: dict[str, Any], cfg: ModelConfig) -> CheckpointMeta:
    return CheckpointMeta(
        path=path,
        config=cfg,
        n_out=int(payload["n_out"]),
        task=payload["task"],
        bands=list(payload["bands"]),
        normalisation=payload["normalisation"],
        classes=list(payload["classes"]),
        extra=payload.get("extra") or {},
    )


def _checked(path: Path, expect_task: str | None, expect_size: str | None,
             mmap: bool = False) -> tuple[dict[str, Any], ModelConfig]:
    """The payload and model config of a checkpoint that passes every check but the tensors'."""
    payload = _read(path, mmap=mmap)
    try:
        cfg = ModelConfig.from_dict(payload["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: bad model config ({exc}); retrain") from exc
    task = payload["task"]
    if task not in KINDS:
        raise CheckpointError(f"{path}: checkpoint of unknown task {task!r} (this mapper knows "
                              f"{', '.join(KINDS)}); use the matching mapper version")
    outputs = _outputs_problem(task, int(payload["n_out"]), list(payload["classes"]))
    if outputs:
        raise CheckpointError(f"{path}: {outputs}; retrain")
    if expect_task is not None and task != expect_task:
        raise CheckpointError(
            f"{path}: checkpoint is for task {task!r}, expected {expect_task!r}; "
            f"give the {expect_task} checkpoint"
        )
    if expect_size is not None and cfg.name != expect_size:
        raise CheckpointError(
            f"{path}: checkpoint is model size {cfg.name!r}, expected {expect_size!r}; "
            "give a checkpoint of the configured size or change model.size"
        )
    return payload, cfg


def _outputs_problem(task: str, n_out: int, classes: list[str]) -> str:
    """What is wrong with a map task's logits (count, names), or "" (pretraining: anything)."""
    if task == PRETRAIN:
        return ""
    spec = TASKS[task]
    if n_out != spec.n_outputs or classes != spec.output_names:
        return (f"{n_out} logits named {classes}, but task {task} has {spec.n_outputs} "
                f"named {spec.output_names}")
    return ""


def describe_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's spec and checksum, read without building the model (for humans, logs)."""
    path = Path(path)
    payload = _read(path)
    n_params = sum(int(v.numel()) for k, v in payload["state_dict"].items()
                   if hasattr(v, "numel") and "relative_" not in k)
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "size": payload["config"].get("name"),
        "task": payload["task"],
        "n_out": int(payload["n_out"]),
        "classes": list(payload["classes"]),
        "bands": list(payload["bands"]),
        "params": n_params,
        "extra": sorted(payload.get("extra") or {}),
    }
