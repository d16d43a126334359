"""Stack stage on tiny synthetic sources: contract, seamlessness across tile sizes, analytic
terrain, empty tiles, clear errors, and agreement with gdalwarp."""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import stack_sources as S
from rasterio.windows import Window

from mapper.bands import STACK_BANDS
from mapper.cli import main
from mapper.config import load_config, load_region
from mapper.errors import ConfigError, InputError
from mapper.ground import grid_convergence, ground_frame
from mapper.stack import build_stack, stack_settings

BIG_TILE, SMALL_TILES = S.BIG_TILE, S.SMALL_TILES


@pytest.fixture(scope="module")
def src(stack_sources: dict) -> dict:
    """The SYNTHETIC sources and the regions t64 and t128 (tests/conftest.py), read only."""
    return stack_sources


@pytest.fixture(scope="module")
def stacks(src: dict, small_stacks: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The 128 px tile (built in strips of 32 rows) and its four 64 px tiles."""
    out = tmp_path_factory.mktemp("stacks")
    big = build_stack(
        src["r128"], BIG_TILE, [src["s2"]], src["dem"], src["climate"],
        out / f"128_{BIG_TILE}.tif", strip_px=32,
    )
    return {"big": big, "small": small_stacks}


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def test_stack_follows_the_contract(src: dict, stacks: dict) -> None:
    lattice = src["r128"].lattice
    with rasterio.open(stacks["big"]) as ds:
        assert ds.count == 19 and list(ds.descriptions) == STACK_BANDS
        assert ds.crs.to_epsg() == 3338 and ds.res == (10.0, 10.0)
        assert tuple(ds.bounds) == lattice.tile_bounds(BIG_TILE)
        assert ds.shape == (128, 128) and set(ds.dtypes) == {"float32"}
        assert math.isnan(ds.nodata)
        assert ds.tags()["MAPPER_TILE"] == BIG_TILE
        assert ds.tags()["MAPPER_EMPTY"] == "false" and ds.tags()["MAPPER_SYNTHETIC"] == "true"
        assert ds.profile["compress"] == "deflate" and ds.block_shapes[0] == (128, 128)
        assert ds.units[STACK_BANDS.index("elevation")] == "m"
        data = ds.read()
    assert not list(stacks["big"].parent.glob(".*.tmp"))
    # every band has data; the cloud-gap hole is NaN in S2 only
    assert all(np.isfinite(b).any() for b in data)
    s2_gap = np.isnan(data[0])
    assert 0 < s2_gap.mean() < 0.2 and np.isfinite(data[9][s2_gap]).all()
    refl = data[:9][np.isfinite(data[:9])]
    assert refl.min() > 0 and refl.max() < 1  # DN / 1e4
    clim = {n: data[STACK_BANDS.index(n)] for n in ("precip_annual", "summer_warmth", "jan_tmin")}
    assert 250 < np.nanmean(clim["precip_annual"]) < 400  # selected by description, not order
    assert -30 < np.nanmean(clim["jan_tmin"]) < -25


def test_stacks_are_identical_for_two_tile_sizes(stacks: dict) -> None:
    big = _read(stacks["big"])
    mosaic = np.full_like(big, np.nan)
    for k, tile in enumerate(SMALL_TILES):
        r, c = divmod(k, 2)
        mosaic[:, r * 64 : (r + 1) * 64, c * 64 : (c + 1) * 64] = _read(stacks["small"][tile])
    for i, name in enumerate(STACK_BANDS):
        assert np.array_equal(big[i], mosaic[i], equal_nan=True), f"band {name} differs"
    assert np.isfinite(big[STACK_BANDS.index("twi")]).all()


def test_plane_dem_gives_analytic_slope_aspect_and_zero_tpi(src: dict, tmp_path: Path) -> None:
    out = build_stack(
        src["r64"], SMALL_TILES[0], [src["s2"]], src["plane"], src["climate"], tmp_path / "p.tif"
    )
    data = _read(out)
    band = {n: data[i] for i, n in enumerate(STACK_BANDS)}
    assert np.nanmax(np.abs(band["slope"] - math.degrees(math.atan(0.1)))) < 0.01
    # rises to grid east: faces grid west, 270 degrees from grid north; the band is from true
    # north by default, so 270 plus the meridian convergence at each pixel (+4.4 degrees here)
    left, bottom, right, top = src["r64"].lattice.tile_bounds(SMALL_TILES[0])
    x, y = np.meshgrid(np.arange(left + 5, right, 10.0), np.arange(top - 5, bottom, -10.0))
    convergence = grid_convergence(x, y)
    assert 4.0 < convergence.mean() < 4.8
    assert np.nanmax(np.abs(band["aspect"] - (270.0 + convergence))) < 0.05
    assert np.nanmax(np.abs(band["tpi"])) < 1e-3
    assert np.nanmax(np.abs(band["curvature"])) < 1e-4
    assert np.isfinite(band["slope"]).all()
    with rasterio.open(out) as ds:
        assert ds.tags()["MAPPER_ASPECT_FROM"] == "true_north"
        assert ds.tags()["MAPPER_DEM_RESAMPLING"] == "cubic"
        assert ds.tags()["MAPPER_DISTANCES"] == "ground"
    # from grid north (a region whose aspect_from is grid_north, as the demo's): 270 itself
    region = src["r64"]

    def variant(name: str, **stack: str) -> dict[str, np.ndarray]:
        changed = replace(region, settings={**region.settings, "stack": {
            **region.settings["stack"], **stack}})
        out = build_stack(changed, SMALL_TILES[0], [src["s2"]], src["plane"], src["climate"],
                          tmp_path / f"{name}.tif")
        return {n: b for n, b in zip(STACK_BANDS, _read(out), strict=True)}

    grid_north = variant("g", aspect_from="grid_north")
    assert np.nanmax(np.abs(grid_north["aspect"] - 270.0)) < 0.05  # rises to the east: faces west
    # in the grid's metres (the demo's distances): the same DEM, the gradient without the ground
    # frame, so tan(slope) differs by |J.T (1, 0)| = hypot(k cos g, -h sin g) at every pixel
    grid = variant("m", distances="grid")
    frame = ground_frame(x, y)
    scale = np.hypot(frame.a, frame.b)
    ratio = np.tan(np.radians(band["slope"].astype(np.float64))) / np.tan(
        np.radians(grid["slope"].astype(np.float64)))
    assert np.nanmax(np.abs(ratio - scale)) < 2e-5
    assert np.nanmin(np.abs(scale - 1.0)) > 2e-4  # k is not 1 here
    assert np.nanmax(np.abs(grid["aspect"] - (270.0 + convergence))) < 0.05


def test_tile_at_sea_is_written_empty(src: dict, tmp_path: Path) -> None:
    out = build_stack(
        src["r64"], S.OCEAN_TILE_64, [src["s2"]], src["dem"], src["climate"], tmp_path / "sea.tif"
    )
    with rasterio.open(out) as ds:
        assert ds.tags()["MAPPER_EMPTY"] == "true" and ds.count == 19
        assert np.isnan(ds.read()).all()


def test_missing_sentinel2_band_names_the_file(src: dict, tmp_path: Path) -> None:
    bad = S.write_sentinel2(
        tmp_path / "no_b11.tif", codes=[c for c in S.S2_CODES if c != "B11"] + ["B8A"]
    )
    out = tmp_path / "out.tif"
    with pytest.raises(InputError, match="no_b11.tif.*B11"):
        build_stack(src["r64"], SMALL_TILES[0], [bad], src["dem"], src["climate"], out)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_several_sentinel2_files_mosaic_first_valid_wins(
    src: dict, stacks: dict, tmp_path: Path
) -> None:
    tile = SMALL_TILES[0]
    ref = _read(stacks["small"][tile])
    # a per-tile composite on the lattice, float reflectance, s2_* descriptions, with a gap;
    # brighter than file 2 by 0.01 everywhere, so that which file a pixel came from shows
    composite = ref[:9] + np.float32(0.01)
    composite[:, 40:, :] = np.nan
    lattice = src["r64"].lattice
    comp_path = tmp_path / "composite.tif"
    profile = dict(driver="GTiff", width=64, height=64, count=9, dtype="float32",
                   crs="EPSG:3338", transform=lattice.tile_transform(tile), nodata=float("nan"))
    with rasterio.open(comp_path, "w", **profile) as ds:
        ds.write(composite)
        for i, name in enumerate(STACK_BANDS[:9], start=1):
            ds.set_band_description(i, name.upper())
    full = S.write_sentinel2(tmp_path / "nogap.tif", hole=False)
    out = build_stack(src["r64"], tile, [comp_path, full], src["dem"], src["climate"],
                      tmp_path / "m.tif")
    got = _read(out)[:9]
    np.testing.assert_array_equal(got[:, :40], composite[:, :40])  # from the composite, unchanged
    nogap = build_stack(src["r64"], tile, [full], src["dem"], src["climate"], tmp_path / "n.tif")
    np.testing.assert_array_equal(got[:, 40:], _read(nogap)[:9, 40:])  # the rest from file 2
    assert np.isfinite(got).all()


def test_sentinel2_digital_numbers_without_a_nodata_tag_keep_0_as_nodata(
    src: dict, stacks: dict, tmp_path: Path
) -> None:
    """An L2A GeoTIFF whose nodata tag was lost (a GDAL translate without -a_nodata, a VRT): its
    DN 0 is L2A's NO_DATA, not black ground; the stack is the same as from the tagged file."""
    tagged = S.write_sentinel2(tmp_path / "tagged.tif")  # DN 0 at sea and in a hole
    untagged = tmp_path / "untagged.tif"
    with rasterio.open(tagged) as ds:
        profile, data, names = ds.profile, ds.read(), ds.descriptions
    with rasterio.open(untagged, "w", **{**profile, "nodata": None}) as out:
        out.write(data)
        out.scales = [1e-4] * len(names)  # as the tagged file declares it
        for i, name in enumerate(names, start=1):
            out.set_band_description(i, name)
    tile = src["r64"].lattice.tile_of_xy(S.LEFT + 900, S.TOP - 700)  # the hole's tile
    stacked = [_read(build_stack(src["r64"], tile, [path], src["dem"], src["climate"],
                                 tmp_path / f"stack_{path.stem}.tif"))
               for path in (tagged, untagged)]  # fmt: skip
    assert np.isnan(stacked[0][:9]).any()  # the hole is in this tile
    np.testing.assert_array_equal(stacked[1], stacked[0])


def _split_climate(src: dict, folder: Path, described: bool, files: int) -> list[Path]:
    """The fixture's climate as ``files`` rasters (3 x 1 band or 1 x 3 bands), stack band order."""
    with rasterio.open(src["climate"]) as ds:
        profile, data, names = ds.profile, ds.read(), list(ds.descriptions)
    order = [names.index(n) for n in ("precip_annual", "summer_warmth", "jan_tmin")]
    groups = [[k] for k in order] if files == 3 else [order]
    paths = []
    for g, bands in enumerate(groups):
        path = folder / f"climate_{described}_{g}.tif"
        with rasterio.open(path, "w", **{**profile, "count": len(bands)}) as out:
            out.write(data[bands])
            if described:
                for i, b in enumerate(bands, start=1):
                    out.set_band_description(i, names[b])
        paths.append(path)
    return paths


def test_climate_from_one_or_three_files_named_or_in_order(
    src: dict, stacks: dict, tmp_path: Path
) -> None:
    tile = SMALL_TILES[2]
    clim = [STACK_BANDS.index(n) for n in ("precip_annual", "summer_warmth", "jan_tmin")]
    ref = _read(stacks["small"][tile])[clim]
    for described, files in [(False, 1), (False, 3), (True, 3)]:
        climate = _split_climate(src, tmp_path, described, files)
        out = build_stack(src["r64"], tile, [src["s2"]], [src["dem"]], climate,
                          tmp_path / f"c_{described}_{files}.tif")
        np.testing.assert_array_equal(_read(out)[clim], ref)
    two = _split_climate(src, tmp_path, True, 3)[:2]
    with pytest.raises(InputError, match="no climate band described \\['jan_tmin'\\]"):
        build_stack(src["r64"], tile, [src["s2"]], src["dem"], two, tmp_path / "x.tif")


def test_a_source_file_is_near_when_the_stacks_read_it(src: dict, tmp_path: Path) -> None:
    """A DEM file chosen to cover the stacked tiles (a context tile lies up to a tile beyond the
    crops' reach, and its DEM halo beyond that) is accepted; one beyond every stack's read is
    one error naming it."""
    from mapper.raster import write_geotiff
    from mapper.stack import _check_sources, _stacks_read

    region = src["r64"]
    left, bottom, right, top = region.area().bounds
    reach = (region.context_px + 1) * region.lattice.res
    read = _stacks_read(region)
    assert read[2] > right + reach + 200  # a band beyond the crops' reach that a stack reads

    def dem_at(x0: float, name: str) -> Path:
        transform = rasterio.Affine(10.0, 0.0, x0, 0.0, -10.0, (bottom + top) / 2 + 100)
        write_geotiff(tmp_path / name, np.full((1, 20, 20), 100.0, "float32"), transform,
                      "EPSG:3338", nodata=-9999.0)
        return tmp_path / name

    near = dem_at(read[2] - 150, "near.tif")  # beyond the reach, inside a context tile's halo
    _check_sources(region, [src["s2"]], [near], [src["climate"]])
    far = dem_at(read[2] + 10, "far.tif")
    with pytest.raises(InputError, match=f"^{far}: its extent .* does not overlap region t64"):
        _check_sources(region, [src["s2"]], [far], [src["climate"]])


def test_stack_settings_are_checked_when_the_config_is_read(tmp_path: Path) -> None:
    """A stack section that cannot work with the tile size fails when the config is read (a dry
    run names it), with the region file, the key and the fix."""
    bad_nest = S.write_config(tmp_path, {"hydro_block_px": 96, "hydro_halo_px": 8})
    with pytest.raises(ConfigError, match=r"t64\.yaml: key 'stack\.hydro_block_px' \(96\) and "
                       r"tile_px \(64\) must nest.*divisor or multiple of 64"):
        load_config(bad_nest)
    small_halo = S.write_config(tmp_path, {"halo_px": 4, "tpi_radius_m": 100.0})
    with pytest.raises(ConfigError, match=r"t64\.yaml: key 'stack\.halo_px' \(4\).*at least 10"):
        load_config(small_halo)
    region = load_region(load_config(S.write_config(tmp_path)), "t64")
    settings = stack_settings(region)
    assert (settings.halo_px, settings.hydro_block_px, settings.res) == (16, 128, 10.0)


@pytest.mark.slow
def test_sentinel2_warp_matches_gdalwarp(src: dict, stacks: dict, gdalwarp: str,
                                         tmp_path: Path) -> None:
    left, bottom, right, top = src["r128"].lattice.tile_bounds(BIG_TILE)
    out = tmp_path / "gdalwarp.tif"
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "PROJ_DATA", "GDAL_DATA")}
    cmd = [gdalwarp, "-q", "-overwrite", "-t_srs", "EPSG:3338", "-tr", "10", "10",
           "-te", *map(str, (left, bottom, right, top)), "-r", "bilinear", "-et", "0",
           "-wo", "XSCALE=1", "-wo", "YSCALE=1", "-ot", "Float32", "-srcnodata", "0",
           "-dstnodata", "nan", str(src["s2"]), str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=120)
    with rasterio.open(out) as ds:
        ref = ds.read().astype(np.float64) / 1e4  # native order B02..B12
    native = {code: i for i, code in enumerate(S.S2_CODES)}
    from mapper.bands import S2_BANDS

    ref = ref[[native[code] for _, code in S2_BANDS]]
    got = _read(stacks["big"])[:9].astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    diff = float(np.nanmax(np.abs(got - ref)))
    print(f"max |stack - gdalwarp| over the S2 bands: {diff:.3g} reflectance")
    assert diff < 1e-6


