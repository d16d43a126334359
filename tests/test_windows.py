"""Reading lattice windows across tile stacks, the StackReader, and the VRT mosaic."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import stack_sources as S
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from mapper.bands import STACK_BANDS
from mapper.errors import InputError
from mapper.stack import build_stack
from mapper.vrt import VrtBand, VrtSource, write_vrt, write_vrt_file
from mapper.windows import StackReader, read_window

BIG_TILE, SMALL_TILES = S.BIG_TILE, S.SMALL_TILES


@pytest.fixture(scope="module")
def built(stack_sources: dict, small_stacks: dict[str, Path],
          tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Stacks of the four 64 px tiles and the data of the 128 px tile that holds them."""
    root = tmp_path_factory.mktemp("windows")
    r64, r128 = stack_sources["r64"], stack_sources["r128"]
    s2, dem, climate = stack_sources["s2"], stack_sources["dem"], stack_sources["climate"]
    big = build_stack(r128, BIG_TILE, [s2], dem, climate, root / f"big_{BIG_TILE}.tif")
    with rasterio.open(big) as ds:
        big_data = ds.read()
    return {"root": root, "small": small_stacks, "big": big_data, "r64": r64, "r128": r128}


def _big_window(built: dict, col: int, row: int, width: int, height: int) -> Window:
    """A window given relative to the big tile's upper-left corner, in lattice coordinates."""
    tw = built["r128"].lattice.tile_window(BIG_TILE)
    return Window(tw.col_off + col, tw.row_off + row, width, height)


def test_window_across_four_tiles_equals_the_single_big_tile(built: dict) -> None:
    lattice = built["r64"].lattice
    win = _big_window(built, 20, 37, 80, 70)  # crosses both tile borders
    assert len(lattice.tiles_in_window(win)) == 4
    got = read_window(built["small"], lattice, win)
    assert got.shape == (19, 70, 80) and got.dtype == np.float32
    np.testing.assert_array_equal(got, built["big"][:, 37:107, 20:100])


def test_window_outside_the_stacks_is_nan(built: dict) -> None:
    lattice = built["r64"].lattice
    win = _big_window(built, -10, 100, 40, 50)  # west of the tiles and below them
    got = read_window(built["small"], lattice, win, bands=["elevation", "twi"])
    assert got.shape == (2, 50, 40)
    assert np.isnan(got[:, :, :10]).all() and np.isnan(got[:, 28:, :]).all()
    expected = built["big"][[STACK_BANDS.index("elevation"), STACK_BANDS.index("twi")]]
    np.testing.assert_array_equal(got[:, :28, 10:], expected[:, 100:128, 0:30])
    with pytest.raises(ValueError, match="unknown stack band"):
        read_window(built["small"], lattice, win, bands=["ndvi"])


def test_stack_reader_reuses_files_and_survives_pickling(built: dict) -> None:
    lattice = built["r64"].lattice
    rng = np.random.default_rng(0)
    with StackReader(built["small"], lattice, max_open=2) as reader:
        for _ in range(12):
            col, row = rng.integers(-8, 100, size=2)
            win = _big_window(built, int(col), int(row), 32, 32)
            got = reader.read(win, bands=["s2_red", "slope"])
            ref = np.full((2, 32, 32), np.nan, dtype=np.float32)
            c0, r0 = max(col, 0), max(row, 0)
            c1, r1 = min(col + 32, 128), min(row + 32, 128)
            sel = [STACK_BANDS.index("s2_red"), STACK_BANDS.index("slope")]
            ref[:, r0 - row : r1 - row, c0 - col : c1 - col] = built["big"][sel, r0:r1, c0:c1]
            np.testing.assert_array_equal(got, ref)
            assert len(reader._open) <= 2
        clone = pickle.loads(pickle.dumps(reader))
        win = _big_window(built, 50, 50, 30, 30)
        np.testing.assert_array_equal(clone.read(win), reader.read(win))
        clone.close()
    assert not reader._open


def test_stack_reader_shared_by_threads(built: dict) -> None:
    from concurrent.futures import ThreadPoolExecutor

    lattice = built["r64"].lattice
    offsets = [(c, r) for c in range(0, 96, 12) for r in range(0, 96, 24)]
    with StackReader(built["small"], lattice, max_open=1) as reader:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda cr: reader.read(_big_window(built, *cr, 32, 32)), offsets))
    for (c, r), arr in zip(offsets, got, strict=True):
        np.testing.assert_array_equal(arr, built["big"][:, r : r + 32, c : c + 32])


def test_reader_refuses_stacks_of_another_lattice(built: dict) -> None:
    wrong = built["r128"].lattice  # stacks are 64 px tiles
    with pytest.raises(InputError, match="is not tile .* of the lattice"):
        read_window({BIG_TILE: built["small"][SMALL_TILES[0]]}, wrong, wrong.tile_window(BIG_TILE))


def test_vrt_opens_in_rasterio_and_equals_read_window(built: dict) -> None:
    lattice = built["r64"].lattice
    # three of the four tiles: the fourth's place is NaN in both
    stacks = {t: built["small"][t] for t in SMALL_TILES[:3]}
    vrt = write_vrt(stacks, built["root"] / "mosaic.vrt")
    with rasterio.open(vrt) as ds:
        assert ds.crs.to_epsg() == 3338 and ds.res == (10.0, 10.0)
        assert list(ds.descriptions) == STACK_BANDS and np.isnan(ds.nodata)
        assert ds.shape == (128, 128) and ds.tags()["MAPPER_SYNTHETIC"] == "true"
        assert tuple(ds.bounds) == built["r128"].lattice.tile_bounds(BIG_TILE)
        whole = ds.read()
        part = ds.read(window=Window(30, 20, 90, 100))
    expected = read_window(stacks, lattice, _big_window(built, 0, 0, 128, 128))
    np.testing.assert_array_equal(whole, expected)
    assert np.isnan(whole[:, 64:, 64:]).all()
    np.testing.assert_array_equal(part, expected[:, 20:120, 30:120])
    assert "relativeToVRT=\"1\"" in vrt.read_text()


