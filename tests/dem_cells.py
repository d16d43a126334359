"""Elevation cells in the real layouts of USGS 3DEP 1" and 2" and Copernicus GLO-30, for tests.

The files have the real names, sizes, pixel spacings, georeferencing, CRS, data type and nodata
of the services (mapper/sources/cells.py states them); only the values are SYNTHETIC: a plane in
longitude/latitude (:func:`surface`), which bilinear interpolation reproduces exactly, so any
warp of them can be checked point by point against the formula. DEFLATE (level 1, predictor 3)
keeps a 3612 x 3612 float32 3DEP cell (52 MB raw) at a few MB.

- 3DEP: ``USGS_1_{n}{w}.tif`` (NORTH-WEST corner, lowercase), 3612 x 3612 px of 1/3600 degree
  with 6 px of overlap on every side, EPSG:4269, float32, nodata -999999; served at
  ``/StagedProducts/Elevation/1/TIFF/current/{n}{w}/USGS_1_{n}{w}.tif``.
- 3DEP 2" (Alaska only): ``USGS_2_{n}{w}_{date}.tif``, named as the 1" files with the date of
  the version (the National Map's file lists name only these dated files, under ``historical/``),
  at 2/3600 degree with 6 px of overlap on every side (1812 x 1812 px: the 1" layout at twice the
  spacing, its size not confirmed here), served at
  ``/StagedProducts/Elevation/2/TIFF/historical/{n}{w}/USGS_2_{n}{w}_{date}.tif``.
- GLO-30: ``Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM.tif`` (SOUTH-WEST corner, uppercase), 3600
  rows, 3600/2400/1800/1200 columns below 50/60/70/80 N, pixel centres on the cell's edges (the
  file reaches half a pixel past its north and west edges), EPSG:4326, float32, no nodata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from mapper.sources.cells import Cell

THREEDEP_TEMPLATE = "/StagedProducts/Elevation/1/TIFF/current/{n}{w}/USGS_1_{n}{w}.tif"
THREEDEP2_TEMPLATE = (
    "/StagedProducts/Elevation/2/TIFF/historical/{n}{w}/USGS_2_{n}{w}_{date}.tif"
)
GLO30_TEMPLATE = (
    "/Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM/Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM.tif"
)
THREEDEP_NODATA = -999999.0
ARCSEC = 1.0 / 3600.0

# the plane: 1000 m at (148 W, 64 N), rising 1000 m per degree north and 450 m per degree west, so
# that it stays within the land surface's range (mapper.dem.LOWEST_ELEVATION_M to
# HIGHEST_ELEVATION_M, outside which values are fills) at every cell the tests write: 85 m
# (Fairbanks) to 8915 m (N70W150), 2400 m across 180 degrees at 51 N
Z0, DZ_DLAT, DZ_DLON = 1000.0, 1000.0, -450.0


def surface(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The synthetic elevation (m) at longitude/latitude (degrees), float64. East longitudes are
    taken as west of -180 (the Aleutians west of 180 degrees), so the plane is continuous across
    180 degrees."""
    lon = np.asarray(lon, dtype=np.float64)
    lon = np.where(lon > 0, lon - 360.0, lon)
    return Z0 + DZ_DLAT * (np.asarray(lat) - 64.0) + DZ_DLON * (lon + 148.0)


def glo30_columns(south: int) -> int:
    """Columns of a GLO-30 cell by the latitude of its south edge (northern hemisphere)."""
    return 3600 if south < 50 else 2400 if south < 60 else 1800 if south < 70 else 1200


def _write(path: Path, transform: Affine, width: int, height: int, crs: str,
           nodata: float | None, hole: tuple[float, float] | None = None) -> Path:
    lon = transform.c + (np.arange(width) + 0.5) * transform.a
    lat = transform.f + (np.arange(height) + 0.5) * transform.e
    z = surface(lon[None, :], lat[:, None]).astype(np.float32)
    if hole is not None:  # nodata north-east of (lon, lat): a lake, say
        z[np.ix_(lat > hole[1], lon > hole[0])] = nodata
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1,
               "dtype": "float32", "crs": crs, "transform": transform, "nodata": nodata,
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "zlevel": 1, "predictor": 3}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(z, 1)
    return path


def write_3dep(folder: Path, cell: Cell, hole: tuple[float, float] | None = None) -> Path:
    """The 3DEP 1" file of ``cell`` at ``folder`` + its path on the service; returns the file."""
    w, s, _, n = cell.bounds()
    transform = Affine(ARCSEC, 0.0, w - 6 * ARCSEC, 0.0, -ARCSEC, n + 6 * ARCSEC)
    path = folder / THREEDEP_TEMPLATE.format(**cell.fields()).lstrip("/")
    return _write(path, transform, 3612, 3612, "EPSG:4269", THREEDEP_NODATA, hole)


def write_3dep2(folder: Path, cell: Cell, date: str = "20210404") -> Path:
    """The 3DEP 2" file of ``cell`` dated ``date`` at ``folder`` + its path on the service;
    returns the file."""
    w, s, _, n = cell.bounds()
    step = 2 * ARCSEC
    transform = Affine(step, 0.0, w - 6 * step, 0.0, -step, n + 6 * step)
    path = folder / THREEDEP2_TEMPLATE.format(**cell.fields(), date=date).lstrip("/")
    return _write(path, transform, 1812, 1812, "EPSG:4269", THREEDEP_NODATA)


def write_glo30(folder: Path, cell: Cell) -> Path:
    """The GLO-30 file of ``cell`` at ``folder`` + its path on the service; returns the file."""
    w, s, _, n = cell.bounds()
    cols = glo30_columns(cell.south)
    dx, dy = 1.0 / cols, 1.0 / 3600
    transform = Affine(dx, 0.0, w - dx / 2, 0.0, -dy, n + dy / 2)
    path = folder / GLO30_TEMPLATE.format(**cell.fields()).lstrip("/")
    return _write(path, transform, cols, 3600, "EPSG:4326", None)


def serve(server, root: Path, files: list[Path]) -> None:  # noqa: ANN001 - LoopbackServer
    """Serve ``files`` (written under ``root``) at their paths relative to ``root``."""
    for f in files:
        server.add_file("/" + f.relative_to(root).as_posix(), f.read_bytes())
