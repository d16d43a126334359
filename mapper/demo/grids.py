"""The native grids of the SYNTHETIC demo sources, and their pixel centres in EPSG:3338.

Each demo source has the CRS and resolution a real product of its kind has, so that the stack
stage really reprojects:

- Sentinel-2: EPSG:32606 (UTM 6N), 10 m, origin on multiples of 60 m in UTM metres as in the
  Sentinel-2 MGRS tiling (its 10, 20 and 60 m bands share corners); rotated by several degrees
  against Alaska Albers, so no pixel edge lines up with the lattice.
- DEM: EPSG:4326, 1 arc-second, edges on whole arc-seconds (as the USGS 3DEP / GLO-30 tiling).
- Climate: EPSG:3338, 1 km, origin offset by 371 m from the 1 km (and so from the 10 m) lattice.

Every grid covers the region's bounding box buffered by ``margin`` metres. Transforms use the
corner convention (GDAL's); pixel centres are at +0.5 pixel. Shapes are rounded up to multiples
of 16 so the files can be tiled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.warp import transform_bounds
from scipy import ndimage

from mapper.demo.fields import WorldGrid

ALBERS = "EPSG:3338"
UTM6N = "EPSG:32606"
GEOGRAPHIC = "EPSG:4326"
ARCSEC = 1.0 / 3600.0
CLIMATE_RES = 1000.0
CLIMATE_OFFSET = 371.0
"""Metres by which the climate grid's origin is off the 1 km (and the 10 m) lattice."""

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class NativeGrid:
    """A north-up grid in ``crs``: ``transform`` (corner convention) and ``shape`` (rows, cols)."""

    crs: str
    transform: Affine
    shape: tuple[int, int]

    @property
    def bounds(self) -> Bounds:
        t, (h, w) = self.transform, self.shape
        return (t.c, t.f + h * t.e, t.c + w * t.a, t.f)

    def footprint_albers(self) -> Bounds:
        """Bounding box of the grid in EPSG:3338 (edges densified)."""
        if self.crs == ALBERS:
            return self.bounds
        return transform_bounds(self.crs, ALBERS, *self.bounds, densify_pts=64)

    def centres_albers(self, step: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """EPSG:3338 x, y (float64 [rows, cols]) of every pixel centre.

        Exact projection every ``step`` pixels, bilinear in between: the projection is so smooth
        at this scale that the error is far below a millimetre, and it is ~10x faster.
        """
        h, w = self.shape
        if self.crs == ALBERS:
            xs = self.transform.c + (np.arange(w) + 0.5) * self.transform.a
            ys = self.transform.f + (np.arange(h) + 0.5) * self.transform.e
            return np.meshgrid(xs, ys)
        rk = np.arange(math.ceil((h - 1) / step) + 1) * step
        ck = np.arange(math.ceil((w - 1) / step) + 1) * step
        cc, rr = np.meshgrid(ck + 0.5, rk + 0.5)
        px, py = self.transform @ (cc, rr)
        to_albers = Transformer.from_crs(self.crs, ALBERS, always_xy=True)
        kx, ky = to_albers.transform(px, py)
        rows, cols = np.meshgrid(np.arange(h) / step, np.arange(w) / step, indexing="ij")
        x = ndimage.map_coordinates(np.asarray(kx), [rows, cols], order=1)
        y = ndimage.map_coordinates(np.asarray(ky), [rows, cols], order=1)
        return x, y


def buffered(bounds: Bounds, margin: float) -> Bounds:
    left, bottom, right, top = bounds
    return (left - margin, bottom - margin, right + margin, top + margin)


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def _snapped_grid(crs: str, bounds: Bounds, res: float, step: float, offset: float) -> NativeGrid:
    """Grid of ``res`` covering ``bounds`` with its origin on ``offset + k * step``."""
    left, bottom, right, top = bounds
    x0 = math.floor((left - offset) / step) * step + offset
    y0 = math.ceil((top - offset) / step) * step + offset
    width = _round16(math.ceil(round((right - x0) / res, 6)))
    height = _round16(math.ceil(round((y0 - bottom) / res, 6)))
    return NativeGrid(crs, Affine(res, 0.0, x0, 0.0, -res, y0), (height, width))


def sentinel2_grid(coverage: Bounds) -> NativeGrid:
    """10 m UTM 6N grid covering ``coverage`` (EPSG:3338 bounds)."""
    utm = transform_bounds(ALBERS, UTM6N, *coverage, densify_pts=64)
    return _snapped_grid(UTM6N, utm, 10.0, 60.0, 0.0)


def dem_grid(coverage: Bounds) -> NativeGrid:
    """1 arc-second geographic grid covering ``coverage`` (EPSG:3338 bounds)."""
    lonlat = transform_bounds(ALBERS, GEOGRAPHIC, *coverage, densify_pts=64)
    left, bottom, right, top = (round(b * 3600.0, 6) for b in lonlat)
    x0, y0 = math.floor(left), math.ceil(top)
    width = _round16(math.ceil(right - x0))
    height = _round16(math.ceil(y0 - bottom))
    transform = Affine(ARCSEC, 0.0, x0 * ARCSEC, 0.0, -ARCSEC, y0 * ARCSEC)
    return NativeGrid(GEOGRAPHIC, transform, (height, width))


def climate_grid(coverage: Bounds) -> NativeGrid:
    """1 km EPSG:3338 grid covering ``coverage``, origin 371 m off the lattice."""
    left, bottom, right, top = coverage
    x0 = math.floor((left - CLIMATE_OFFSET) / CLIMATE_RES) * CLIMATE_RES + CLIMATE_OFFSET
    y0 = math.ceil((top - CLIMATE_OFFSET) / CLIMATE_RES) * CLIMATE_RES + CLIMATE_OFFSET
    width = math.ceil((right - x0) / CLIMATE_RES)
    height = math.ceil((y0 - bottom) / CLIMATE_RES)
    return NativeGrid(ALBERS, Affine(CLIMATE_RES, 0, x0, 0, -CLIMATE_RES, y0), (height, width))


def world_grid_for(
    grids: list[NativeGrid], origin: tuple[float, float], res: float, pad: float = 200.0
) -> WorldGrid:
    """The lattice-aligned 10 m world grid covering every grid's footprint plus ``pad`` metres."""
    feet = np.array([g.footprint_albers() for g in grids])
    left, bottom = feet[:, 0].min() - pad, feet[:, 1].min() - pad
    right, top = feet[:, 2].max() + pad, feet[:, 3].max() + pad
    ox, oy = origin
    c0 = math.floor((left - ox) / res)
    c1 = math.ceil((right - ox) / res)
    r0 = math.floor((oy - top) / res)
    r1 = math.ceil((oy - bottom) / res)
    return WorldGrid(ox + c0 * res, oy - r0 * res, res, (r1 - r0, c1 - c0))