def test_vrt_refuses_stacks_off_the_lattice(built: dict, tmp_path: Path) -> None:
    src = built["small"][SMALL_TILES[0]]
    shifted = tmp_path / "shifted.tif"
    with rasterio.open(src) as ds:
        profile = ds.profile
        t = ds.transform
        profile["transform"] = rasterio.Affine(t.a, t.b, t.c + 5.0, t.d, t.e, t.f)
        with rasterio.open(shifted, "w", **profile) as out:
            out.write(ds.read())
            out.descriptions = ds.descriptions
    with pytest.raises(InputError, match="not aligned"):
        write_vrt([src, shifted], tmp_path / "bad.vrt")
    assert not (tmp_path / "bad.vrt").exists()


@pytest.mark.parametrize("change", ["nodata", "dtype", "bands"])
def test_vrt_refuses_a_tile_unlike_the_first(built: dict, tmp_path: Path, change: str) -> None:
    """A VRT has one data type, nodata and band list: a tile that differs (another version's,
    copied in by hand) is one error naming it and the first tile, and no VRT."""
    first, second = built["small"][SMALL_TILES[0]], built["small"][SMALL_TILES[1]]
    odd = tmp_path / second.name
    with rasterio.open(second) as ds:
        profile, data, names = ds.profile, ds.read(), ds.descriptions
    if change == "nodata":
        profile["nodata"] = -9999.0
    elif change == "dtype":
        profile["dtype"], data = "float64", data.astype("float64")
    else:
        profile["count"], data, names = 1, data[:1], names[:1]
    with rasterio.open(odd, "w", **profile) as out:
        out.write(data)
        out.descriptions = names
    with pytest.raises(InputError) as caught:
        write_vrt([first, odd], tmp_path / "bad.vrt")
    assert str(caught.value).startswith(
        f"{odd}: CRS, pixel size, bands, data type or nodata differ from {first}; ")
    assert not (tmp_path / "bad.vrt").exists()


def test_vrt_of_class_tiles_keeps_their_nodata_and_colours(tmp_path: Path) -> None:
    paths = []
    for k, (left, top) in enumerate([(S.LEFT, S.TOP), (S.LEFT + 640.0, S.TOP - 640.0)]):
        path = tmp_path / f"class_{k}.tif"
        profile = dict(driver="GTiff", width=64, height=64, count=1, dtype="uint8",
                       crs="EPSG:3338", transform=rasterio.Affine(10, 0, left, 0, -10, top),
                       nodata=255)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(np.full((1, 64, 64), k + 1, dtype=np.uint8))
            ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 0, 255, 255)})
        paths.append(path)
    with rasterio.open(write_vrt(paths, tmp_path / "classes.vrt")) as ds:
        assert ds.nodata == 255 and ds.dtypes[0] == "uint8" and ds.shape == (128, 128)
        data = ds.read(1)
        assert ds.colormap(1)[1] == (255, 0, 0, 255)
    assert (data[:64, :64] == 1).all() and (data[64:, 64:] == 2).all()
    assert (data[:64, 64:] == 255).all() and (data[64:, :64] == 255).all()


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32606", "EPSG:3035", "EPSG:3338"])
def test_vrt_file_stacks_its_sources_in_gdals_axis_order(tmp_path: Path, crs: str) -> None:
    """Two single-band files on one grid stacked by the VRT writer read back as the files; the
    SRS says, as GDAL's own VRT of such a file does, that the geotransform is x first (longitude,
    easting) where the CRS names latitude or northing first (EPSG:4326, EPSG:3035)."""
    transform = Affine(0.001, 0.0, -150.02, 0.0, -0.0005, 64.01) if crs == "EPSG:4326" \
        else Affine(20.0, 0.0, 399_000.0, 0.0, -20.0, 7_100_000.0)
    rng = np.random.default_rng(3)
    paths = []
    for k in range(2):
        path = tmp_path / f"band{k}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=40, height=30, count=1,
                           dtype="uint16", crs=crs, transform=transform, nodata=0) as ds:
            ds.write(rng.integers(1, 5000, (1, 30, 40), dtype="uint16"))
        paths.append(path)
    vrt = write_vrt_file(
        tmp_path / "bands.vrt", width=40, height=30, crs=CRS.from_user_input(crs),
        transform=transform, dtype="uint16",
        bands=[VrtBand([VrtSource(str(p), 1, 40, 30)], nodata=0) for p in paths],
    )
    with rasterio.open(vrt) as ds:
        assert ds.count == 2 and ds.transform == transform and ds.nodata == 0
        assert ds.crs == CRS.from_user_input(crs)
        for k, path in enumerate(paths):
            with rasterio.open(path) as src:
                np.testing.assert_array_equal(ds.read(k + 1), src.read(1))
    rasterio.shutil.copy(paths[0], tmp_path / "gdal.vrt", driver="VRT")
    srs = [re.search(r"<SRS[^>]*>", p.read_text()).group(0) for p in (vrt, tmp_path / "gdal.vrt")]
    assert srs[0] == srs[1]
