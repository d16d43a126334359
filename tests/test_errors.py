"""Bad input across the commands: what the user sees.

Every bad input must end a command with ONE line ``error: <file>: <problem>; <fix>`` on stderr,
exit status 1, no traceback, and no partial output (nothing at the output path and no temporary
file beside it). An ocean tile is not bad input: it gives an empty stack and a nodata prediction.

Sources are the tiny SYNTHETIC ones of the stack tests (tests/stack_sources.py); stacks,
observations and the region are those of the training tests (tests/training_data.py); models are
demo-size MiSo checkpoints with random weights (what they predict does not matter here).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.shutil
import rasterio.warp
import stack_sources as S
import torch
import yaml
from affine import Affine
from damage import assert_one_write_failure, truncate, zero_blocks
from tiny_region import changed_copy

from mapper.bands import CLIMATE_BANDS, S2_BANDS, SOIL_ORDERS, STACK_BANDS
from mapper.cli import main
from mapper.config import load_config, load_region
from mapper.errors import CheckpointError
from mapper.grid import Lattice
from mapper.models.checkpoint import load_checkpoint, save_checkpoint
from mapper.models.config import ModelConfig
from mapper.models.miso import MiSo
from mapper.normalise import Normaliser
from mapper.raster import write_geotiff
from mapper.samples import read_observations

REPO = Path(__file__).resolve().parent.parent
TILE64 = "R1488C4440"  # a land tile of the stack sources' region t64


# -- helpers ------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str]:
    """Run ``python -m mapper <args>`` in this process; (exit status, the one error line)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err
    if rc == 0:
        assert not lines, err
        return rc, ""
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    return rc, lines[0]


def assert_nothing_written(out: Path) -> None:
    """No file at ``out`` and no temporary file beside it."""
    assert not out.exists(), f"{out} was written"
    if out.parent.exists():
        left = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")
                or p.name.endswith((".tmp", ".part"))]
        assert not left, f"temporary files left beside {out}: {left}"


def rewrite(src: Path, dest: Path, *, crs: object = "keep", transform: Affine | None = None,
            band_order: list[int] | None = None, descriptions: list[str] | None = None,
            tags: dict[str, str] | None = None) -> Path:
    """A copy of a raster with another CRS label, transform, band order or descriptions."""
    with rasterio.open(src) as ds:
        order = band_order or list(range(1, ds.count + 1))
        data = ds.read(order)
        profile = ds.profile
        names = descriptions or [ds.descriptions[i - 1] for i in order]
        old_tags = ds.tags()
    profile.update(count=len(order))
    if crs != "keep":
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    with rasterio.open(dest, "w", **profile) as dst:
        dst.write(data)
        for i, name in enumerate(names, start=1):
            if name:
                dst.set_band_description(i, name)
        dst.update_tags(**{**old_tags, **(tags or {})})
    return dest


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def src(stack_sources: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The stack tests' SYNTHETIC sources, whose region t64 predicts with a demo model, and a
    Cloud-Optimized copy of the Sentinel-2 file (``s2_cog``)."""
    cog = tmp_path_factory.mktemp("sources") / "sentinel2_cog.tif"
    rasterio.shutil.copy(str(stack_sources["s2"]), str(cog), driver="COG", COMPRESS="DEFLATE",
                         BLOCKSIZE=256)
    return {**stack_sources, "s2_cog": cog}


def stack_args(src: dict, out: Path, tile: str = TILE64, **over: Path) -> list:
    paths = {"s2": src["s2"], "dem": src["dem"], "climate": src["climate"], **over}
    return ["stack", "--config", src["config"], "--region", "t64", "--tile", tile,
            "--sentinel2", paths["s2"], "--dem", paths["dem"], "--climate", paths["climate"],
            "--out", out]


def demo_normalisation() -> dict:
    return Normaliser(lo=(0.0,) * 10, hi=(800.0,) + (1.0,) * 9, mean=(0.5,) * 10,
                      std=(0.2,) * 10).to_dict()


def demo_checkpoint(path: Path, task: str, size: str = "demo") -> Path:
    torch.manual_seed(0)
    n_out = 7 if task == "soilorder" else 1
    model = MiSo(ModelConfig.named(size), n_out=n_out)
    norm = demo_normalisation()
    classes = SOIL_ORDERS if task == "soilorder" else ["nsp"]
    return save_checkpoint(path, model, task=task, bands=STACK_BANDS, normalisation=norm,
                           classes=classes)


@pytest.fixture(scope="module")
def region(training_region: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The training tests' region (4 x 4 tiles of 64 px, SYNTHETIC stacks and observations, with
    prediction settings) and demo-size checkpoints of both tasks."""
    root = tmp_path_factory.mktemp("models")
    return {
        **training_region,
        "models": {t: demo_checkpoint(root / f"{t}.pt", t) for t in ("nsp", "soilorder")},
        "lattice": training_region["region"].lattice,
        "by_tile": {p.stem: p for p in training_region["stacks"]},
    }


def predict_args(region: dict, tile: str, stacks: dict[str, Path], out: Path,
                 task: str = "nsp", model: Path | None = None, config: Path | None = None
                 ) -> list:
    lat = region["lattice"]
    given = [stacks[t] for t in [tile, *lat.neighbours(tile)] if t in stacks]
    return ["predict", "--config", config or region["config"], "--region", "tiny", "--task", task,
            "--tile", tile, "--model", model or region["models"][task], "--batch-size", "8",
            "--out", out, "--no-progress", *given]


def samples_args(region: dict, out: Path, observations: Path | None = None,
                 stacks: dict[str, Path] | None = None, config: Path | None = None) -> list:
    return ["samples", "--config", config or region["config"], "--region", "tiny",
            "--observations", observations or region["observations"], "--out", out,
            *(stacks or region["by_tile"]).values()]


def inner_tile(region: dict) -> str:
    """A tile of the region with all 8 neighbours in the region."""
    lat, tiles = region["lattice"], set(region["by_tile"])
    return next(t for t in sorted(tiles) if all(n in tiles for n in lat.neighbours(t)))


def with_stack(region: dict, tmp: Path, tile: str, replacement: Path) -> dict[str, Path]:
    """The region's stacks with ``tile``'s replaced (copied under ``tmp/stack/<tile>.tif``)."""
    folder = tmp / "stack"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{tile}.tif"
    if replacement != dest:
        dest.write_bytes(replacement.read_bytes())
    return {**region["by_tile"], tile: dest}


# -- sources of the stack -----------------------------------------------------------------------


def test_stack_truncated_cog_source(src: dict, tmp_path: Path, capsys) -> None:
    """A download cut short: the header opens, the blocks the tile needs are missing."""
    bad = truncate(src["s2_cog"], tmp_path / "s2_cut.tif", 0.3)
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, s2=bad))
    assert rc == 1
    assert line.startswith(f"error: {bad}: ")
    assert "damaged or truncated" in line and "TIFFReadEncodedTile" in line
    assert "re-fetch" in line
    assert_nothing_written(out)


def test_stack_truncated_source_that_does_not_open(src: dict, tmp_path: Path, capsys) -> None:
    bad = truncate(src["dem"], tmp_path / "dem_cut.tif", 0.5)
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, dem=bad))
    assert rc == 1 and line.startswith(f"error: {bad}: cannot be read as a raster")
    assert "damaged or truncated" in line and "re-fetch" in line
    assert_nothing_written(out)


def test_stack_corrupt_source_blocks(src: dict, tmp_path: Path, capsys) -> None:
    bad = zero_blocks(src["s2_cog"], tmp_path / "s2_corrupt.tif")
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, s2=bad))
    assert rc == 1 and line.startswith(f"error: {bad}: ")
    assert "damaged or truncated" in line and "re-fetch" in line
    assert_nothing_written(out)


