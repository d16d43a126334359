"""What several benchmarks build the same way: demo-like SYNTHETIC stacks, and a model of a
region's settings with random weights (timing and memory do not depend on the weights).

A model is always the region's (:func:`mapper.train.model_config`: its size, pixel query and
aspect encoding, so 10 or 11 covariates) and its normaliser is fitted as training fits it (the
aspect encoded as the model takes it, Sentinel-2 scaled for the encoder's start): a benchmark
that built ``ModelConfig.named(size)`` instead would time another model than the region's.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mapper.config import Region
    from mapper.grid import Lattice
    from mapper.models.config import ModelConfig
    from mapper.normalise import Normaliser

ROOT = Path(__file__).resolve().parent.parent


def project_region(name: str) -> Region:
    """Region ``name`` of the project's ``config/config.yaml`` (validated, defaults filled), read
    from the project's folder (the config names its region files relative to it) whatever the
    current folder."""
    from mapper.config import load_config, load_region

    with contextlib.chdir(ROOT):
        return load_region(load_config("config/config.yaml"), name)


STACK_RANGES = [(0.01, 0.3)] * 9 + [(100, 900), (0, 30), (0, 360), (-0.01, 0.01), (-5, 5),
                                    (2, 14), (0, 10), (250, 600), (900, 1400), (-30, -18)]
"""Physical range (low, high) of each band of the synthetic stacks, in
:data:`mapper.bands.STACK_BANDS` order: Sentinel-2 reflectance, then elevation (m), slope
(degrees), aspect (degrees), curvature (1/m), TPI (m), TWI, SPI, and the climate normals."""


def synthetic_stacks(folder: Path, lattice: Lattice, tiles: list[str],
                     seed: int = 20260101) -> dict[str, Path]:
    """Demo-like SYNTHETIC stacks of ``tiles`` (a block of the lattice) in ``folder/stack``:
    per band one smooth random field over the block's bounding box in :data:`STACK_RANGES`,
    cut into the tiles (so seamless across them), with a Sentinel-2 cloud gap (NaN) of 60 x 100
    px at the block's centre. Returns tile id -> path."""
    from scipy.ndimage import gaussian_filter

    from mapper.bands import STACK_BANDS
    from mapper.raster import write_geotiff

    wins = [lattice.tile_window(t) for t in tiles]
    r0, c0 = min(int(w.row_off) for w in wins), min(int(w.col_off) for w in wins)
    r1 = max(int(w.row_off + w.height) for w in wins)
    c1 = max(int(w.col_off + w.width) for w in wins)
    rng = np.random.default_rng(seed)
    data = np.empty((len(STACK_BANDS), r1 - r0, c1 - c0), dtype=np.float32)
    for b, (lo, hi) in enumerate(STACK_RANGES):
        field = gaussian_filter(rng.standard_normal(data.shape[1:]), 24)
        field = (field - field.min()) / (np.ptp(field) + 1e-12)
        data[b] = lo + (hi - lo) * np.clip(field + rng.normal(0, 0.03, field.shape), 0, 1)
    h, w = data.shape[1:]
    data[:9, max(0, h // 2 - 30):h // 2 + 30, max(0, w // 2 - 50):w // 2 + 50] = np.nan
    out = {}
    for tile, win in zip(tiles, wins, strict=True):
        r, c = int(win.row_off) - r0, int(win.col_off) - c0
        path = folder / "stack" / f"{tile}.tif"
        write_geotiff(path, np.ascontiguousarray(data[:, r:r + lattice.tile_px,
                                                      c:c + lattice.tile_px]),
                      lattice.tile_transform(tile), lattice.crs, nodata=np.nan,
                      descriptions=STACK_BANDS,
                      tags={"MAPPER_TILE": tile, "MAPPER_EMPTY": "false",
                            "MAPPER_SYNTHETIC": "true"})
        out[tile] = path
    return out


def region_model_config(region: Region, size: str | None = None) -> ModelConfig:
    """The region's model config (:func:`mapper.train.model_config`), at model size ``size``
    when given (the region's pixel query and aspect encoding kept)."""
    from mapper.train import model_config

    if size is not None:
        model = {**region.settings["model"], "size": size}
        region = dataclasses.replace(region, settings={**region.settings, "model": model})
    return model_config(region)


def fitted_normaliser(pixels: np.ndarray, cfg: ModelConfig) -> Normaliser:
    """The normaliser of a model of ``cfg`` fitted on stack ``pixels`` (``[..., 19, H, W]`` or
    ``[N, 19]``), as :mod:`mapper.train` fits it: the aspect encoded as ``cfg`` takes it,
    Sentinel-2 scaled for its encoder's start (:func:`mapper.normalise.s2_scaling_for`)."""
    from mapper.normalise import Normaliser, s2_scaling_for

    return Normaliser.fit(pixels, s2_scaling=s2_scaling_for(cfg.satlas_weights),
                          aspect=cfg.aspect)


def random_checkpoint(path: Path, region: Region, task: str, stacks: dict[str, Path],
                      tile: str, size: str | None = None,
                      logit_std: float | None = None, lattice: Lattice | None = None) -> Path:
    """A checkpoint of the region's model (:func:`region_model_config`, ``size`` overriding its
    size) for ``task``, with random weights (seed 0) and its normaliser fitted on every 4th
    pixel of ``tile`` read from ``stacks`` (tile id -> stack path, on ``lattice``: by default the
    region's). ``logit_std``: the last
    layer scaled so that the logits spread so (random weights give a std of ~0.1: probabilities
    near uniform everywhere, which would hide a precision's error)."""
    import torch

    from mapper.bands import input_bands
    from mapper.models.checkpoint import save_checkpoint
    from mapper.models.miso import MiSo
    from mapper.tasks import get_task
    from mapper.windows import read_window

    cfg = region_model_config(region, size)
    lattice = lattice or region.lattice
    sample = read_window(stacks, lattice, lattice.tile_window(tile))
    norm = fitted_normaliser(sample[:, ::4, ::4], cfg)
    spec = get_task(task)
    torch.manual_seed(0)
    model = MiSo(cfg, n_out=spec.n_outputs).eval()
    if logit_std is not None:
        s2, cov = norm(sample[None, :, :256, :256])
        with torch.inference_mode():
            feats = model.encode(torch.from_numpy(s2), torch.from_numpy(cov))
            coords = torch.rand(1, 256, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
            spread = float(model.predict(feats, coords).std())
            last = model.head[-1]
            last.weight *= logit_std / spread
            last.bias *= logit_std / spread
    return save_checkpoint(path, model, task=task, bands=input_bands(cfg.aspect),
                           normalisation=norm.to_dict(), classes=spec.output_names,
                           extra={"note": "random weights (benchmark)"})
