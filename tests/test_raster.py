"""Warps onto the lattice: a pixel's value does not depend on the window it was warped in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window
from scipy.ndimage import gaussian_filter

from mapper.errors import InputError
from mapper.warp import WARP_BLOCK_PX, warp_lattice_window, warp_to_grid

LATTICE = Affine(10.0, 0.0, -2_600_000.0, 0.0, -10.0, 2_600_000.0)
ROW0, COL0 = 95_232, 284_160  # a square of the demo area, on 512 px tile corners
SIDE = 2048


@pytest.fixture(scope="module")
def coarse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SYNTHETIC climate-like normals as the demo's: 3 bands on a 1 km EPSG:3338 grid whose origin
    is off the 10 m lattice, upsampled 100x by the warp (where a per-window warp gave another
    float32 at a few pixels in a million)."""
    path = tmp_path_factory.mktemp("raster") / "coarse.tif"
    rng = np.random.default_rng(0)
    data = np.stack([
        mean + sd * gaussian_filter(rng.standard_normal((26, 25)), 2)
        for mean, sd in ((1750.0, 150.0), (400.0, 80.0), (-25.0, 3.0))
    ]).astype("float32")  # fmt: skip
    transform = Affine(1000.0, 0.0, 239_371.0, 0.0, -1000.0, 1_650_371.0)
    with rasterio.open(path, "w", driver="GTiff", width=25, height=26, count=3, dtype="float32",
                       crs="EPSG:3338", transform=transform, nodata=-9999.0) as dst:
        dst.write(data)
        dst.update_tags(MAPPER_SYNTHETIC="true")
    return path


def mosaic(path: Path, tile: int, exact: bool) -> np.ndarray:
    """The square warped tile by tile (``tile`` px) and put back together."""
    out = np.empty((3, SIDE, SIDE), dtype=np.float32)
    for r in range(0, SIDE, tile):
        for c in range(0, SIDE, tile):
            win = Window(COL0 + c, ROW0 + r, tile, tile)
            if exact:
                part = warp_lattice_window(path, "EPSG:3338", LATTICE, win)
            else:
                t = LATTICE @ Affine.translation(win.col_off, win.row_off)
                part = warp_to_grid(path, "EPSG:3338", t, (tile, tile))
            out[:, r:r + tile, c:c + tile] = part
    return out


@pytest.mark.slow
def test_a_pixel_has_one_value_whatever_the_window(coarse: Path) -> None:
    whole = warp_lattice_window(coarse, "EPSG:3338", LATTICE, Window(COL0, ROW0, SIDE, SIDE))
    assert whole.shape == (3, SIDE, SIDE) and np.isfinite(whole).all()
    for tile in (64, 256, 512):  # smaller and larger than a block
        np.testing.assert_array_equal(mosaic(coarse, tile, exact=True), whole, err_msg=str(tile))
    # a haloed window, off the blocks on every side, as the terrain covariates read the DEM
    halo = 37
    grown = Window(COL0 - halo, ROW0 - halo, SIDE + 2 * halo, SIDE + 2 * halo)
    inner = warp_lattice_window(coarse, "EPSG:3338", LATTICE, grown)[:, halo:-halo, halo:-halo]
    np.testing.assert_array_equal(inner, whole)


def test_blocked_warp_agrees_with_a_warp_of_the_whole_extent(coarse: Path) -> None:
    """Cutting into blocks changes GDAL's arithmetic only, far below the data's precision."""
    whole = warp_lattice_window(coarse, "EPSG:3338", LATTICE, Window(COL0, ROW0, SIDE, SIDE))
    plain = mosaic(coarse, SIDE, exact=False)
    assert np.abs(whole.astype(np.float64) - plain).max() <= 1e-6 * np.abs(plain).max()
    assert WARP_BLOCK_PX < SIDE


def _geographic(path: Path, south: float, north: float) -> Path:
    """SYNTHETIC elevations on a 0.0001 degree grid (about 4.7 x 11 m at 64.5 N, finer than the
    10 m lattice, as 3DEP 1/3" is) from ``south`` to ``north``, lon -147.6 to -147.5: the same
    grid and values wherever two files overlap, with a short wave that the kernel's width
    smooths."""
    step = 0.0001
    rows, cols = round((north - south) / step), 1000
    lat = north - (np.arange(rows) + 0.5) * step
    lon = -147.6 + (np.arange(cols) + 0.5) * step
    z = (300 + 50 * np.sin(lat[:, None] * 20_000) * np.cos(lon[None, :] * 9_000)).astype("float32")
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=1,
                       dtype="float32", crs="EPSG:4269", nodata=-9999.0,
                       transform=Affine(step, 0, -147.6, 0, -step, north)) as dst:
        dst.write(z, 1)
    return path


def test_a_fine_geographic_source_warps_alike_whatever_files_hold_it(tmp_path: Path) -> None:
    """A pixel's kernel follows from the pixel, not from the files joined for its tile: the
    source pixel narrows northward, and measured at the file's centre (64.55 N for one file,
    64.75 N for a taller one of the same grid) it gave another XSCALE, and other elevations."""
    from pyproj import Transformer
    from rasterio.enums import Resampling

    short = _geographic(tmp_path / "short.tif", 64.5, 64.6)
    tall = _geographic(tmp_path / "tall.tif", 64.5, 65.0)
    x, y = Transformer.from_crs(4269, 3338, always_xy=True).transform(-147.55, 64.55)
    col, row = ~LATTICE @ (x, y)
    window = Window(int(col) - 64, int(row) - 64, 128, 128)
    a = warp_lattice_window(short, "EPSG:3338", LATTICE, window, Resampling.cubic)
    b = warp_lattice_window(tall, "EPSG:3338", LATTICE, window, Resampling.cubic)
    assert np.isfinite(a).all()
    # GDAL's arithmetic over two source extents leaves a float32 step (3e-5 m) at a few pixels;
    # the file-centre scale gave 0.17 m at nearly every pixel
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