def test_stack_source_without_crs(src: dict, tmp_path: Path, capsys) -> None:
    bad = rewrite(src["dem"], tmp_path / "dem_nocrs.tif", crs=None)
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, dem=bad))
    assert rc == 1
    assert line == (f"error: {bad}: has no coordinate reference system; assign one "
                    "(e.g. gdal_edit.py -a_srs EPSG:xxxx)")
    assert_nothing_written(out)


def test_stack_dem_in_metres_labelled_geographic(src: dict, tmp_path: Path, capsys) -> None:
    """A DEM whose coordinates are Alaska Albers metres but whose CRS says EPSG:4326: it lies
    nowhere near the region, which must be said rather than giving a stack without elevation."""
    metres = Affine(10.0, 0.0, S.LEFT - S.MARGIN, 0.0, -10.0, S.TOP + S.MARGIN)
    bad = rewrite(src["dem"], tmp_path / "dem_mislabelled.tif", crs="EPSG:4326",
                  transform=metres)
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, dem=bad))
    assert rc == 1 and line.startswith(f"error: {bad}: ")
    assert "does not overlap region t64" in line
    assert "EPSG:4326" in line and "not degrees" in line and "gdal_edit.py -a_srs" in line
    assert_nothing_written(out)


def test_stack_source_of_another_place(src: dict, tmp_path: Path, capsys) -> None:
    """Right CRS, wrong place (a climate grid 300 km away): no overlap with the region."""
    with rasterio.open(src["climate"]) as ds:
        t = ds.transform
    moved = Affine(t.a, t.b, t.c + 300_000.0, t.d, t.e, t.f)
    bad = rewrite(src["climate"], tmp_path / "climate_elsewhere.tif", transform=moved)
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, climate=bad))
    assert rc == 1 and line.startswith(f"error: {bad}: ")
    assert "does not overlap region t64" in line and "EPSG:3338" in line
    assert_nothing_written(out)


def test_stack_dem_with_nan_and_no_nodata_value(src: dict, tmp_path: Path) -> None:
    """NaN holes in a float DEM that declares no nodata value are nodata, not an error."""
    from pyproj import Transformer

    x, y = S.LEFT + 320.0, S.TOP - 320.0  # the centre of the tile
    lon, lat = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True).transform(x, y)
    with rasterio.open(src["dem"]) as ds:
        z = ds.read(1)
        profile = ds.profile
        row, col = ds.index(lon, lat)
    z[z == -9999.0] = np.nan
    z[row - 5:row + 5, col - 5:col + 5] = np.nan  # a hole of 10 x 10 arc-seconds
    profile["nodata"] = None
    nan_dem = tmp_path / "dem_nan.tif"
    with rasterio.open(nan_dem, "w", **profile) as dst:
        dst.write(z, 1)
        dst.set_band_description(1, "elevation")
    out = tmp_path / "out" / f"{TILE64}.tif"
    assert main([str(a) for a in stack_args(src, out, dem=nan_dem)]) == 0
    with rasterio.open(out) as ds:
        elev = ds.read(STACK_BANDS.index("elevation") + 1)
        slope = ds.read(STACK_BANDS.index("slope") + 1)
        assert ds.tags()["MAPPER_EMPTY"] == "false"
    assert np.isnan(elev).any() and np.isfinite(elev).any()
    assert not np.isinf(slope).any()
    assert np.isnan(slope[np.isnan(elev)]).all()


@pytest.mark.parametrize(("fill", "declared"), [(-9999.0, None), (-9999.0, -32768.0),
                                               (32767.0, None)])
def test_stack_dem_with_an_undeclared_fill_value(src: dict, tmp_path: Path, capsys,
                                                 fill: float, declared: float | None) -> None:
    """-9999 (or 32767) fill in a DEM that declares no nodata (or another one) would be warped as
    an elevation 10 km deep (or 33 km high) into the slope and curvature of every pixel near it:
    one error naming the file, the value and the fix, and no stack."""
    from pyproj import Transformer

    x, y = S.LEFT + 320.0, S.TOP - 320.0  # the centre of the tile
    lon, lat = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True).transform(x, y)
    with rasterio.open(src["dem"]) as ds:
        z = ds.read(1)
        profile = ds.profile
        row, col = ds.index(lon, lat)
    z[row - 5:row + 5, col - 5:col + 5] = fill  # a fill of 10 x 10 arc-seconds
    if declared is not None:  # cells of the declared nodata too (a mosaic of two exports)
        z[row + 8:row + 12, col - 5:col + 5] = declared
    profile["nodata"] = declared
    bad = tmp_path / "dem_fill.tif"
    with rasterio.open(bad, "w", **profile) as dst:
        dst.write(z, 1)
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, dem=bad))
    assert rc == 1
    said = ("declares no nodata value" if declared is None
            else "declares nodata -32768 but holds another fill value")
    assert line.startswith(f"error: {bad}: holds elevations of {fill:g} m, outside any land "
                           f"surface (-1000 to 9000 m): the file {said}; ")
    assert_nothing_written(out)
    if declared is None:
        assert line.endswith(f"declare the fill value as nodata (e.g. rio edit-info --nodata "
                             f"{fill:g} {bad}) and run the stack again")
        with rasterio.open(bad, "r+") as ds:  # the fix the message gives
            ds.nodata = fill
    else:  # a new nodata would make the declared one's cells elevations: the fill rewritten
        fixed = tmp_path / "dem_fixed.tif"
        command = (f"rio calc \"(where (== (read 1) {fill:g}) {declared:g} (read 1))\" {bad} "
                   "<fixed.tif>")
        assert line.endswith(f"write those cells as the declared nodata ({command}) and pass "
                             "that file")
        rio = str(Path(sys.executable).with_name("rio"))
        subprocess.run([rio, "calc", f"(where (== (read 1) {fill:g}) {declared:g} (read 1))",
                        str(bad), str(fixed)], check=True, capture_output=True, timeout=120)
        bad = fixed
    assert main([str(a) for a in stack_args(src, out, dem=bad)]) == 0
    with rasterio.open(out) as ds:
        elev = ds.read(STACK_BANDS.index("elevation") + 1)
    assert np.isnan(elev).any() and -1000.0 < np.nanmin(elev) < np.nanmax(elev) < 9000.0


def _stack_bands(path: Path, names: list[str]) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read([STACK_BANDS.index(n) + 1 for n in names])


def _copy_raster(source: Path, dest: Path, data: np.ndarray | None = None, **profile) -> Path:
    """A copy of ``source`` with its band descriptions, other ``data`` and ``profile`` keys."""
    with rasterio.open(source) as ds:
        full = {**ds.profile, **profile}
        data = ds.read() if data is None else data
        names = ds.descriptions
    with rasterio.open(dest, "w", **full) as dst:
        dst.write(data.astype(full["dtype"]))
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name or "")
    return dest


