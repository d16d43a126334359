"""Warps of source rasters onto the lattice, made so that a pixel's value does not depend on how
the lattice is cut into tiles.

GDAL's default approximate transformer (0.125 px error) and its per-chunk kernel scaling both make a
tile's pixels depend on the tile's extent. We warp through ``WarpedVRT`` with ``tolerance=1e-9``
(exact transformer) and the warper options ``XSCALE``/``YSCALE`` fixed at the nominal ratio of
destination to source resolution (never per window: per source in :func:`warp_to_grid`, per
fixed lattice block in :func:`warp_lattice_window`). ``gdalwarp -et 0 -wo XSCALE=.. -wo YSCALE=..``
does the same. What remains depends on the extent only in GDAL's arithmetic (about 1e-12,
relative); :func:`warp_lattice_window` removes that too by warping fixed blocks of the lattice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from mapper.errors import InputError
from mapper.raster import check_crs, gdal_reason, open_raster

NOMINAL_SCALE_SNAP = 0.02
"""Measured resolution ratios within this fraction of 1 count as equal resolution (scale 1)."""


def nominal_scale(src_res: float, dst_res: float) -> float:
    """GDAL's XSCALE/YSCALE for a warp from ``src_res`` to ``dst_res`` (same units).

    GDAL's factor is destination pixels per source pixel: 0.5 for a 5 m DEM onto 10 m (the kernel
    widens to cover the source pixels), capped at 1 for equal resolution and for upsampling.
    ``src_res`` is measured in the destination CRS, so a 10 m UTM pixel measures 9.99-10.01 m in
    Alaska Albers (map scale factors): ratios within :data:`NOMINAL_SCALE_SNAP` of 1 are snapped to
    1, so that a 10 m source onto the 10 m lattice warps exactly as ``gdalwarp -wo XSCALE=1``.
    """
    if dst_res <= 0:
        return 1.0
    ratio = src_res / dst_res
    if ratio >= 1.0 - NOMINAL_SCALE_SNAP:
        return 1.0
    return round(ratio, 3)


def _source_res_in_dst_units(src: rasterio.DatasetReader, dst_crs: CRS,
                             at: tuple[float, float] | None = None) -> float:
    """Approximate size of one source pixel in the destination CRS: at the destination point
    ``at`` (x, y in ``dst_crs``), else at the source's centre."""
    from rasterio.warp import transform as transform_xy

    left, bottom, right, top = src.bounds
    cx, cy = (left + right) / 2, (bottom + top) / 2
    if at is not None:
        (sx,), (sy,) = transform_xy(dst_crs, src.crs, [at[0]], [at[1]])
        if math.isfinite(sx) and math.isfinite(sy):
            cx, cy = sx, sy
    rx, ry = abs(src.transform.a), abs(src.transform.e)
    xs, ys = transform_xy(src.crs, dst_crs, [cx, cx + rx, cx], [cy, cy, cy + ry])
    dx = float(np.hypot(xs[1] - xs[0], ys[1] - ys[0]))
    dy = float(np.hypot(xs[2] - xs[0], ys[2] - ys[0]))
    return float(np.sqrt(dx * dy))


def warp_to_grid(
    path: str | Path,
    dst_crs: str,
    dst_transform: Affine,
    dst_shape: tuple[int, int],
    resampling: Resampling = Resampling.bilinear,
    indexes: list[int] | None = None,
    src_nodata: float | None = None,
) -> np.ndarray:
    """Warp ``path`` to the grid ``(dst_transform, dst_shape)`` in ``dst_crs``; float32, NaN nodata.

    A pixel's value agrees with a warp of any other extent to about 1e-12 (relative), not always
    to the last float32 bit: see :func:`warp_lattice_window` for values that are exact.
    """
    with _open_for_warp(path) as src:
        crs, scale = _warp_grid_settings(src, dst_crs, abs(dst_transform.a))
        return _warp_open(src, path, crs, scale, dst_transform, dst_shape, resampling, indexes,
                          src_nodata)


WARP_BLOCK_PX = 128
"""Side of the fixed blocks of the lattice that :func:`warp_lattice_window` warps one by one."""