def test_cli_stack_and_vrt(src: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli" / f"{SMALL_TILES[1]}.tif"
    rc = main(["stack", "--config", str(src["config"]), "--region", "t64", "--tile",
               SMALL_TILES[1], "--sentinel2", str(src["s2"]), "--dem", str(src["dem"]),
               "--climate", str(src["climate"]), "--out", str(out)])
    assert rc == 0 and out.exists()
    vrt = tmp_path / "cli" / "all.vrt"
    assert main(["stack-vrt", "--out", str(vrt), str(out)]) == 0
    with rasterio.open(vrt) as ds, rasterio.open(out) as tif:
        assert list(ds.descriptions) == STACK_BANDS
        assert np.array_equal(ds.read(window=Window(0, 0, 64, 64)), tif.read(), equal_nan=True)
    nocrs = tmp_path / "cli" / "nocrs.tif"  # a stack whose CRS was lost (copied by hand)
    with rasterio.open(out) as ds:
        data, profile, names = ds.read(), ds.profile, ds.descriptions
    with rasterio.open(nocrs, "w", **{**profile, "crs": None}) as dst:
        dst.write(data)
        dst.descriptions = names
    again = tmp_path / "cli" / "again.vrt"
    capsys.readouterr()
    assert main(["stack-vrt", "--out", str(again), str(out), str(nocrs)]) == 1
    err = capsys.readouterr().err
    assert f"error: {nocrs}: has no coordinate reference system; " in err
    assert "Traceback" not in err and not again.exists()
    rc = main(["stack", "--config", str(src["config"]), "--region", "t64", "--tile", "nope",
               "--sentinel2", str(src["s2"]), "--dem", str(src["dem"]),
               "--climate", str(src["climate"]), "--out", str(out)])
    assert rc == 1