def test_stack_sentinel2_digital_numbers_in_a_float_file(src: dict, tmp_path: Path,
                                                          capsys) -> None:
    """L2A digital numbers saved as float32 with no scale declared (as a composite exported from
    a cloud platform often is) would enter the stack as reflectance of thousands: one error
    naming the file and the fix, and no stack; with the scale declared, the stack equals the
    one from the integer file."""
    out = tmp_path / "out" / f"{TILE64}.tif"
    bad = _copy_raster(src["s2"], tmp_path / "s2_float_dn.tif", dtype="float32")
    rc, line = cli(capsys, *stack_args(src, out, s2=bad))
    with rasterio.open(bad) as ds:
        first = ds.descriptions.index(S2_BANDS[0][1]) + 1  # the file's band of the first input
    assert rc == 1 and line.startswith(
        f"error: {bad}: band {first} ({S2_BANDS[0][0]}) reads as reflectance ")
    assert line.endswith(f"declare it (gdal_edit.py -scale 0.0001 {bad}) or pass reflectance, "
                         "then run the stack again")
    assert_nothing_written(out)
    with rasterio.open(bad, "r+") as ds:  # the fix the message gives
        ds.scales = [1e-4] * ds.count
    assert main([str(a) for a in stack_args(src, out, s2=bad)]) == 0
    reference = tmp_path / "reference" / f"{TILE64}.tif"
    assert main([str(a) for a in stack_args(src, reference)]) == 0
    names = [name for name, _ in S2_BANDS]
    np.testing.assert_allclose(_stack_bands(out, names), _stack_bands(reference, names),
                               atol=1e-6)


def test_stack_integer_digital_numbers_that_keep_esas_offset(src: dict, tmp_path: Path,
                                                              capsys) -> None:
    """Integer L2A DNs that still hold ESA's +1000 (baseline 04.00 or later, as ESA delivers
    them) in a file that declares no scale would read 0.1 too bright in every band: one error
    naming the file and both fixes, and no stack. Declared as the message says, the stack equals
    the one from the same DNs without the offset; declared with scale alone (ground that is truly
    that bright), the file is read as it says."""
    with rasterio.open(src["s2"]) as ds:
        data = ds.read()
    dark = np.where(data > 0, np.maximum(data // 10, 1), 0)  # reflectance 0.015 and up
    harmonised = _copy_raster(src["s2"], tmp_path / "s2_harmonised.tif", dark)
    raw = _copy_raster(src["s2"], tmp_path / "s2_raw.tif", np.where(dark > 0, dark + 1000, 0))
    with rasterio.open(raw) as ds:
        assert ds.scales == (1.0,) * ds.count and ds.offsets == (0.0,) * ds.count
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, s2=raw))
    assert rc == 1 and line.startswith(f"error: {raw}: its darkest pixels (the lower of blue and "
                                       "SWIR 2.2 um, darkest 1 % of ")
    assert "read as reflectance 0.1" in line and "ESA's offset of +1000" in line
    assert line.endswith(f"Declare it (gdal_edit.py -scale 0.0001 -offset -0.1 {raw}); if the "
                         "file holds no offset and this ground is truly that bright, declare its "
                         f"scale alone (gdal_edit.py -scale 0.0001 -offset 0 {raw}); then run the "
                         "stack again")
    assert_nothing_written(out)
    reference = tmp_path / "reference" / f"{TILE64}.tif"
    assert main([str(a) for a in stack_args(src, reference, s2=harmonised)]) == 0
    names = [name for name, _ in S2_BANDS]
    # ground 0.05 brighter everywhere (no water, shadow or forest) is still read as it is
    bare = _copy_raster(src["s2"], tmp_path / "s2_bare.tif", np.where(dark > 0, dark + 500, 0))
    bare_stack = tmp_path / "bare" / f"{TILE64}.tif"
    assert main([str(a) for a in stack_args(src, bare_stack, s2=bare)]) == 0
    np.testing.assert_allclose(_stack_bands(bare_stack, names),
                               _stack_bands(reference, names) + 0.05, atol=1e-6)
    with rasterio.open(raw, "r+") as ds:  # the fix the message gives
        ds.scales, ds.offsets = [1e-4] * ds.count, [-0.1] * ds.count
    assert main([str(a) for a in stack_args(src, out, s2=raw)]) == 0
    np.testing.assert_allclose(_stack_bands(out, names), _stack_bands(reference, names),
                               atol=1e-6)
    with rasterio.open(raw, "r+") as ds:  # the way out for ground that bright
        ds.offsets = [0.0] * ds.count
    bright = tmp_path / "bright" / f"{TILE64}.tif"
    assert main([str(a) for a in stack_args(src, bright, s2=raw)]) == 0
    np.testing.assert_allclose(_stack_bands(bright, names), _stack_bands(reference, names) + 0.1,
                               atol=1e-6)


def test_stack_climate_packed_with_a_scale(src: dict, tmp_path: Path) -> None:
    """A climate file of Int16 tenths that declares scale 0.1 stacks as the physical values (as
    the float file does, to the 0.05 of its rounding), not 10 times them."""
    with rasterio.open(src["climate"]) as ds:
        data = ds.read()
    packed = np.where(data == -9999.0, -32768, np.round(data * 10.0))
    path = _copy_raster(src["climate"], tmp_path / "climate_int16.tif", packed, dtype="int16",
                        nodata=-32768)
    with rasterio.open(path, "r+") as ds:
        ds.scales = [0.1] * ds.count
    out, reference = tmp_path / "packed" / f"{TILE64}.tif", tmp_path / "float" / f"{TILE64}.tif"
    assert main([str(a) for a in stack_args(src, out, climate=path)]) == 0
    assert main([str(a) for a in stack_args(src, reference)]) == 0
    got, want = _stack_bands(out, CLIMATE_BANDS), _stack_bands(reference, CLIMATE_BANDS)
    assert np.isfinite(want).any() and np.array_equal(np.isnan(got), np.isnan(want))
    assert np.nanmax(np.abs(got - want)) <= 0.05 + 1e-3


def test_stack_climate_with_an_undeclared_fill_value(src: dict, tmp_path: Path,
                                                     capsys) -> None:
    """-9999 in a climate file that declares no nodata would be warped (bilinear) into its
    neighbours as thousands of millimetres below zero: one error naming the file, the band and
    the fix, and no stack; with the nodata declared, the stack is made."""
    with rasterio.open(src["climate"]) as ds:
        data = ds.read()
        row, col = ds.index(S.LEFT + 320.0, S.TOP - 320.0)  # the centre of the tile
    data[:, row, col + 1] = -9999.0  # 1 km east of the centre: its warp reaches the tile
    bad = _copy_raster(src["climate"], tmp_path / "climate_fill.tif", data, nodata=None)
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, climate=bad))
    assert rc == 1 and line.startswith(f"error: {bad}: its ")
    assert ", outside " in line and f"rio edit-info --nodata <value> {bad}" in line
    assert_nothing_written(out)
    with rasterio.open(bad, "r+") as ds:  # the fix the message gives
        ds.nodata = -9999.0
    assert main([str(a) for a in stack_args(src, out, climate=bad)]) == 0
    assert np.nanmin(_stack_bands(out, ["precip_annual"])) > 0


@pytest.mark.parametrize(("change", "says"), [
    ({"scales": [0.1]}, "the DEM declares scale 0.1 and offset 0 (packed values); elevations are "
     "read as metres as stored, so unpack it (gdal_translate -unscale -ot Float32 {bad} "
     "<unpacked.tif>) and pass that file"),
    ({"units": ["ft"]}, "the DEM's band is in ft (its unit); elevations are read as metres, so "
     "convert it (rio calc \"(* 0.3048 (read 1))\" -t float32 --profile nodata=-9999 {bad} "
     "<metres.tif>) and pass that file"),
    ({"units": ["US survey foot"]}, "the DEM's band is in US survey foot (its unit); elevations "
     "are read as metres, so convert it (rio calc \"(* 0.3048 (read 1))\" -t float32 "
     "--profile nodata=-9999 {bad} <metres.tif>) and pass that file"),
], ids=["packed", "ft", "US survey foot"])
def test_stack_dem_not_in_metres_as_stored(src: dict, tmp_path: Path, capsys, change: dict,
                                           says: str) -> None:
    """A DEM that declares a scale (packed integers, 10 times too high) or whose band says feet
    (3.28 times too high, inside the range of any land surface): one error naming the file and
    the fix, and no stack."""
    bad = _copy_raster(src["dem"], tmp_path / "dem_other.tif")
    with rasterio.open(bad, "r+") as ds:
        for key, value in change.items():
            setattr(ds, key, value)
    out = tmp_path / "out" / f"{TILE64}.tif"
    rc, line = cli(capsys, *stack_args(src, out, dem=bad))
    assert rc == 1 and line == f"error: {bad}: " + says.format(bad=bad)
    assert_nothing_written(out)


