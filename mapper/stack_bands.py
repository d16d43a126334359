"""How a stack reads its Sentinel-2 and climate files: bands chosen by their descriptions,
turned into physical values (a file's declared scale and offset; L2A digital numbers x 1e-4, 0
their nodata where the file declares none), warped onto a lattice window (bilinear), several
files mosaicked first-valid-wins. The DEM is read by :mod:`mapper.dem`.

Values no such source can hold stop the stack with one error naming the file and the fix, rather
than go into it: Sentinel-2 reflectance whose median is above :data:`REFLECTANCE_MEDIAN_MAX`
(digital numbers in a float file that declares no scale), integer digital numbers that declare
no scale and whose darkest pixels are too bright to lack ESA's offset (:func:`_check_no_offset`),
and climate values outside
:data:`CLIMATE_RANGES` (an undeclared fill value, which the bilinear warp spreads into its
neighbours, or other units)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from mapper.bands import (
    CLIMATE_BANDS,
    DARK_PERCENTILE,
    OFFSET_CHECK_BANDS,
    OFFSET_CHECK_MIN_PIXELS,
    S2_BANDS,
    UNITS,
)
from mapper.errors import InputError
from mapper.grid import Lattice
from mapper.raster import check_crs, open_raster
from mapper.warp import warp_lattice_window

logger = logging.getLogger(__name__)

REFLECTANCE_MEDIAN_MAX = 2.0
"""Above this median a band is not reflectance (snow and cloud reach about 1.5 in some pixels;
L2A digital numbers are reflectance x 10000)."""
CLIMATE_RANGES: dict[str, tuple[float, float]] = {
    "precip_annual": (0.0, 15_000.0),  # mm/year; the wettest places on Earth get about 12,000
    "summer_warmth": (0.0, 11_000.0),  # degree-days above 0 C; 30 C all year is 10,950
    "jan_tmin": (-75.0, 35.0),  # degrees C
}
"""What each climate band (its units: :data:`mapper.bands.UNITS`) can hold anywhere."""
RAW_DARK_REFLECTANCE = 0.08
"""Darkest-percentile reflectance at and above which an integer file read as DN / 10000 still
holds ESA's offset (:func:`_check_no_offset`). With the offset in, every pixel reads 0.1 plus its
reflectance; without it, water, shadow and forest read 0.00-0.03. A composite window may hold no
water (a STAC item's check picks it out by its SCL, and sits midway at 0.05), so the threshold
lies nearer the offset's floor, which leaves room for bright bare ground alone."""


@dataclass(frozen=True)
class BandPlan:
    """Which bands of a file to read, in output order, and how to turn them into physical values."""

    path: Path
    indexes: list[int]
    scales: list[float]
    offsets: list[float]
    src_nodata: float | None = None
    """Nodata of the file's bands where the file declares none (else the file's own)."""
    band_nodata: bool = False
    """Each band's holes its own (:func:`mapper.warp.warp_lattice_window`): climate files,
    whose normals each miss their own pixels; a Sentinel-2 file's bands miss the same ones."""
    assumed_dn: bool = False
    """Integer Sentinel-2 bands that declare no scale or offset, read as DN / 10000 (checked by
    :func:`_check_no_offset`)."""


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
    assumed_dn = False
    if kind == "Sentinel-2":
        for j, dt in enumerate(dtypes):
            declared = (scales[j], offsets[j]) != (1.0, 0.0)
            if not declared and np.issubdtype(np.dtype(dt), np.integer):
                scales[j] = 1e-4  # L2A digital numbers: reflectance x 10000
                assumed_dn = True
        if declared_nodata is None and all(np.issubdtype(np.dtype(d), np.integer) for d in dtypes):
            src_nodata = 0.0  # L2A's NO_DATA value, in a file that does not declare it
    return BandPlan(path, indexes, scales, offsets, src_nodata, assumed_dn=assumed_dn)


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
    packing: dict[tuple[Path, int], tuple[float, float]] = {}  # (scale, offset) of each band
    for path in paths:
        with open_raster(path) as src:
            check_crs(src, path)
            bands += [(path, i, (d or "").strip().lower())
                      for i, d in enumerate(src.descriptions, start=1)]
            packing.update({(path, i): (float(src.scales[i - 1]), float(src.offsets[i - 1]))
                            for i in range(1, src.count + 1)})
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
        scales, offsets = zip(*(packing[path, i] for i in indexes), strict=True)
        plans.append((BandPlan(path, indexes, list(scales), list(offsets), band_nodata=True),
                      positions))
    return plans


def climate_bands(plans: list[tuple[BandPlan, list[int]]], lattice: Lattice,
                  window: Window) -> np.ndarray:
    """The 3 climate bands (CLIMATE_BANDS order) on a lattice window, float32."""
    out = np.empty((len(CLIMATE_BANDS), int(window.height), int(window.width)), dtype=np.float32)
    for plan, positions in plans:
        out[positions] = warp_plan(plan, lattice, window)
        for k in positions:
            _check_climate(out[k], CLIMATE_BANDS[k], plan)
    return out


def _check_climate(values: np.ndarray, name: str, plan: BandPlan) -> None:
    """One :class:`InputError` naming the file and the fix if a warped climate band holds values
    outside :data:`CLIMATE_RANGES`."""
    finite = values[np.isfinite(values)]
    low, high = CLIMATE_RANGES[name]
    if not finite.size or (low <= finite.min() and finite.max() <= high):
        return
    raise InputError(
        f"{plan.path}: its {name} band ({UNITS[name]}) reads {finite.min():g} to "
        f"{finite.max():g}, outside {low:g} to {high:g}: an undeclared fill value (declare it: "
        f"rio edit-info --nodata <value> {plan.path}) or other units or packing (declare the "
        f"scale and offset, gdal_edit.py -scale <s> -offset <o>, or convert the file); then run "
        "the stack again"
    )


def warp_plan(plan: BandPlan, lattice: Lattice, window: Window) -> np.ndarray:
    """The plan's bands warped (bilinear) onto a lattice window, in physical units, float32."""
    data = warp_lattice_window(
        plan.path, lattice.crs, lattice.transform, window, Resampling.bilinear, plan.indexes,
        plan.src_nodata, band_nodata=plan.band_nodata,
    )
    if any((s, o) != (1.0, 0.0) for s, o in zip(plan.scales, plan.offsets, strict=True)):
        out = np.empty(data.shape, dtype=np.float32)
        for j, (s, o) in enumerate(zip(plan.scales, plan.offsets, strict=True)):
            out[j] = data[j].astype(np.float64) * s + o
        return out
    return data


def mosaic(plans: list[BandPlan], lattice: Lattice, window: Window) -> np.ndarray:
    """First-valid-wins mosaic of several Sentinel-2 files' bands on a lattice window
    (reflectance, each file's checked: :func:`_check_reflectance`)."""
    out = _check_reflectance(warp_plan(plans[0], lattice, window), plans[0])
    for plan in plans[1:]:
        gaps = np.isnan(out)
        if not gaps.any():
            break
        out[gaps] = _check_reflectance(warp_plan(plan, lattice, window), plan)[gaps]
    return out


def _check_no_offset(data: np.ndarray, plan: BandPlan) -> np.ndarray:
    """``data`` (reflectance of ``plan``'s bands on a window), or one :class:`InputError` naming
    the file and the fix if its integer DNs, read as DN / 10000, still hold ESA's offset.

    The same test as a STAC item's (:func:`mapper.sources.s2_items.check_offset`), without a
    scene classification: the lower of blue and SWIR 2.2 um (the darkest bands of vegetation
    and of water) at its :data:`~mapper.bands.DARK_PERCENTILE` percentile over the
    window's pixels with data (every 4th row and column). Water, shadow and forest put it near
    0 (0.00-0.03); with the offset still in, every DN is 1000 or more, so it is 0.1 or more. At
    :data:`RAW_DARK_REFLECTANCE` (0.08) and above, the file is refused; with fewer than
    :data:`~mapper.bands.OFFSET_CHECK_MIN_PIXELS` pixels there is no verdict. A file
    that declares its scale (and offset, 0 or not) is not checked.
    """
    blue, swir = (data[[code for _, code in S2_BANDS].index(code)][::4, ::4]
                  for code in OFFSET_CHECK_BANDS)
    darkest = np.minimum(blue, swir)
    darkest = darkest[np.isfinite(darkest)]
    if darkest.size < OFFSET_CHECK_MIN_PIXELS:
        return data
    dark = float(np.percentile(darkest, DARK_PERCENTILE))
    if dark >= RAW_DARK_REFLECTANCE:
        raise InputError(
            f"{plan.path}: its darkest pixels (the lower of blue and SWIR 2.2 um, darkest "
            f"{DARK_PERCENTILE:g} % of {darkest.size} pixels in this window) read as reflectance "
            f"{dark:.3f}, where water, shadow and forest give 0.00-0.03: integer digital numbers "
            "that still hold ESA's offset of +1000 (L2A of processing baseline 04.00 or later, "
            "from 25 January 2022, as ESA delivers them), which would read 0.1 too bright in "
            f"every band. Declare it (gdal_edit.py -scale 0.0001 -offset -0.1 {plan.path}); if "
            "the file holds no offset and this ground is truly that bright, declare its scale "
            f"alone (gdal_edit.py -scale 0.0001 -offset 0 {plan.path}); then run the stack again"
        )
    return data


def _check_reflectance(data: np.ndarray, plan: BandPlan) -> np.ndarray:
    """``data``, or one :class:`InputError` naming the file and the fix if a band's median is
    above :data:`REFLECTANCE_MEDIAN_MAX` (taken on every 4th row and column: 0.1 s rather than
    1.8 s for a 4096 px tile's 9 bands), or if integer DNs still hold ESA's offset
    (:func:`_check_no_offset`, for a file read as DN / 10000)."""
    for j, band in enumerate(data):
        sample = band[::4, ::4]
        finite = sample[np.isfinite(sample)]
        median = float(np.median(finite)) if finite.size else 0.0
        if median > REFLECTANCE_MEDIAN_MAX:
            raise InputError(
                f"{plan.path}: band {plan.indexes[j]} ({S2_BANDS[j][0]}) reads as reflectance "
                f"{median:g} (median), "
                "not 0 to 1: digital numbers (reflectance x 10000) in a file that declares no "
                f"scale; declare it (gdal_edit.py -scale 0.0001 {plan.path}) or pass "
                "reflectance, then run the stack again"
            )
    return _check_no_offset(data, plan) if plan.assumed_dn else data
