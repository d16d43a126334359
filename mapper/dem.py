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
from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from mapper.grid import Lattice
from mapper.gridjoin import joined_on_grids
from mapper.raster import warp_lattice_window

RESAMPLING = {"cubic": Resampling.cubic, "bilinear": Resampling.bilinear}
"""The values of ``stack.dem_resampling``."""


def warp_dem(paths: list[Path], lattice: Lattice, window: Window,
             resampling: str = "cubic") -> np.ndarray:
    """The DEM (metres, float32, NaN nodata) warped onto a lattice window (``resampling``: a key
    of :data:`RESAMPLING`).

    Files on one grid (adjacent elevation cells, the tiles of one product) are joined before they
    are warped (:func:`mapper.gridjoin.joined_on_grids`), so there is no seam between them: a pixel
    near the edge of two cells is interpolated from both. Groups on different grids form a mosaic:
    for each pixel the first group (in the order of the files) with a value wins. No file at all
    (a tile whose cells are all sea) is all nodata.
    """
    if not paths:
        return np.full((int(window.height), int(window.width)), np.nan, dtype=np.float32)
    out = None
    with joined_on_grids(paths) as joined:
        for path in joined:
            z = warp_lattice_window(path, lattice.crs, lattice.transform, window,
                                    RESAMPLING[resampling], indexes=[1])[0]
            if out is None:
                out = z
            else:
                gaps = np.isnan(out)
                out[gaps] = z[gaps]
            if not np.isnan(out).any():
                break
    return out


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
