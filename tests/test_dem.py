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


def test_the_warped_dem_keeps_the_curvature_of_the_ground(tmp_path) -> None:  # noqa: ANN001
    """A smooth hill given on a 1 arc-second grid (3DEP's) and warped onto the 10 m lattice: its
    maximal curvature is the hill's own to 2 % RMS. (Bilinear upsampling left facets whose creases
    made 58 % of it.)"""
    from affine import Affine
    from pyproj import Transformer

    from mapper import terrain
    from mapper.raster import write_geotiff

    lattice = Lattice(-2_600_000.0, 2_600_000.0, 10.0, 512)
    step, lon0, lat0 = 1 / 3600, -147.8, 64.9
    lon, lat = np.meshgrid(lon0 + (np.arange(360) + 0.5) * step,
                           lat0 - (np.arange(180) + 0.5) * step)
    to_albers = Transformer.from_crs(4269, 3338, always_xy=True)
    x, y = to_albers.transform(lon, lat)
    cx, cy = float(np.mean(x)), float(np.mean(y))

    def hill(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 200.0 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 800.0**2))

    dem = tmp_path / "dem_1as.tif"
    write_geotiff(dem, hill(x, y)[None].astype(np.float32), Affine(step, 0, lon0, 0, -step, lat0),
                  "EPSG:4269", nodata=-9999)  # fmt: skip
    col = int((cx - 1500 - lattice.origin_x) // 10)
    row = int((lattice.origin_y - (cy + 1500)) // 10)
    jj, ii = np.meshgrid(np.arange(300), np.arange(300))
    exact = hill(lattice.origin_x + (col + jj + 0.5) * 10, lattice.origin_y - (row + ii + 0.5) * 10)
    warped = warp_dem([dem], lattice, Window(col, row, 300, 300))
    inner = (slice(12, -12), slice(12, -12))
    truth = terrain.max_curvature(exact, 10.0)[inner]
    error = terrain.max_curvature(warped, 10.0)[inner] - truth
    assert np.sqrt(np.mean(error**2)) < 0.02 * np.sqrt(np.mean(truth**2))


def test_a_damaged_file_joined_with_its_neighbour_is_named(tmp_path) -> None:  # noqa: ANN001
    """Two adjacent DEM files on one grid are warped as one temporary VRT: a damaged block in
    one is an error naming that file, not the VRT (deleted by the time the user reads it)."""
    import rasterio
    from affine import Affine
    from damage import zero_blocks

    from mapper.errors import InputError

    lattice = Lattice(-2_600_000.0, 2_600_000.0, 10.0, 256)
    paths = []
    for i in range(2):
        path = tmp_path / f"dem{i}.tif"
        z = np.full((256, 256), 100.0 + i, np.float32)
        with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=1,
                           dtype="float32", crs="EPSG:3338", nodata=-9999.0, tiled=True,
                           blockxsize=128, blockysize=128, compress="deflate",
                           transform=Affine(30.0, 0, 240_000.0 + 7680.0 * i, 0, -30.0,
                                            1_650_000.0)) as dst:
            dst.write(z, 1)
        paths.append(path)
    damaged = zero_blocks(paths[1], tmp_path / "dem1_damaged.tif")
    window = Window(284_100, 95_050, 1200, 500)  # over both files
    assert np.isfinite(warp_dem(paths, lattice, window)).all()
    with pytest.raises(InputError) as exc:
        warp_dem([paths[0], damaged], lattice, window)
    text = str(exc.value)
    assert text.startswith(f"{damaged}: damaged or truncated raster, read failed while warping (")
    assert "mapper-mosaic" not in text and text.endswith("; re-fetch the file")
