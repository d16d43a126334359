"""The resume state of a training run: its fingerprint, and the partial it may continue.

:mod:`mapper.train` saves ``<out>.partial`` after every epoch with a fingerprint of the run:
its settings, and digests of what it reads (:func:`data_digest`: the stacks by name, size and
time, the training points; :func:`inputs_digest`: the mapped area and the SatlasPretrain
weights). :func:`load_partial` gives the partial back only when the fingerprints match.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mapper.errors import InputError

if TYPE_CHECKING:
    from mapper.config import Region
    from mapper.dataset import PointSet
    from mapper.models.config import ModelConfig

logger = logging.getLogger("mapper.train")  # a training job's lines, under its logger


def fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def data_digest(stacks: list[str | Path], points: PointSet | None = None) -> str:
    """A digest of what a run reads besides its settings, for the resume fingerprint: the stacks
    by name, size and modification time (a tile restacked since the partial was written starts
    the run over), and the training points' positions and labels (so a fixed label does too)."""
    h = hashlib.sha256()
    for path in sorted(Path(p) for p in stacks):
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise InputError(f"{path}: no such stack; make it first (snakemake --cores 1 "
                             f"{path}) or fix the path") from None
        h.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    if points is not None:
        for array in (points.xy, points.rowcol, points.labels):
            h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def inputs_digest(region: Region, cfg: ModelConfig) -> dict[str, str | None]:
    """The rest of what a run reads, for the resume fingerprint: the mapped area (the boundary's
    geometry and its buffer place the crops and the normaliser's sample) and the content of the
    SatlasPretrain weights it starts from (a file replaced under the same path), checked against
    the region's lock file when given by URL."""
    from mapper.sources.weights import checked_weights_sha256

    weights = cfg.satlas_weights
    return {"area": hashlib.sha256(region.area().wkb).hexdigest(),
            "weights": (checked_weights_sha256(region, weights)
                        if weights and Path(weights).is_file() else None)}


def load_partial(path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged partial is just not resumed
        logger.warning("%s: unreadable (%s); starting over", path, type(exc).__name__)
        return None
    if not isinstance(state, dict) or "epoch" not in state:
        logger.warning("%s: not a training partial; starting over", path)
        return None
    if state.get("fingerprint") != fingerprint:
        logger.warning("%s belongs to another run (settings, data or start differ); starting "
                       "over", path)
        return None
    logger.info("resuming from %s after epoch %d", path, state["epoch"])
    return state
