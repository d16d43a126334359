"""How a stack reads its Sentinel-2 and climate files: bands chosen by their descriptions,
turned into physical values (a file's declared scale and offset; L2A digital numbers x 1e-4, 0
their nodata where the file declares none), warped onto a lattice window (bilinear), several
files mosaicked first-valid-wins. The DEM is read by :mod:`mapper.dem`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from mapper.bands import CLIMATE_BANDS, S2_BANDS
from mapper.errors import InputError
from mapper.grid import Lattice
from mapper.raster import check_crs, open_raster, warp_lattice_window

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BandPlan:
    """Which bands of a file to read, in output order, and how to turn them into physical values."""

    path: Path
    indexes: list[int]
    scales: list[float]
    offsets: list[float]
    src_nodata: float | None = None
    """Nodata of the file's bands where the file declares none (else the file's own)."""


def find_bands(path: Path, wanted: list[tuple[str, ...]], kind: str) -> BandPlan:
    """Select bands by description: ``wanted[i]`` lists the accepted names of output band i."""
    src = open_raster(path)
    with src:
        check_crs(src, path)
        found = {(d or "").strip().lower(): i for i, d in enumerate(src.descriptions, start=1)}
        indexes = []
        for names in wanted:
            hit = next((found[n.lower()] for n in names if n.lower() in found), None)
            if hit is None:
                have = ", ".join(repr(d) for d in src.descriptions)
                raise InputError(
                    f"{path}: no {kind} band described {' or '.join(repr(n) for n in names)} "
                    f"(band descriptions: {have}); set the band descriptions or pass the right file"
                )
            indexes.append(hit)
        dtypes = [src.dtypes[i - 1] for i in indexes]
        scales = [float(src.scales[i - 1]) for i in indexes]
        offsets = [float(src.offsets[i - 1]) for i in indexes]
        declared_nodata = src.nodata
    src_nodata = None
    if kind == "Sentinel-2":
        for j, dt in enumerate(dtypes):
            declared = (scales[j], offsets[j]) != (1.0, 0.0)
            if not declared and np.issubdtype(np.dtype(dt), np.integer):
                scales[j] = 1e-4  # L2A digital numbers: reflectance x 10000
        if declared_nodata is None and all(np.issubdtype(np.dtype(d), np.integer) for d in dtypes):
            src_nodata = 0.0  # L2A's NO_DATA value, in a file that does not declare it
    return BandPlan(path, indexes, scales, offsets, src_nodata)


def sentinel2_plans(paths: list[Path]) -> list[BandPlan]:
    if not paths:
        raise InputError("no Sentinel-2 file given; pass at least one with --sentinel2")
    wanted = [(name, code) for name, code in S2_BANDS]
    return [find_bands(Path(p), wanted, "Sentinel-2") for p in paths]


def climate_plans(paths: list[Path]) -> list[tuple[BandPlan, list[int]]]:
    """Where each climate band is: ``(plan of one file, output positions of its bands)`` pairs."""
    if not paths:
        raise InputError("no climate file given; pass one 3-band raster or three 1-band rasters")
    bands: list[tuple[Path, int, str]] = []
    for path in paths:
        with open_raster(path) as src:
            check_crs(src, path)
            bands += [(path, i, (d or "").strip().lower())
                      for i, d in enumerate(src.descriptions, start=1)]
    wanted = [name.lower() for name in CLIMATE_BANDS]
    chosen = [next((b for b in bands if b[2] == name), None) for name in wanted]
    if any(c is None for c in chosen):
        if len(bands) == len(wanted) and not any(b[2] in wanted for b in bands):
            logger.info("climate bands have no names: taking them in the order %s", CLIMATE_BANDS)
            chosen = bands
        else:
            missing = [CLIMATE_BANDS[i] for i, c in enumerate(chosen) if c is None]
            have = ", ".join(f"{p.name}:{i}={d!r}" for p, i, d in bands)
            raise InputError(
                f"{', '.join(map(str, paths))}: no climate band described {missing} (bands: "
                f"{have}); set the band descriptions or give exactly 3 unnamed bands in the order "
                f"{CLIMATE_BANDS}"
            )
    plans = []
    for path in dict.fromkeys(c[0] for c in chosen):
        positions = [k for k, c in enumerate(chosen) if c[0] == path]
        indexes = [chosen[k][1] for k in positions]
        plans.append((BandPlan(path, indexes, [1.0] * len(indexes), [0.0] * len(indexes)),
                      positions))
    return plans


def climate_bands(plans: list[tuple[BandPlan, list[int]]], lattice: Lattice,
                  window: Window) -> np.ndarray:
    """The 3 climate bands (CLIMATE_BANDS order) on a lattice window, float32."""
    out = np.empty((len(CLIMATE_BANDS), int(window.height), int(window.width)), dtype=np.float32)
    for plan, positions in plans:
        out[positions] = warp_plan(plan, lattice, window)
    return out


def warp_plan(plan: BandPlan, lattice: Lattice, window: Window) -> np.ndarray:
    """The plan's bands warped (bilinear) onto a lattice window, in physical units, float32."""
    data = warp_lattice_window(
        plan.path, lattice.crs, lattice.transform, window, Resampling.bilinear, plan.indexes,
        plan.src_nodata,
    )
    if any((s, o) != (1.0, 0.0) for s, o in zip(plan.scales, plan.offsets, strict=True)):
        out = np.empty(data.shape, dtype=np.float32)
        for j, (s, o) in enumerate(zip(plan.scales, plan.offsets, strict=True)):
            out[j] = data[j].astype(np.float64) * s + o
        return out
    return data


def mosaic(plans: list[BandPlan], lattice: Lattice, window: Window) -> np.ndarray:
    """First-valid-wins mosaic of several files' bands on a lattice window."""
    out = warp_plan(plans[0], lattice, window)
    for plan in plans[1:]:
        gaps = np.isnan(out)
        if not gaps.any():
            break
        out[gaps] = warp_plan(plan, lattice, window)[gaps]
    return out
