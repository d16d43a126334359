"""Joining rasters on one grid (mapper.gridjoin): which files are joined, the first file winning
where they overlap, nodata not drawn, and files on other grids left apart. Tiny rasters here;
the elevation cells in their real layouts are in tests/test_sources_cells.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from mapper.gridjoin import joined_on_grids
from mapper.raster import write_geotiff

RES = 0.01


def raster(path: Path, west: float, north: float, value: float, shape=(10, 10),
           res: float = RES, nodata: float | None = -9999.0, hole: tuple | None = None) -> Path:  # noqa: ANN001
    data = np.full(shape, value, dtype=np.float32)
    if hole is not None:
        data[hole] = nodata
    write_geotiff(path, data, Affine(res, 0, west, 0, -res, north), "EPSG:4326", nodata=nodata)
    return path


def test_files_on_one_grid_are_joined_first_wins(tmp_path: Path) -> None:
    a = raster(tmp_path / "a.tif", 10.0, 50.1, 1.0, hole=np.s_[:5, 3:8])  # 5:8 over b
    b = raster(tmp_path / "b.tif", 10.05, 50.1, 2.0)  # overlaps a's east half
    c = raster(tmp_path / "c.tif", 10.1, 50.1, 3.0)  # adjacent to a, overlapping b
    with joined_on_grids([a, b, c]) as joined:
        assert len(joined) == 1 and joined[0].suffix == ".vrt"
        with rasterio.open(joined[0]) as ds:
            assert (ds.width, ds.height) == (20, 10)
            assert ds.transform.c == 10.0 and ds.transform.f == 50.1
            z = ds.read(1)
    assert (z[5:, :10] == 1).all() and (z[:5, :3] == 1).all() and (z[:5, 8:10] == 1).all()
    assert np.isnan(z[:5, 3:5]).all()  # a's nodata where no file lies beneath: NaN
    assert (z[:5, 5:8] == 2).all()  # a's nodata over b: b shows through
    assert (z[:, 10:15] == 2).all() and (z[:, 15:] == 3).all()  # b over c where both
    assert not joined[0].exists()  # the VRT lives only in the with block


def test_files_on_other_grids_stay_apart(tmp_path: Path) -> None:
    a = raster(tmp_path / "a.tif", 10.0, 50.1, 1.0)
    half = raster(tmp_path / "half.tif", 10.005, 50.1, 2.0)  # half a pixel off
    coarse = raster(tmp_path / "coarse.tif", 10.0, 50.1, 3.0, res=0.02)
    with joined_on_grids([a, half, coarse]) as joined:
        assert joined == [a, half, coarse]


def test_files_on_both_sides_of_180_are_joined_across_it(tmp_path: Path) -> None:
    east = raster(tmp_path / "east.tif", 179.9, 51.1, 1.0)  # 179.9 .. 180.0
    west = raster(tmp_path / "west.tif", -180.0, 51.1, 2.0)  # -180.0 .. -179.9
    with joined_on_grids([east, west]) as joined:
        assert len(joined) == 2 and joined[1] == west
        with rasterio.open(joined[0]) as ds:
            assert ds.bounds.left == 179.9 and abs(ds.bounds.right - 180.1) < 1e-9
            z = ds.read(1)
    assert (z[:, :10] == 1).all() and (z[:, 10:] == 2).all()