def warp_lattice_window(
    path: str | Path,
    dst_crs: str,
    grid_transform: Affine,
    window: Window,
    resampling: Resampling = Resampling.bilinear,
    indexes: list[int] | None = None,
    src_nodata: float | None = None,
    block_px: int = WARP_BLOCK_PX,
    band_nodata: bool = False,
) -> np.ndarray:
    """Warp ``path`` onto ``window`` of a grid (``grid_transform``: the transform of the grid's
    pixel (0, 0), e.g. the lattice's); float32, NaN nodata, shape (bands, height, width).

    GDAL's warp arithmetic depends on the extent it is asked for: one pixel warped as part of
    two different extents differs by about 1e-12 (relative), and that rounds to another float32
    at about one pixel in a million (seen on the demo's climate, upsampled from 1 km). So each
    pixel is always computed as part of the same fixed block of the grid (``block_px`` square,
    aligned to pixel (0, 0)): the blocks meeting ``window`` are warped one by one and cut to it.
    A pixel's value is then a function of the pixel alone, whatever the tile size, strip or
    halo; the cost is the blocks' overhang at the window's edges. The source is opened once.
    Each block's XSCALE/YSCALE is the nominal ratio measured at the block's centre, not at the
    file's: a geographic source's pixel narrows northward (3DEP 1/3": 6.8 m at 64.5 N, 6.7 m at
    65 N), so a file's centre, which depends on the files joined for a tile, would make a
    pixel's kernel depend on the tile.

    GDAL counts a source pixel as nodata where all its bands are (its default for files whose
    bands all declare nodata), so a band's own hole is warped in as its fill value (-9999 into
    its neighbours). ``band_nodata`` makes each band's nodata its own (``UNIFIED_SRC_NODATA=NO``)
    for files whose bands miss different pixels; where they miss the same ones the default is
    kept (as ``gdalwarp`` does it: the two differ by a few pixels at the edge of a hole).
    """
    b = block_px
    row0, col0 = int(window.row_off), int(window.col_off)
    height, width = int(window.height), int(window.width)
    out = None
    with _open_for_warp(path) as src:
        crs = CRS.from_user_input(dst_crs)
        res = abs(grid_transform.a)
        for br in range(math.floor(row0 / b), math.ceil((row0 + height) / b)):
            for bc in range(math.floor(col0 / b), math.ceil((col0 + width) / b)):
                at = grid_transform @ ((bc + 0.5) * b, (br + 0.5) * b)  # the block's centre
                scale = nominal_scale(_source_res_in_dst_units(src, crs, at), res)
                block = _warp_open(
                    src, path, crs, scale, grid_transform @ Affine.translation(bc * b, br * b),
                    (b, b), resampling, indexes, src_nodata, band_nodata,
                )  # fmt: skip
                if out is None:
                    out = np.full((block.shape[0], height, width), np.nan, dtype=np.float32)
                r_lo, r_hi = max(br * b, row0), min((br + 1) * b, row0 + height)
                c_lo, c_hi = max(bc * b, col0), min((bc + 1) * b, col0 + width)
                out[:, r_lo - row0:r_hi - row0, c_lo - col0:c_hi - col0] = block[
                    :, r_lo - br * b:r_hi - br * b, c_lo - bc * b:c_hi - bc * b
                ]
    return out


@contextmanager
def _open_for_warp(path: str | Path) -> Iterator[rasterio.DatasetReader]:
    src = open_raster(path)
    try:
        check_crs(src, path)
        yield src
    finally:
        src.close()


def _warp_grid_settings(
    src: rasterio.DatasetReader, dst_crs: str, dst_res: float
) -> tuple[CRS, float]:
    """The destination CRS and the XSCALE/YSCALE of warps of ``src`` at ``dst_res``."""
    crs = CRS.from_user_input(dst_crs)
    return crs, nominal_scale(_source_res_in_dst_units(src, crs), dst_res)


def _warp_open(
    src: rasterio.DatasetReader,
    path: str | Path,
    crs: CRS,
    scale: float,
    dst_transform: Affine,
    dst_shape: tuple[int, int],
    resampling: Resampling,
    indexes: list[int] | None,
    src_nodata: float | None,
    band_nodata: bool = False,
) -> np.ndarray:
    """One WarpedVRT of the open ``src`` onto one grid (see the module docstring).

    A file whose bands declare different nodata (``gdalbuildvrt -separate`` of files with their
    own) is warped band by band, each opened alone (GDAL's ``vrt://<file>?bands=<i>``) with its
    own nodata, as its file alone would be: GDAL's warper, as rasterio sets it up, tests every
    band against one value, band 1's, which would warp the others' holes in as data."""
    bands = indexes or list(range(1, src.count + 1))
    if src_nodata is None and len({repr(src.nodatavals[i - 1]) for i in bands}) > 1:
        parts = []
        for i in bands:
            with rasterio.open(f"vrt://{src.name}?bands={i}") as one:
                parts.append(_warp_open(one, path, crs, scale, dst_transform, dst_shape,
                                        resampling, None, None, band_nodata))
        return np.concatenate(parts)
    nodata = src_nodata if src_nodata is not None else src.nodata
    vrt_opts: dict[str, object] = {"src_nodata": nodata} if nodata is not None else {}
    if band_nodata:
        vrt_opts["UNIFIED_SRC_NODATA"] = "NO"
    height, width = dst_shape
    try:
        with WarpedVRT(
            src,
            crs=crs,
            transform=dst_transform,
            width=width,
            height=height,
            resampling=resampling,
            tolerance=1e-9,
            nodata=np.nan,
            dtype="float32",
            XSCALE=scale,
            YSCALE=scale,
            **vrt_opts,
        ) as vrt:
            data = vrt.read(bands, masked=True)
    except RasterioIOError as exc:
        raise InputError(
            f"{path}: damaged or truncated raster, read failed while warping "
            f"({gdal_reason(exc)}); re-fetch the file"
        ) from None
    return np.ma.filled(data.astype("float32"), np.nan)
