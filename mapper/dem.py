"""The DEM a tile's stack reads: which lattice window (the tile and its halos), and its warp.

A stack derives local terrain (slope, aspect, curvature, TPI) from the DEM read with
``stack.halo_px`` around each strip of the tile, and flow accumulation (TWI, SPI) on fixed
lattice-aligned hydrology blocks of ``stack.hydro_block_px`` read with ``stack.hydro_halo_px``
around them (see :mod:`mapper.stack`). :func:`dem_window` is the rectangle all those reads fall
in: what the workflow fetches elevation cells for (:mod:`mapper.sources.cells`). :func:`warp_dem`
is the one warp of the DEM files onto a lattice window: metres, float32, NaN nodata, cubic by
default (the region's ``stack.dem_resampling``).

Cubic, not bilinear: the elevation sources are coarser than the 10 m lattice (3DEP 1 arc-second is
about 31 x 13 m in Alaska, GLO-30 30 m), and bilinear upsampling leaves flat facets with creases
along the source grid, which the second derivatives see. On a smooth hill (a Gaussian of sigma
800 m, 200 m high) given on a 1 arc-second grid near Fairbanks, the maximal curvature of the
warped DEM against the hill's own: RMS error 9.1e-5 /m bilinear, 1.1e-6 /m cubic, for a signal of
1.6e-4 /m RMS. Cubic reproduces a plane exactly, as bilinear does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from mapper.errors import InputError
from mapper.grid import Lattice
from mapper.gridjoin import joined_on_grids
from mapper.raster import files_named, open_raster, reading
from mapper.warp import warp_lattice_window

RESAMPLING = {"cubic": Resampling.cubic, "bilinear": Resampling.bilinear}
"""The values of ``stack.dem_resampling``."""

LOWEST_ELEVATION_M = -1000.0
"""Below every land surface (the Dead Sea's shore, the lowest, lies at about -430 m): a DEM value
under it is a fill value its file does not declare as nodata (-9999, -32768, -3.4e38 are common),
which would otherwise be warped as an elevation into the terrain of every pixel near it."""
HIGHEST_ELEVATION_M = 9000.0
"""Above every land surface (Everest 8849 m; Denali 6190 m): a DEM value over it is a fill value
too (32767 of int16 files, +3.4e38)."""


@dataclass(frozen=True)
class CellProducts:
    """Elevation cells served by several products (a cells source's ``url_template`` and its
    ``fallback_templates``, :mod:`mapper.sources.cells`), in the source's order: per product, its
    rasters and the cells they serve, as ``(south, west)`` degrees of each cell's south-west
    corner. :func:`warp_dem` gives each pixel the value of the product that serves the cell the
    pixel lies in."""

    products: tuple[tuple[tuple[Path, ...], frozenset[tuple[int, int]]], ...]

    @property
    def paths(self) -> list[Path]:
        return [p for paths, _ in self.products for p in paths]


def _naming_the_file(exc: InputError, path: Path, paths: list[Path]) -> InputError:
    """A warp's error about ``path``, a temporary VRT joining some of ``paths``, about the file
    of ``paths`` that GDAL's reason names (by its base name, "<name>, band"), which the user can
    re-fetch; about ``path`` itself when that is one of ``paths``."""
    text = str(exc)
    if path in paths or not text.startswith(f"{path}: "):
        return exc
    named = files_named(text, paths)
    which = named[0] if len(named) == 1 else f"one of {', '.join(map(str, paths))}"
    return InputError(which + text[len(str(path)):])


def warp_dem(dem: Sequence[Path] | CellProducts, lattice: Lattice, window: Window,
             resampling: str = "cubic") -> np.ndarray:
    """The DEM (metres, float32, NaN nodata) warped onto a lattice window (``resampling``: a key
    of :data:`RESAMPLING`).

    Cells of several products (:class:`CellProducts`): each product is warped on its own, and a
    pixel takes the value of the product that serves its cell (where that has none, the first
    product with a value). Not simply the first product's pixels wherever it has any: its files
    reach past their cells (3DEP's by 6 px), and within a few pixels of where they stop its
    kernel is cut by their edge, so the pixel would be interpolated from one side only
    (0.14 m off on a plane of the tests, against 0.0001 m). The owner of a pixel is a function of
    the pixel, the same in every tile.

    Files on one grid (adjacent elevation cells, the tiles of one product) are joined before they
    are warped (:func:`mapper.gridjoin.joined_on_grids`), so there is no seam between them: a pixel
    near the edge of two cells is interpolated from both. Groups on different grids form a mosaic:
    for each pixel the first group (in the order of the files) with a value wins. No file at all
    (a tile whose cells are all sea) is all nodata.
    """
    if isinstance(dem, CellProducts):
        if len(dem.products) > 1:
            return _warp_products(dem, lattice, window, resampling)
        dem = dem.paths
    paths = list(dem)
    if not paths:
        return np.full((int(window.height), int(window.width)), np.nan, dtype=np.float32)
    out = None
    with joined_on_grids(paths) as joined:
        for path in joined:
            try:
                z = warp_lattice_window(path, lattice.crs, lattice.transform, window,
                                        RESAMPLING[resampling], indexes=[1])[0]
            except InputError as exc:
                raise _naming_the_file(exc, path, paths) from None
            if out is None:
                out = z
            else:
                gaps = np.isnan(out)
                out[gaps] = z[gaps]
            if not np.isnan(out).any():
                break
    _refuse_fill_values(out, paths, lattice, window)
    return out


def _refuse_fill_values(z: np.ndarray, paths: Sequence[Path], lattice: Lattice,
                        window: Window) -> None:
    """One :class:`InputError` naming the file and the fix if the warp of ``paths`` onto
    ``window`` holds values outside :data:`LOWEST_ELEVATION_M` .. :data:`HIGHEST_ELEVATION_M`
    (undeclared fill values); the files are read only then, and only where they meet the
    window."""
    if not (np.isfinite(z).any() and _off_land(np.nanmin(z), np.nanmax(z))):
        return
    span = f"{LOWEST_ELEVATION_M:g} to {HIGHEST_ELEVATION_M:g} m"
    for path in paths:
        fill, declared = _undeclared_fill(path, lattice, window)
        if fill is None:
            continue
        if declared is None:
            said = "declares no nodata value"
            fix = (f"declare the fill value as nodata (e.g. rio edit-info --nodata {fill:g} "
                   f"{path}) and run the stack again")
        else:
            said = f"declares nodata {declared:g} but holds another fill value"
            # not a new nodata: the cells of the declared one would then read as elevations
            fix = (f"write those cells as the declared nodata (rio calc \"(where (== (read 1) "
                   f"{fill:g}) {declared:g} (read 1))\" {path} <fixed.tif>) and pass that file")
        raise InputError(
            f"{path}: holds elevations of {fill:g} m, outside any land surface ({span}): the "
            f"file {said}; {fix}"
        )
    raise InputError(  # the warp reached beyond them with no file that does (not expected)
        f"{', '.join(map(str, paths))}: the warped DEM reaches {np.nanmin(z):g} to "
        f"{np.nanmax(z):g} m, outside any land surface ({span}); check the files' nodata values"
    )


def _off_land(low: float, high: float) -> bool:
    return bool(low < LOWEST_ELEVATION_M or high > HIGHEST_ELEVATION_M)


def _undeclared_fill(path: Path, lattice: Lattice,
                     window: Window) -> tuple[float | None, float | None]:
    """A value outside any land surface in the part of ``path`` that meets the lattice
    ``window`` (grown by 3 lattice pixels and 4 source pixels, the reach of the warp's kernel
    whether it shrinks or enlarges the source; None if none there), read a strip of rows at a
    time, and the file's declared nodata."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    with open_raster(path) as src, reading(path, "re-fetch it, or rebuild it if a stage made it"):
        bounds = transform_bounds(lattice.crs, src.crs, *lattice.window_bounds(grow(window, 3)),
                                  densify_pts=21)
        part = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
        col0, row0 = max(int(part.col_off) - 4, 0), max(int(part.row_off) - 4, 0)
        col1 = min(int(part.col_off + part.width) + 4, src.width)
        row1 = min(int(part.row_off + part.height) + 4, src.height)
        for r in range(row0, row1, FILL_SCAN_ROWS):
            strip = Window(col0, r, max(col1 - col0, 0), min(FILL_SCAN_ROWS, row1 - r))
            values = src.read(1, window=strip, masked=True).compressed()
            off = values[(values < LOWEST_ELEVATION_M) | (values > HIGHEST_ELEVATION_M)]
            if off.size:
                low, high = float(off.min()), float(off.max())
                return (low if low < LOWEST_ELEVATION_M else high), src.nodata
        return None, src.nodata


FILL_SCAN_ROWS = 512
"""Rows of a DEM file read at a time when looking for its fill value (error path only)."""


def _warp_products(dem: CellProducts, lattice: Lattice, window: Window,
                   resampling: str) -> np.ndarray:
    """:func:`warp_dem` of cells from several products: each pixel from its cell's product."""
    layers = [warp_dem(list(paths), lattice, window, resampling) for paths, _ in dem.products]
    owner = cell_owner(lattice, window, [cells for _, cells in dem.products])
    out = np.full(layers[0].shape, np.nan, dtype=np.float32)
    for k, z in enumerate(layers):
        take = (owner == k) & np.isfinite(z)
        out[take] = z[take]
    for z in layers:  # no value from the cell's product (a hole, a sea cell): the first with one
        gaps = np.isnan(out)
        out[gaps] = z[gaps]
    return out


OWNER_STRIP_PX = 512
"""Rows of pixel centres taken to longitude/latitude at a time by :func:`cell_owner`."""


def cell_owner(lattice: Lattice, window: Window,
               cells: Sequence[frozenset[tuple[int, int]]]) -> np.ndarray:
    """int8 per pixel of ``window``: the index of the first of ``cells`` (sets of ``(south,
    west)`` cell corners) that holds the pixel's centre in NAD83 longitude/latitude, -1 for
    none."""
    from pyproj import Transformer

    lut = np.full((180, 360), -1, dtype=np.int8)  # (south + 90, west + 180)
    for k, held in reversed(list(enumerate(cells))):  # the first product wins a shared cell
        for south, west in held:
            lut[south + 90, west + 180] = k
    to_lonlat = Transformer.from_crs(lattice.crs, "EPSG:4269", always_xy=True)
    height, width = int(window.height), int(window.width)
    left, _, _, top = lattice.window_bounds(window)
    x = left + (np.arange(width) + 0.5) * lattice.res
    owner = np.empty((height, width), dtype=np.int8)
    for r0 in range(0, height, OWNER_STRIP_PX):
        rows = min(OWNER_STRIP_PX, height - r0)
        y = top - (r0 + np.arange(rows) + 0.5) * lattice.res
        lon, lat = to_lonlat.transform(*np.broadcast_arrays(x[None, :], y[:, None]))
        south = np.clip(np.floor(lat).astype(np.int64), -90, 89) + 90
        west = np.mod(np.floor(lon).astype(np.int64) + 180, 360)
        owner[r0:r0 + rows] = lut[south, west]
    return owner


def dem_window(
    lattice: Lattice, tile_id: str, halo_px: int, hydro_block_px: int, hydro_halo_px: int
) -> Window:
    """The lattice window of DEM the stack of ``tile_id`` reads (global lattice pixels): the tile
    grown by ``halo_px`` (local terrain) and every hydrology block (``hydro_block_px``, aligned
    to the lattice) meeting the tile grown by ``hydro_halo_px`` (flow accumulation), as one
    rectangle; the settings of :class:`mapper.stack.StackSettings`. The workflow finds the
    elevation cells a tile needs from it (:mod:`mapper.sources.cells`)."""
    row, col = lattice.parse(tile_id)
    p, b = lattice.tile_px, hydro_block_px
    tile = (row * p, col * p, (row + 1) * p, (col + 1) * p)  # r0, c0, r1, c1
    blocks = (tile[0] // b * b, tile[1] // b * b, -(-tile[2] // b) * b, -(-tile[3] // b) * b)
    h, hh = halo_px, hydro_halo_px
    r0, c0 = min(tile[0] - h, blocks[0] - hh), min(tile[1] - h, blocks[1] - hh)
    r1, c1 = max(tile[2] + h, blocks[2] + hh), max(tile[3] + h, blocks[3] + hh)
    return Window(c0, r0, c1 - c0, r1 - r0)


def grow(window: Window, px: int) -> Window:
    """``window`` with ``px`` pixels more on every side."""
    return Window(
        window.col_off - px, window.row_off - px, window.width + 2 * px, window.height + 2 * px
    )


def hydro_blocks(lattice: Lattice, window: Window, block_px: int) -> list[Window]:
    """The lattice-aligned hydrology blocks (global lattice windows) that meet ``window``."""
    r0 = math.floor(window.row_off / block_px)
    r1 = math.ceil((window.row_off + window.height) / block_px)
    c0 = math.floor(window.col_off / block_px)
    c1 = math.ceil((window.col_off + window.width) / block_px)
    return [
        Window(c * block_px, r * block_px, block_px, block_px)
        for r in range(r0, r1)
        for c in range(c0, c1)
    ]