def test_a_dem_that_stops_short_of_the_hydrology_halo_is_a_warning(
    src: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A DEM of the user's that covers the tile but not the km its hydrology reads around it:
    the stack is made (it may end at the coast), with a warning naming the file and the reach;
    the whole DEM gives none."""
    from mapper.config import load_config, load_region

    region = load_region(load_config(src["config"]), "t64")
    assert TILE64 in region.tiles()
    left, bottom, right, top = region.lattice.tile_bounds(TILE64)
    with rasterio.open(src["dem"]) as ds:
        box = rasterio.warp.transform_bounds(region.lattice.crs, ds.crs, left, bottom, right, top)
        window = ds.window(*box).round_offsets().round_lengths()
        data, profile = ds.read(window=window), ds.profile
        profile.update(width=window.width, height=window.height,
                       transform=ds.window_transform(window))
    short = tmp_path / "dem_short.tif"
    with rasterio.open(short, "w", **profile) as dst:
        dst.write(data)
    for dem, warned in ((short, True), (src["dem"], False)):
        out = tmp_path / dem.stem / f"{TILE64}.tif"
        caplog.clear()
        with caplog.at_level("WARNING", logger="mapper.stack"):
            assert main([str(a) for a in stack_args(src, out, dem=dem)]) == 0
        assert out.is_file()
        said = [r.getMessage() for r in caplog.records if "stops" in r.getMessage()]
        assert bool(said) is warned
        if warned:
            assert said[0].startswith(f"{short}: the DEM stops ")
            assert "give a DEM reaching that far" in said[0]


def test_ocean_tile_gives_an_empty_stack_and_a_nodata_prediction(
    src: dict, tmp_path: Path, capsys
) -> None:
    """A tile where no source has data (at sea, beyond them all) stacks empty and predicts
    nodata. It lies outside the test region, so it is stacked through the library: the
    command refuses a tile that is not the region's (the next test)."""
    from mapper.stack import build_stack

    stack = tmp_path / "stack" / f"{S.OCEAN_TILE_64}.tif"
    region = load_region(load_config(src["config"]), "t64")
    build_stack(region, S.OCEAN_TILE_64, [src["s2"]], [src["dem"]], [src["climate"]], stack)
    with rasterio.open(stack) as ds:
        assert ds.tags()["MAPPER_EMPTY"] == "true" and np.isnan(ds.read()).all()
    model = demo_checkpoint(tmp_path / "nsp.pt", "nsp")
    out = tmp_path / "predict" / f"{S.OCEAN_TILE_64}.tif"
    rc, _ = cli(capsys, "predict", "--config", src["config"], "--region", "t64", "--task",
                "nsp", "--tile", S.OCEAN_TILE_64, "--model", model, "--out", out,
                "--no-progress", stack)
    assert rc == 0
    with rasterio.open(out) as ds:
        assert ds.tags()["MAPPER_EMPTY"] == "true" and ds.count == 1
        assert np.isnan(ds.read()).all() and np.isnan(ds.nodata)


def test_stack_of_a_tile_outside_the_region_is_one_error(src: dict, tmp_path: Path,
                                                          capsys) -> None:
    """A mistyped tile id is refused before any source is read, naming the region file and the
    command that lists the region's tiles; nothing is written."""
    region = load_region(load_config(src["config"]), "t64")
    assert S.OCEAN_TILE_64 not in region.stacked_tiles()
    row, col = Lattice.parse(S.SMALL_TILES[0])
    typo = f"R{col:04d}C{row:04d}"  # row and column swapped
    for tile in (typo, S.OCEAN_TILE_64):
        out = tmp_path / "out" / f"{tile}.tif"
        rc, line = cli(capsys, *stack_args(src, out, tile=tile))
        assert rc == 1
        assert line == (f"error: tile {tile} is not a stacked tile of region t64 "
                        f"({region.path}); list them with: python -m mapper tiles t64 --stacked "
                        f"--config {src['config']}")  # the run's config, not the default
        assert_nothing_written(out)


def test_all_nodata_stack_not_marked_empty_predicts_nodata(region: dict, tmp_path: Path,
                                                           capsys) -> None:
    """A stack whose pixels are all NaN (e.g. a cloud-covered tile at sea) but not tagged empty:
    the model finds no valid cell and the tile is nodata."""
    tile = inner_tile(region)
    lat = region["lattice"]
    nan_stack = tmp_path / "nan.tif"
    write_geotiff(nan_stack, np.full((19, 64, 64), np.nan, np.float32), lat.tile_transform(tile),
                  "EPSG:3338", nodata=np.nan, descriptions=STACK_BANDS,
                  tags={"MAPPER_TILE": tile, "MAPPER_EMPTY": "false", "MAPPER_SYNTHETIC": "true"})
    stacks = with_stack(region, tmp_path, tile, nan_stack)
    out = tmp_path / "out" / f"{tile}.tif"
    rc, _ = cli(capsys, *predict_args(region, tile, stacks, out))
    assert rc == 0
    with rasterio.open(out) as ds:
        assert np.isnan(ds.read()).all() and ds.tags()["MAPPER_EMPTY"] == "true"


# -- stacks as inputs of predict and samples ----------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "corrupt blocks"])
def test_predict_with_a_damaged_stack(region: dict, tmp_path: Path, capsys, damage: str) -> None:
    tile = inner_tile(region)
    good = region["by_tile"][tile]
    if damage == "truncated":
        bad = truncate(good, tmp_path / "bad.tif", 0.6)
    else:
        bad = zero_blocks(good, tmp_path / "bad.tif")
    stacks = with_stack(region, tmp_path, tile, bad)
    out = tmp_path / "out" / f"{tile}.tif"
    rc, line = cli(capsys, *predict_args(region, tile, stacks, out))
    assert rc == 1 and line.startswith(f"error: {stacks[tile]}: ")
    assert "damaged or truncated" in line and "rebuild" in line
    assert_nothing_written(out)


def test_predict_with_a_damaged_neighbour_stack(region: dict, tmp_path: Path, capsys) -> None:
    tile = inner_tile(region)
    neighbour = region["lattice"].neighbours(tile)[0]
    bad = zero_blocks(region["by_tile"][neighbour], tmp_path / "bad.tif")
    stacks = with_stack(region, tmp_path, neighbour, bad)
    out = tmp_path / "out" / f"{tile}.tif"
    rc, line = cli(capsys, *predict_args(region, tile, stacks, out))
    assert rc == 1 and line.startswith(f"error: {stacks[neighbour]}: ")
    assert "damaged or truncated" in line
    assert_nothing_written(out)


def test_predict_on_a_full_disk_is_one_error_line_and_no_tile(region: dict, tmp_path: Path
                                                              ) -> None:
    """The predicted tile cannot grow beyond 2 kB. GDAL writes a small tile when it closes the
    file, where rasterio reports no failure: the tile that does not read back is the error (it
    was published as a finished, unreadable tile)."""
    tile = inner_tile(region)
    out = tmp_path / "out" / f"{tile}.tif"
    assert_one_write_failure(2000, predict_args(region, tile, region["by_tile"], out), tmp_path,
                             out)
    assert_nothing_written(out)


def test_stack_on_a_full_disk_is_one_error_line_and_no_stack(src: dict, tmp_path: Path) -> None:
    """The stack cannot grow beyond 20 kB: one error line naming it and the fix, no stack."""
    out = tmp_path / "out" / f"{TILE64}.tif"
    assert_one_write_failure(20000, stack_args(src, out), tmp_path, out)
    assert_nothing_written(out)


def test_predict_whose_tile_fails_to_write_is_one_error_line(region: dict, tmp_path: Path,
                                                             capsys, monkeypatch) -> None:
    """GDAL fails to write a block of the tile (a full disk: "TIFFAppendToStrip:Write error"):
    one error line naming the tile and the fix, not rasterio's traceback."""
    from rasterio._err import CPLE_AppDefinedError

    def full_disk(*args: object, **kwargs: object) -> None:
        try:
            raise CPLE_AppDefinedError(3, 1, "TIFFAppendToStrip:Write error at scanline 0")
        except CPLE_AppDefinedError as exc:
            raise rasterio.errors.RasterioIOError(
                "Write failed. See previous exception for details.") from exc

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", full_disk)
    tile = inner_tile(region)
    out = tmp_path / "out" / f"{tile}.tif"
    rc, line = cli(capsys, *predict_args(region, tile, region["by_tile"], out))
    assert rc == 1
    assert line == (f"error: {out}: write failed (TIFFAppendToStrip:Write error at scanline 0); "
                    f"free disk space in {out.parent} (or make that folder writable) and run "
                    "the same target again")
    assert_nothing_written(out)


def test_samples_with_a_damaged_stack(region: dict, tmp_path: Path, capsys) -> None:
    tile = inner_tile(region)
    bad = zero_blocks(region["by_tile"][tile], tmp_path / "bad.tif")
    stacks = with_stack(region, tmp_path, tile, bad)
    out = tmp_path / "out" / "points.parquet"
    rc, line = cli(capsys, *samples_args(region, out, stacks=stacks))
    assert rc == 1 and line.startswith(f"error: {stacks[tile]}: ")
    assert "damaged or truncated" in line and "rebuild" in line
    assert_nothing_written(out)


def test_stack_with_bands_in_the_wrong_order(region: dict, tmp_path: Path, capsys) -> None:
    tile = inner_tile(region)
    order = list(range(1, 20))
    order[9], order[10] = order[10], order[9]  # slope before elevation
    bad = rewrite(region["by_tile"][tile], tmp_path / "swapped.tif", band_order=order)
    stacks = with_stack(region, tmp_path, tile, bad)
    refused_by_predict_and_samples(
        region, tmp_path, capsys, tile, stacks,
        f"error: {stacks[tile]}: band 10 is 'slope' where a stack has 'elevation' (see "
        "mapper.bands.STACK_BANDS); rebuild the stack")


def refused_by_predict_and_samples(region: dict, tmp_path: Path, capsys, tile: str,  # noqa: ANN001
                                   stacks: dict, line: str) -> None:
    """The predict job of ``tile`` and the samples job each stop with ``line``, writing nothing."""
    out = tmp_path / "out" / f"{tile}.tif"
    assert cli(capsys, *predict_args(region, tile, stacks, out)) == (1, line)
    assert_nothing_written(out)
    table = tmp_path / "out" / "points.parquet"
    assert cli(capsys, *samples_args(region, table, stacks=stacks)) == (1, line)
    assert_nothing_written(table)


def test_stack_with_a_nodata_value_that_is_not_nan(region: dict, tmp_path: Path,
                                                   capsys) -> None:
    """A stack whose holes hold -9999 (rewritten by hand, or by a tool that filled its NaN)
    would have them read as data, -9999 as an elevation: one error naming the file, for the
    predict job as for the samples job, and no output."""
    tile = inner_tile(region)
    with rasterio.open(region["by_tile"][tile]) as ds:
        profile, data, names = ds.profile, ds.read(), ds.descriptions
    bad = tmp_path / "filled.tif"
    with rasterio.open(bad, "w", **{**profile, "nodata": -9999.0}) as dst:
        dst.write(np.where(np.isnan(data), -9999.0, data).astype(data.dtype))
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    stacks = with_stack(region, tmp_path, tile, bad)
    refused_by_predict_and_samples(
        region, tmp_path, capsys, tile, stacks,
        f"error: {stacks[tile]}: nodata -9999, not NaN as the stack stage writes; rebuild the "
        "stack (mapper stack), or write its nodata as NaN")


def test_stack_with_a_missing_band(region: dict, tmp_path: Path, capsys) -> None:
    tile = inner_tile(region)
    keep = [i for i in range(1, 20) if STACK_BANDS[i - 1] != "tpi"]
    bad = rewrite(region["by_tile"][tile], tmp_path / "no_tpi.tif", band_order=keep)
    stacks = with_stack(region, tmp_path, tile, bad)
    out = tmp_path / "out" / f"{tile}.tif"
    rc, line = cli(capsys, *predict_args(region, tile, stacks, out))
    assert rc == 1
    assert line == (f"error: {stacks[tile]}: 18 bands, a stack has 19, missing 'tpi' (see "
                    "mapper.bands.STACK_BANDS); rebuild the stack")
    assert_nothing_written(out)


# -- observations -------------------------------------------------------------------------------


def write_obs(region: dict, path: Path, change) -> Path:  # noqa: ANN001 - a function of a frame
    table = pd.read_csv(region["observations"], dtype={"obs_id": str, "soil_order": str})
    change(table).to_csv(path, index=False)
    return path


def test_observations_missing_columns(region: dict, tmp_path: Path, capsys) -> None:
    obs = write_obs(region, tmp_path / "obs.csv", lambda t: t.drop(columns=["date", "nsp"]))
    out = tmp_path / "out" / "points.parquet"
    rc, line = cli(capsys, *samples_args(region, out, observations=obs))
    assert rc == 1
    assert line == (f"error: {obs}: missing column(s) date, nsp (its columns: obs_id, lon, "
                    "lat, soil_order); an observation table needs obs_id, lon, lat, date, nsp, "
                    "soil_order (date and the labels may be empty)")
    assert_nothing_written(out)
    # an export's own names: the error says which column to rename to what (none renamed)
    obs = write_obs(region, tmp_path / "export.csv", lambda t: t.rename(
        columns={"obs_id": "Pedon_ID", "lon": "Longitude", "lat": "latitude", "nsp": "nsp"}))
    rc, line = cli(capsys, *samples_args(region, out, observations=obs))
    assert rc == 1
    assert line == (f"error: {obs}: missing column(s) obs_id, lon, lat (its columns: Pedon_ID, "
                    "Longitude, latitude, date, nsp, soil_order); an observation table needs "
                    "obs_id, lon, lat, date, nsp, soil_order (date and the labels may be empty); "
                    "rename Pedon_ID -> obs_id, Longitude -> lon, latitude -> lat")
    assert_nothing_written(out)


def test_observations_in_parquet_under_the_csv_name_are_read(region: dict, tmp_path: Path,
                                                              capsys) -> None:
    """The statewide table's place is ``observations.csv``, CSV or Parquet: a Parquet file there
    is read by its content, and gives the same samples as the CSV."""
    table = pd.read_csv(region["observations"], dtype={"obs_id": str, "soil_order": str})
    obs = tmp_path / "parquet" / "observations.csv"
    obs.parent.mkdir()
    table.to_parquet(obs)
    outs = tmp_path / "from_parquet.parquet", tmp_path / "from_csv.parquet"
    assert cli(capsys, *samples_args(region, outs[0], observations=obs)) == (0, "")
    assert cli(capsys, *samples_args(region, outs[1])) == (0, "")
    pd.testing.assert_frame_equal(pd.read_parquet(outs[0]), pd.read_parquet(outs[1]))


def test_observations_that_are_no_table_are_one_error_line(region: dict, tmp_path: Path,
                                                          capsys) -> None:
    obs = tmp_path / "observations.csv"
    obs.write_text("obs_id,lon,lat,date,nsp,soil_order\n1,-148.1,64.8\n" + "x," * 40 + "\n")
    out = tmp_path / "out" / "points.parquet"
    rc, line = cli(capsys, *samples_args(region, out, observations=obs))
    assert rc == 1 and line.startswith(f"error: {obs}: cannot be read as a CSV or Parquet table (")
    assert line.endswith("); fix or replace the file")
    assert_nothing_written(out)


@pytest.mark.parametrize("kind", ["xlsx", "cp1252"])
def test_observations_saved_by_a_spreadsheet_name_the_fix(region: dict, tmp_path: Path, capsys,
                                                          kind: str) -> None:
    """A workbook under the table's name, or a CSV in a spreadsheet's own encoding (Cafe Creek
    with an accent in Windows-1252): one line saying to save it as CSV UTF-8."""
    import zipfile

    obs = tmp_path / "observations.csv"
    if kind == "xlsx":
        with zipfile.ZipFile(obs, "w") as book:
            book.writestr("xl/workbook.xml", "<workbook/>")
        says = f"error: {obs}: a spreadsheet workbook, not a table file; save its sheet as CSV "
        says += "UTF-8 (comma delimited) under that name"
    else:
        obs.write_bytes("obs_id,lon,lat,date,nsp,soil_order,notes\n"
                        "p1,-148.1,64.8,2019,1,Gelisols,Caf\u00e9 Creek\n".encode("cp1252"))
        says = (f"error: {obs}: not UTF-8 text (byte 0xe9 on line 2: a spreadsheet's own "
                "encoding, e.g. Windows-1252); save it as CSV UTF-8")
    out = tmp_path / "out" / "points.parquet"
    rc, line = cli(capsys, *samples_args(region, out, observations=obs))
    assert (rc, line) == (1, says)
    assert_nothing_written(out)


def test_observations_unknown_soil_orders(region: dict, tmp_path: Path, capsys) -> None:
    def rename(t: pd.DataFrame) -> pd.DataFrame:
        t.loc[t.index[:3], "soil_order"] = ["Gelisol", "Podzol", "Gelisol"]
        return t

    obs = write_obs(region, tmp_path / "obs.csv", rename)
    out = tmp_path / "out" / "points.parquet"
    rc, line = cli(capsys, *samples_args(region, out, observations=obs))
    assert rc == 1
    assert line == (f"error: {obs}: unknown soil order name(s) Gelisol, Podzol; allowed: "
                    f"{', '.join(SOIL_ORDERS)} (or empty); read as unlabelled: Alfisols, "
                    "Aridisols, Oxisols; rename or drop those rows")
    assert_nothing_written(out)


def test_observations_of_soil_orders_outside_the_seven_keep_their_nsp(
    region: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Alfisols, Aridisols and Oxisols (rare in Alaska; the MiSo paper leaves them out of its 7
    orders) are read as points without a soil order: their NSP labels are kept, they are counted
    in a warning (labels the user gave are set aside)."""
    def rare(t: pd.DataFrame) -> pd.DataFrame:
        t.loc[t.index[:3], "soil_order"] = ["Alfisols", "aridisols", "Alfisols"]
        t.loc[t.index[:3], "nsp"] = [1, 0, 1]
        return t

    obs = write_obs(region, tmp_path / "obs.csv", rare)
    with caplog.at_level(logging.WARNING, logger="mapper.samples"):
        table = read_observations(obs)
    assert table["soil_order"].iloc[:3].isna().all()
    assert table["nsp"].iloc[:3].tolist() == [1, 0, 1]
    assert (f"{obs}: 3 row(s) of Alfisols 2, aridisols 1 read as without a soil order label (not "
            "among the 7 mapped; their other labels are kept)") in caplog.messages


def test_observations_all_outside_the_region(region: dict, tmp_path: Path, capsys) -> None:
    def move(t: pd.DataFrame) -> pd.DataFrame:
        t["lon"] = t["lon"] + 3.0  # about 130 km east
        return t

    obs = write_obs(region, tmp_path / "obs.csv", move)
    out = tmp_path / "out" / "points.parquet"
    rc, line = cli(capsys, *samples_args(region, out, observations=obs))
    assert rc == 1
    n = len(pd.read_csv(obs))
    assert line == (f"error: {obs}: none of its {n} points lies in region tiny; check the table "
                    "is for this region (lon/lat in degrees, WGS84 unless a datum column says "
                    "otherwise)")
    assert_nothing_written(out)


def test_observations_of_a_header_only_or_too_few_points(region: dict, tmp_path: Path,
                                                          capsys) -> None:
    """A table with a header and no rows, and one whose kept points cannot fill the folds: one
    line naming the table (and for the folds the counts and the region file), nothing written."""
    out = tmp_path / "out" / "points.parquet"
    empty = write_obs(region, tmp_path / "empty.csv", lambda t: t.head(0))
    rc, line = cli(capsys, *samples_args(region, out, observations=empty))
    assert rc == 1
    assert line == f"error: {empty}: no rows (only a header); add the observations, one per row"
    assert_nothing_written(out)
    few = write_obs(region, tmp_path / "few.csv",
                    lambda t: pd.concat([t.head(2), t[t["obs_id"] == "P0143"]]))  # 1 outside
    rc, line = cli(capsys, *samples_args(region, out, observations=few))
    folds = region["region"].settings["evaluation"]["folds"]
    assert rc == 1 and folds == 3
    assert line == (f"error: {few}: 2 of 3 points kept (dropped 0 without position, 1 outside "
                    f"region tiny, 0 on nodata) cannot fill evaluation.folds 3 of "
                    f"{region['region'].path}; add observations or lower it")
    assert_nothing_written(out)


def test_observations_some_outside_are_dropped_and_counted(region: dict, tmp_path: Path,
                                                           caplog) -> None:
    out = tmp_path / "out" / "points.parquet"
    with caplog.at_level("INFO", logger="mapper.samples"):
        assert main([str(a) for a in samples_args(region, out)]) == 0
    outside = ("P0143", "P0144", "P0145", "P0146")  # training_data's 4 points outside
    table = pd.read_parquet(out)
    assert not set(outside) & set(table["obs_id"])
    assert any("4 outside region tiny" in r.getMessage() for r in caplog.records)


def test_observations_with_lat_and_lon_swapped(region: dict, tmp_path: Path, capsys) -> None:
    obs = write_obs(region, tmp_path / "obs.csv",
                    lambda t: t.rename(columns={"lon": "lat", "lat": "lon"}))
    out = tmp_path / "out" / "points.parquet"
    rc, line = cli(capsys, *samples_args(region, out, observations=obs))
    assert rc == 1 and line.startswith(f"error: {obs}: no point lies in region tiny, but ")
    assert line.endswith("do with lon and lat exchanged; the lon and lat columns look swapped")
    assert_nothing_written(out)


# -- config -------------------------------------------------------------------------------------


def bad_configs(region: dict, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Configs with one fault each: (config path, the expected error line)."""
    config = yaml.safe_load(Path(region["config"]).read_text())
    out: dict[str, tuple[Path, str]] = {}

    top = tmp_path / "unknown_top" / "config.yaml"
    top.parent.mkdir()
    top.write_text(yaml.safe_dump({**config, "gird": {"res": 10.0}}))
    out["unknown key in config.yaml"] = (
        top, f"error: {top}: key '(top level)': Additional properties are not allowed ('gird' "
             "was unexpected); remove it or check its spelling")

    for name, change, message in [
        ("unknown key in the region file", lambda s: s["prediction"].update(strid_px=16),
         "key 'prediction': Additional properties are not allowed ('strid_px' was unexpected); "
         "remove it or check its spelling"),
        ("wrong type in the region file", lambda s: s.update(tile_px="64"),
         "key 'tile_px': '64' is not of type 'integer'"),
        ("hydrology blocks that do not nest with the tiles",
         lambda s: s.setdefault("stack", {}).update(hydro_block_px=96),
         "key 'stack.hydro_block_px' (96) and tile_px (64) must nest (one divides the other); "
         "set hydro_block_px to a divisor or multiple of 64"),
        ("an output pixel that is not whole lattice pixels",
         lambda s: s["prediction"].update(out_res=15.0),
         "prediction.out_res 15 m is not a whole multiple of the lattice's 10 m; use e.g. 10, 20 "
         "or 50"),
        ("a crop step larger than the part of a crop that answers",
         lambda s: s["prediction"].update(support_px=16, stride_px=24),
         "prediction.stride_px 24 plus stagger_px 0 must be between 1 and the support 16 px (a "
         "larger step leaves pixels no crop answers); fix the region file"),
    ]:
        folder = tmp_path / name.replace(" ", "_")
        cfg = changed_copy(region["config"], "tiny", folder, change)
        out[name] = (cfg, f"error: {folder / 'tiny.yaml'}: {message}")
    return out


def test_bad_config_through_the_commands(region: dict, tmp_path: Path, capsys) -> None:
    tile = inner_tile(region)
    for name, (cfg, expected) in bad_configs(region, tmp_path).items():
        out = tmp_path / "out" / f"{tile}.tif"
        rc, line = cli(capsys, *predict_args(region, tile, region["by_tile"], out, config=cfg))
        assert (rc, line) == (1, expected), name
        assert_nothing_written(out)
        table = tmp_path / "out" / "points.parquet"
        rc, line = cli(capsys, *samples_args(region, table, config=cfg))
        assert (rc, line) == (1, expected), name
        assert_nothing_written(table)


def test_unknown_region_names_the_config_files_read(tmp_path: Path, capsys) -> None:
    config = REPO / "config" / "config.yaml"
    site = tmp_path / "site.yaml"
    site.write_text("region_overrides:\n  demo:\n    tile_px: 256\n")
    rc, line = cli(capsys, "tiles", "--region", "demoo", "--config", config, "--config", site)
    assert (rc, line) == (1, f"error: {config} + {site}: no region 'demoo' in 'regions' (known: "
                             "alaska, demo, fairbanks); give one of those to --region, or add the "
                             "region's file to 'regions' in a config given with --config")
    missing = tmp_path / "missing.tif"
    rc, line = cli(capsys, "stack", "--region", "demoo", "--tile", TILE64, "--sentinel2", missing,
                   "--dem", missing, "--climate", missing, "--out", tmp_path / "s.tif")
    assert rc == 1 and line.startswith(f"error: {Path('config/config.yaml')}: no region 'demoo'")
    assert_nothing_written(tmp_path / "s.tif")


def test_finetune_by_hand_without_the_pretrained_checkpoint_of_a_pretraining_region(
    region: dict, tmp_path: Path, capsys
) -> None:
    """The workflow's models start from the pretrained checkpoint when training.pretrain is on:
    one run by hand without it would silently be another model (the ablation's)."""
    out, tiny = tmp_path / "nsp.pt", region["region"]
    assert tiny.settings["training"]["pretrain"]
    rc, line = cli(capsys, "finetune", "--config", region["config"], "--region", tiny.name,
                   "--task", "nsp", "--samples", tmp_path / "points.parquet", "--out", out,
                   *region["stacks"])
    assert (rc, line) == (1, f"error: region {tiny.name} pretrains (training.pretrain: true "
                             f"in {tiny.path}): its maps' models start from the pretrained "
                             "checkpoint; pass it with --pretrained "
                             f"results/{tiny.name}/models/pretrain.pt, or set "
                             "training.pretrain: false")
    assert_nothing_written(out)


@pytest.mark.parametrize(("source", "option", "kinds"), [
    ("dem", "--tile", "stac"), ("climate", "--cell", "cells"), ("sentinel2", "--file",
                                                                 "http and snap"),
    ("climate", "--tile", "stac")])
def test_a_fetch_option_the_sources_kind_does_not_take_is_refused(
    tmp_path: Path, capsys, source: str, option: str, kinds: str
) -> None:
    """fairbanks' dem is of kind cells, its climate snap, its sentinel2 stac: an option of
    another kind would be silently ignored (and the wrong thing fetched)."""
    from mapper.config import load_run_region

    kind = load_run_region(None, "fairbanks").settings["sources"][source]["kind"]
    rc, line = cli(capsys, "fetch", "--region", "fairbanks", "--source", source, option,
                   "R0001C0001" if option == "--tile" else "N64W148" if option == "--cell"
                   else "x.tif", "--out", tmp_path / "sources")
    assert (rc, line) == (1, f"error: source '{source}' is of kind {kind}: {option} applies to "
                             f"{kinds} sources only; leave it out")
    assert not (tmp_path / "sources").exists()


@pytest.mark.slow
def test_bad_config_through_snakemake_dry_run(region: dict, tmp_path: Path) -> None:
    """``snakemake -n`` stops at parse time with the same one-line message (as Snakemake shows
    errors: a title line, the message, the place in the Snakefile), not a schema dump; and a
    region's boundary that is missing or lies off the lattice (in another CRS than its file
    says) is one line naming the file, not a failed input function."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cases = bad_configs(region, tmp_path)
    folder = tmp_path / "no_boundary"
    cfg = changed_copy(region["config"], "tiny", folder,
                       lambda s: s.update(boundary=str(folder / "nowhere.geojson")))
    cases["a boundary file that is not there"] = (
        cfg, f"error: {folder / 'nowhere.geojson'}: boundary file not found; check the 'boundary' "
             f"key of region 'tiny' ({folder / 'tiny.yaml'})")  # fmt: skip
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    europe = {"type": "Polygon", "coordinates": [[[10, 50], [11, 50], [11, 51], [10, 51],
                                                  [10, 50]]]}  # fmt: skip
    (folder / "europe.geojson").write_text(json.dumps(europe))
    cfg = changed_copy(region["config"], "tiny", folder,
                       lambda s: s.update(boundary=str(folder / "europe.geojson")))
    cases["a boundary off the lattice"] = (
        cfg, f"error: {folder / 'europe.geojson'}: region 'tiny' meets no tile of the lattice")
    cfg = changed_copy(region["config"], "tiny", tmp_path / "twice", lambda s: None)
    lines = cfg.read_text().splitlines()
    cfg.write_text("\n".join([*lines, "region_overrides: {}", "region_overrides: {}"]) + "\n")
    cases["a key given twice in the config file (Snakemake's reader keeps the second)"] = (
        cfg, f"error: {cfg}, line {len(lines) + 2}: the key 'region_overrides' is given twice")
    for name, (cfg, expected) in cases.items():
        work = cfg.parent
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
             "--directory", str(work), "--configfile", str(cfg), "-n", "--cores", "1",
             "maps/nsp_tiny.tif"],
            cwd=work, env=env, capture_output=True, text=True, timeout=300,
        )
        log = run.stdout + run.stderr
        assert run.returncode != 0, name
        errors = [line for line in log.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(expected), f"{name}:\n{log}"
        assert "Traceback" not in log and "Failed validating" not in log, f"{name}:\n{log}"
        assert len(log.splitlines()) <= 3, f"{name}: {len(log.splitlines())} lines:\n{log}"


# -- checkpoints --------------------------------------------------------------------------------


def test_predict_with_the_model_of_the_other_task(region: dict, tmp_path: Path, capsys) -> None:
    tile = inner_tile(region)
    out = tmp_path / "out" / f"{tile}.tif"
    model = region["models"]["soilorder"]
    rc, line = cli(capsys, *predict_args(region, tile, region["by_tile"], out, task="nsp",
                                         model=model))
    assert rc == 1
    assert line == (f"error: {model}: checkpoint is for task 'soilorder', expected 'nsp'; "
                    "give the nsp checkpoint")
    assert_nothing_written(out)


def test_predict_with_a_model_of_another_size(region: dict, tmp_path: Path, capsys) -> None:
    """The region says model.size swinv2_t; the checkpoint is a demo model."""
    config = changed_copy(region["config"], "tiny", tmp_path,
                          lambda s: s.update(model={"size": "swinv2_t"}))
    tile = inner_tile(region)
    out = tmp_path / "out" / f"{tile}.tif"
    model = region["models"]["nsp"]
    rc, line = cli(capsys, *predict_args(region, tile, region["by_tile"], out, config=config))
    assert rc == 1
    assert line == (f"error: {model}: checkpoint is model size 'demo', expected 'swinv2_t'; give "
                    "a checkpoint of the configured size or change model.size")
    assert_nothing_written(out)


def test_predict_with_a_model_of_another_scaling(region: dict, tmp_path: Path, capsys) -> None:
    """A checkpoint whose normalisation uses another fixed Sentinel-2 scaling (an older mapper's):
    one line naming the checkpoint, nothing written."""
    torch.manual_seed(0)
    norm = demo_normalisation()
    norm["other_s2_divisor"] = 2 * norm["other_s2_divisor"]
    model = save_checkpoint(tmp_path / "old.pt", MiSo(ModelConfig.named("demo"), n_out=1),
                            task="nsp", bands=STACK_BANDS, normalisation=norm, classes=["nsp"])
    tile = inner_tile(region)
    out = tmp_path / "out" / f"{tile}.tif"
    rc, line = cli(capsys, *predict_args(region, tile, region["by_tile"], out, model=model))
    assert rc == 1
    assert line == (f"error: {model}: normalisation uses another Sentinel-2 scaling than this "
                    "mapper's; retrain")
    assert_nothing_written(out)


@pytest.mark.parametrize("option, value, says", [
    ("--threads", "0", "0 is not at least 1"),
    ("--batch-size", "-4", "-4 is not at least 1"),
    ("--threads", "two", "'two' is not a whole number"),
])
def test_predict_counts_below_one_are_refused_by_the_parser(
    region: dict, tmp_path: Path, capsys, option: str, value: str, says: str
) -> None:
    tile = inner_tile(region)
    out = tmp_path / "out" / f"{tile}.tif"
    args = [str(a) for a in predict_args(region, tile, region["by_tile"], out)]
    with pytest.raises(SystemExit) as exc:
        main([*args, option, value])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"error: argument {option}: {says}")
    assert_nothing_written(out)


def test_load_checkpoint_checks_size_and_task(region: dict) -> None:
    model = region["models"]["nsp"]
    with pytest.raises(CheckpointError, match=r"nsp.pt: checkpoint is model size 'demo', "
                       r"expected 'swinv2_b'"):
        load_checkpoint(model, expect_size="swinv2_b")
    with pytest.raises(CheckpointError, match=r"nsp.pt: checkpoint is for task 'nsp', expected "
                       r"'pretrain'"):
        load_checkpoint(model, expect_task="pretrain")
    _, meta = load_checkpoint(model, expect_size="demo", expect_task="nsp")
    assert meta.task == "nsp" and meta.config.name == "demo"


@pytest.mark.parametrize("fault", ["missing", "garbage", "truncated"])
def test_predict_with_a_missing_or_damaged_model(region: dict, tmp_path: Path, capsys,
                                                 fault: str) -> None:
    tile = inner_tile(region)
    model = tmp_path / "nsp.pt"
    if fault == "garbage":
        model.write_bytes(b"this is not a checkpoint")
    elif fault == "truncated":
        truncate(region["models"]["nsp"], model, 0.5)
    out = tmp_path / "out" / f"{tile}.tif"
    rc, line = cli(capsys, *predict_args(region, tile, region["by_tile"], out, model=model))
    assert rc == 1 and line.startswith(f"error: {model}: ")
    if fault == "missing":
        assert line.endswith("no such checkpoint; train the model first or fix the path")
    else:
        assert "unreadable checkpoint, damaged or not a torch file" in line
        assert line.endswith("delete it and rerun training")
    assert_nothing_written(out)


# -- downloads (what tests/test_sources_http.py does not cover) ---------------------------------


def test_a_server_that_never_answers_is_bounded_and_reported(tmp_path: Path) -> None:
    """A server that accepts the connection but never sends a status line: each attempt ends at
    the timeout, the attempts are bounded, and nothing is left behind."""
    import socket

    from mapper.errors import SourceError
    from mapper.sources.http import download

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn)  # held open, never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/dem.tif"
    dest = tmp_path / "dem.tif"
    try:
        with pytest.raises(SourceError) as err:
            download(url, dest, retries=1, backoff=0.001, timeout=0.5)
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
    msg = str(err.value)
    assert "\n" not in msg and url in msg and str(dest) in msg
    assert "timed out" in msg.lower() and "gave up after 2 attempts" in msg
    assert len(accepted) == 2  # each attempt connected, waited its timeout and gave up
    assert_nothing_written(dest)


def test_fetch_command_checksum_mismatch(fetch_config: Callable[[dict], Path], tmp_path: Path,
                                         capsys) -> None:
    from httpserver import LoopbackServer

    payload = bytes(range(256)) * 100
    with LoopbackServer() as server:
        url = server.add_file("/dem.tif", payload)
        config = fetch_config({"dem": {"kind": "http", "files": [
            {"url": url, "sha256": "0" * 64, "size": len(payload)}]}})
        out = tmp_path / "resources" / "r" / "sources" / "dem" / "dem.tif"
        rc, line = cli(capsys, "fetch", "--config", config, "--region", "r", "--source", "dem",
                       "--file", "dem.tif", "--out", out)
    assert rc == 1 and line.startswith(f"error: {url} -> {out}: sha256 ")
    assert "differs from the region file's " + "0" * 64 in line
    assert_nothing_written(out)
    assert not out.with_name("dem.tif.json").exists()


# -- the real process ---------------------------------------------------------------------------


def test_the_command_line_prints_one_error_line_and_exits_1(region: dict, tmp_path: Path
                                                            ) -> None:
    """Through ``python -m mapper`` (as a workflow job runs it): exit status 1, the last line of
    stderr is the error, no traceback."""
    tile = inner_tile(region)
    bad = zero_blocks(region["by_tile"][tile], tmp_path / "bad.tif")
    stacks = with_stack(region, tmp_path, tile, bad)
    out = tmp_path / "out" / "points.parquet"
    run = subprocess.run([sys.executable, "-m", "mapper",
                          *map(str, samples_args(region, out, stacks=stacks))],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {stacks[tile]}: ") and "Traceback" not in run.stderr
    assert sum(line.startswith("error:") for line in lines) == 1
    assert run.stdout == ""
    assert_nothing_written(out)