def test_a_damaged_source_names_the_file(coarse: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.tif"
    bad.write_bytes(coarse.read_bytes()[:600])
    with pytest.raises(InputError, match=r"cut\.tif: .*(damaged or truncated)"):
        warp_lattice_window(bad, "EPSG:3338", LATTICE, Window(COL0, ROW0, 64, 64))


def test_a_missing_source_is_named_as_missing_not_as_damaged(tmp_path: Path) -> None:
    missing = tmp_path / "not made yet.tif"
    with pytest.raises(InputError) as err:
        warp_lattice_window(missing, "EPSG:3338", LATTICE, Window(COL0, ROW0, 64, 64))
    assert str(err.value) == (f"{missing}: not found; check the path, or make the file first "
                              "(the workflow's target that writes it)")


FILL_TO = """
import resource, signal, sys
import numpy as np
from affine import Affine
from mapper.errors import InputError
from mapper.raster import write_geotiff
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit, side, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
data = np.random.default_rng(0).random((3, side, side), dtype=np.float32)
try:
    write_geotiff(out, data, Affine(10, 0, 0, 0, -10, 0), "EPSG:3338", nodata=float("nan"))
except InputError as exc:
    print(exc)
"""


@pytest.mark.parametrize("side", [16, 1024], ids=["written-at-close", "written-block-by-block"])
def test_a_geotiff_that_does_not_fit_on_the_disk_is_one_error_and_no_file(
        tmp_path: Path, side: int) -> None:
    """No file may grow beyond 2 kB (RLIMIT_FSIZE, as a full disk): a raster GDAL writes block by
    block fails in a write, a small one when GDAL closes it, which rasterio does not report.
    Either is one error naming the file and the fix, and no file (a Sentinel-2 composite, a
    predicted tile, a demo source: every writer of mapper.raster.write_geotiff)."""
    import subprocess
    import sys

    out = tmp_path / "out" / "composite.tif"
    run = subprocess.run([sys.executable, "-c", FILL_TO, "2000", str(side), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stdout.startswith(f"{out}: write failed ("), run.stdout
    assert run.stdout.rstrip().endswith(f"; free disk space in {out.parent} (or make that folder "
                                        "writable) and run the same target again")
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_an_s3_asset_of_a_public_bucket_is_read_without_credentials(
        coarse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A STAC asset given as ``s3://bucket/key`` is read through GDAL's /vsis3/; a public bucket
    needs no credentials (here a bucket on the loopback server, path-style, over HTTP)."""
    from httpserver import LoopbackServer
    from s3_bucket import Bucket

    from mapper.raster import GDAL_HTTP_ENV
    from mapper.sources.s2_items import gdal_path

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(coarse.parent / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(coarse.parent / "none"))
    with LoopbackServer() as server:
        Bucket(server, "sentinel-cogs").put("tiles/B04.tif", coarse.read_bytes())
        endpoint = server.url("/").removeprefix("http://").rstrip("/")
        with rasterio.Env(**GDAL_HTTP_ENV, AWS_S3_ENDPOINT=endpoint, AWS_HTTPS="NO",
                          AWS_VIRTUAL_HOSTING="FALSE"):
            with rasterio.open(gdal_path("s3://sentinel-cogs/tiles/B04.tif")) as src, \
                    rasterio.open(coarse) as ref:
                np.testing.assert_array_equal(src.read(), ref.read())


def test_a_file_whose_bands_declare_other_nodata_has_each_bands_holes(tmp_path: Path) -> None:
    """Climate normals joined with ``gdalbuildvrt -separate`` from files with their own nodata
    (-9999, none, -32768), each with its own hole: each band warps as its file alone does, not
    with band 1's nodata for all (which warped -32768 into band 3's neighbours)."""
    import os
    import subprocess

    from conftest import system_tool

    transform = Affine(1000.0, 0.0, 239_371.0, 0.0, -1000.0, 1_650_371.0)
    files = []
    for i, nodata in enumerate((-9999.0, None, -32768.0)):
        data = np.full((26, 25), 10.0 * (i + 1), np.float32)
        data[8 + i:12 + i, 8:12] = nodata if nodata is not None else 5.0
        path = tmp_path / f"band{i}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=25, height=26, count=1,
                           dtype="float32", crs="EPSG:3338", transform=transform,
                           nodata=nodata) as dst:
            dst.write(data, 1)
        files.append(path)
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "PROJ_DATA", "GDAL_DATA")}
    vrt = tmp_path / "normals.vrt"
    subprocess.run([system_tool("gdalbuildvrt", "gdal-bin"), "-q", "-separate", str(vrt),
                    *map(str, files)], check=True, env=env, capture_output=True, timeout=120)
    with rasterio.open(vrt) as src:
        assert src.nodatavals == (-9999.0, None, -32768.0)
    window = Window(284_500, 95_500, 1024, 1024)  # the holes and around them
    got = warp_lattice_window(vrt, "EPSG:3338", LATTICE, window, band_nodata=True)
    each = np.concatenate([warp_lattice_window(f, "EPSG:3338", LATTICE, window, band_nodata=True)
                           for f in files])
    np.testing.assert_array_equal(got, each)
    assert np.isnan(got[2]).any() and np.nanmin(got[2]) == 30.0  # the hole, and no -32768
    assert np.nanmin(got[1]) == 5.0  # no nodata declared: its 5s are data
