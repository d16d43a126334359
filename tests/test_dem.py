"""The DEM window a tile's stack reads (mapper.dem.dem_window), against the union of the windows
the stack actually warps (strips with their halo, hydrology blocks with theirs); no file at all
is nodata. The warp of several cells is tested in tests/test_sources_cells.py."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from mapper.dem import dem_window, grow, hydro_blocks, warp_dem
from mapper.grid import Lattice


def union(windows: list[Window]) -> Window:
    c0 = min(w.col_off for w in windows)
    r0 = min(w.row_off for w in windows)
    c1 = max(w.col_off + w.width for w in windows)
    r1 = max(w.row_off + w.height for w in windows)
    return Window(c0, r0, c1 - c0, r1 - r0)


@pytest.mark.parametrize(
    ("tile_px", "halo", "block", "hydro_halo", "tile"),
    [
        (4096, 32, 1024, 512, "R0150C0230"),  # alaska: blocks inside the tile
        (256, 32, 1024, 64, "R0005C0007"),  # a block larger than the tile
        (256, 200, 256, 64, "R0000C0000"),  # the terrain halo wider than the hydrology one
    ],
)
def test_dem_window_covers_every_read_of_the_stack(tile_px, halo, block, hydro_halo, tile) -> None:  # noqa: ANN001
    lattice = Lattice(-2_600_000.0, 2_600_000.0, 10.0, tile_px)
    tile_window = lattice.tile_window(tile)
    strips = [Window(tile_window.col_off, tile_window.row_off + r, tile_px, min(512, tile_px - r))
              for r in range(0, tile_px, 512)]  # fmt: skip
    reads = [grow(s, halo) for s in strips]
    reads += [grow(b, hydro_halo) for b in hydro_blocks(lattice, tile_window, block)]
    assert dem_window(lattice, tile, halo, block, hydro_halo) == union(reads)


def test_no_file_is_nodata() -> None:
    lattice = Lattice(-2_600_000.0, 2_600_000.0, 10.0, 256)
    z = warp_dem([], lattice, Window(0, 0, 8, 4))
    assert z.shape == (4, 8) and z.dtype == np.float32 and np.isnan(z).all()
