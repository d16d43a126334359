"""The synthetic demo sources: determinism, declared formats, coverage, observations, truth.

Most tests use a 3 x 3 km region (the landscape is laid out relative to the region, so a small
region holds every landform in miniature and synthesizes in a few seconds).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.enums import Resampling
from scipy import ndimage
from tiny_region import demo_sources, write_tiny_region

from mapper.bands import CLASS_NODATA, SOIL_ORDERS
from mapper.cli import main as cli_main
from mapper.config import load_config, load_region
from mapper.demo.grids import buffered
from mapper.demo.render import S2_NATIVE, render_sentinel2
from mapper.demo.sources import (
    FILES,
    MARGIN,
    demo_grids,
    demo_seed,
    demo_world,
    synthesize_demo,
    world_window,
)  # fmt: skip
from mapper.demo.survey import survey
from mapper.demo.world import TUNDRA, class_shares
from mapper.errors import ConfigError
from mapper.raster import write_geotiff
from mapper.warp import warp_to_grid

ROOT = Path(__file__).resolve().parents[1]
TINY_BOUNDS = (250_000.0, 1_635_000.0, 253_000.0, 1_638_000.0)  # 3 x 3 km, EPSG:3338
SEED = 7


def _region_files(folder: Path, bounds: tuple[float, ...], seed: int = SEED) -> Path:
    """A region ``tiny`` of 256 px tiles over ``bounds`` whose sources are demo ``seed``."""
    return write_tiny_region(folder, bounds, 256, sources=demo_sources(seed))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tiny")
    config = _region_files(folder, TINY_BOUNDS)
    region = load_region(load_config(config), "tiny")
    paths = synthesize_demo(region, folder / "out")
    return region, paths


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_runs_are_byte_identical(tiny, tmp_path: Path) -> None:
    region, first = tiny
    second = synthesize_demo(region, tmp_path / "again")
    for what in FILES:
        assert first[what].read_bytes() == second[what].read_bytes(), what
    m1 = json.loads(first["manifest"].read_text())
    m2 = json.loads(second["manifest"].read_text())
    strip = [{k: v for k, v in item.items() if k != "path"} for item in m1["items"]]
    assert strip == [{k: v for k, v in item.items() if k != "path"} for item in m2["items"]]
    assert m1["created"] is None and m1["synthetic"] is True and m1["seed"] == SEED


def test_another_seed_gives_another_world(tmp_path: Path) -> None:
    config = _region_files(tmp_path, (250_000.0, 1_635_000.0, 251_000.0, 1_636_000.0), seed=8)
    region = load_region(load_config(config), "tiny")
    paths = synthesize_demo(region, tmp_path / "out")
    region7 = dataclasses.replace(
        region,
        settings={**region.settings, "sources": {
            s: {"kind": "demo", "seed": SEED} for s in region.settings["sources"]}},
    )  # fmt: skip
    paths7 = synthesize_demo(region7, tmp_path / "out7")
    assert _sha(paths["dem"]) != _sha(paths7["dem"])
    assert _sha(paths["truth_nsp"]) != _sha(paths7["truth_nsp"])


def test_manifest_lists_every_file_with_its_checksum(tiny) -> None:
    _, paths = tiny
    manifest = json.loads(paths["manifest"].read_text())
    assert manifest["kind"] == "demo" and manifest["synthetic"] is True
    items = {item["what"]: item for item in manifest["items"]}
    assert set(items) == set(FILES)
    for what, item in items.items():
        assert Path(item["path"]) == paths[what]
        assert item["size"] == paths[what].stat().st_size
        assert item["sha256"] == _sha(paths[what])
        assert item["synthetic"] is True and item["seed"] == SEED


def test_no_temporary_files_left(tiny) -> None:
    _, paths = tiny
    for folder in {p.parent for p in paths.values()}:
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_sentinel2_declared_format(tiny) -> None:
    region, paths = tiny
    with rasterio.open(paths["sentinel2"]) as src:
        assert src.crs.to_epsg() == 32606
        assert src.res == (10.0, 10.0)
        assert src.count == 9 and set(src.dtypes) == {"uint16"}
        assert src.nodata == 0
        assert list(src.descriptions) == list(S2_NATIVE)
        assert src.tags()["SYNTHETIC"] == "true" and src.tags()["MAPPER_SYNTHETIC"] == "true"
        assert "TIFFTAG_DATETIME" not in src.tags()
        data = src.read()
        transform = src.transform
    # a pixel is nodata in every band or in none, and the cloud gap is a sizeable hole
    zero = data == 0
    assert np.array_equal(zero.all(axis=0), zero.any(axis=0))
    gap = zero[0]
    assert 0.002 < gap.mean() < 0.2
    labels, count = ndimage.label(gap)
    assert count >= 1
    # plausible spectra: vegetation has NIR (B08) well above red (B04) on most valid pixels
    valid = ~gap
    nir, red = data[6][valid].astype(float), data[2][valid].astype(float)
    assert np.median(nir) > 2 * np.median(red)
    assert 100 < np.median(nir) < 5000
    # the UTM grid is not the lattice: rotated against Alaska Albers
    to_albers = Transformer.from_crs(32606, 3338, always_xy=True)
    (x0, x1), (y0, y1) = to_albers.transform([transform.c, transform.c + 1000.0],
                                             [transform.f, transform.f])  # fmt: skip
    assert abs(math.degrees(math.atan2(y1 - y0, x1 - x0))) > 1.0


def test_dem_climate_truth_declared_formats(tiny) -> None:
    region, paths = tiny
    with rasterio.open(paths["dem"]) as src:
        assert src.crs.to_epsg() == 4326
        assert src.res == pytest.approx((1 / 3600, 1 / 3600), abs=1e-12)
        assert src.dtypes[0] == "float32" and src.nodata == -9999
        assert src.tags()["MAPPER_SYNTHETIC"] == "true"
        dem = src.read(1)
    assert (dem != -9999).all() and 90 < dem.min() and dem.max() < 1500

    with rasterio.open(paths["climate"]) as src:
        assert src.crs.to_epsg() == 3338 and src.res == (1000.0, 1000.0)
        assert list(src.descriptions) == ["precip_annual", "summer_warmth", "jan_tmin"]
        assert set(src.dtypes) == {"float32"} and src.nodata == -9999
        x0, y0 = src.transform.c, src.transform.f
        clim = src.read()
    lattice = region.lattice
    assert (x0 - lattice.origin_x) % 10 != 0 and (lattice.origin_y - y0) % 10 != 0
    assert 150 < clim[0].min() and clim[0].max() < 1000  # mm
    assert 500 < clim[1].min() and clim[1].max() < 2500  # degree-days
    assert -40 < clim[2].min() and clim[2].max() < -10  # deg C

    for what, dtype in [("truth_nsp", "float32"), ("truth_soilorder", "uint8")]:
        with rasterio.open(paths[what]) as src:
            assert src.crs.to_epsg() == 3338 and src.res == (10.0, 10.0)
            assert src.dtypes[0] == dtype
            assert (src.transform.c - lattice.origin_x) % 10 == 0
            assert (lattice.origin_y - src.transform.f) % 10 == 0
            data = src.read(1)
            nodata = src.nodata
        if what == "truth_nsp":
            assert math.isnan(nodata)
            finite = data[np.isfinite(data)]
            assert finite.min() >= 0 and finite.max() <= 1
        else:
            assert nodata == CLASS_NODATA
            assert set(np.unique(data)) <= set(range(len(SOIL_ORDERS))) | {CLASS_NODATA}


def test_every_source_covers_the_region_plus_margin(tiny) -> None:
    region, paths = tiny
    need = shapely.box(*buffered(region.boundary().bounds, MARGIN))
    for what in ("sentinel2", "dem", "climate", "truth_nsp", "truth_soilorder"):
        with rasterio.open(paths[what]) as src:
            b, crs = src.bounds, src.crs
        ring = shapely.box(*b).exterior.segmentize(
            (b[2] - b[0]) / 50 if crs.to_epsg() != 4326 else 0.001
        )  # fmt: skip
        xy = np.array(ring.coords)
        tx, ty = Transformer.from_crs(crs, 3338, always_xy=True).transform(xy[:, 0], xy[:, 1])
        footprint = shapely.Polygon(np.column_stack([tx, ty]))
        assert footprint.contains(need), what


def _observations(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["obs_id", "lon", "lat", "date", "nsp", "soil_order"]
        return list(reader)


def test_observations_columns_values_and_missing_labels(tiny) -> None:
    region, paths = tiny
    rows = _observations(paths["observations"])
    n = len(rows)
    assert n >= 300
    assert len({r["obs_id"] for r in rows}) == n
    lon = np.array([float(r["lon"]) for r in rows])
    lat = np.array([float(r["lat"]) for r in rows])
    x, y = Transformer.from_crs(4326, 3338, always_xy=True).transform(lon, lat)
    assert shapely.contains_xy(region.boundary(), x, y).all()
    dates = [dt.date.fromisoformat(r["date"]) for r in rows]
    assert min(dates) >= dt.date(1952, 1, 1) and max(dates) <= dt.date(2023, 12, 31)
    assert {r["nsp"] for r in rows} <= {"", "0", "1"}
    assert {r["soil_order"] for r in rows} <= set(SOIL_ORDERS) | {""}
    no_nsp = sum(r["nsp"] == "" for r in rows) / n
    no_soil = sum(r["soil_order"] == "" for r in rows) / n
    assert 0.15 <= no_nsp <= 0.20
    assert 0.08 <= no_soil <= 0.12
    assert not any(r["nsp"] == "" and r["soil_order"] == "" for r in rows)
    text = paths["observations"].read_text()
    assert "\r" not in text and all(len(r["lon"].split(".")[1]) == 6 for r in rows)


def test_observation_labels_agree_with_the_truth(tiny) -> None:
    _, paths = tiny
    rows = _observations(paths["observations"])
    lon = np.array([float(r["lon"]) for r in rows])
    lat = np.array([float(r["lat"]) for r in rows])
    x, y = Transformer.from_crs(4326, 3338, always_xy=True).transform(lon, lat)
    with rasterio.open(paths["truth_nsp"]) as src:
        nsp = src.read(1)
        rr, cc = rasterio.transform.rowcol(src.transform, x, y)
    with rasterio.open(paths["truth_soilorder"]) as src:
        soil = src.read(1)
    p = nsp[rr, cc]
    assert np.isfinite(p).all()  # no observation on open water
    label = np.array([r["nsp"] for r in rows])
    assert p[label == "1"].mean() > p[label == "0"].mean() + 0.2
    names = np.array([r["soil_order"] for r in rows])
    has = names != ""
    truth_names = np.array(SOIL_ORDERS)[soil[rr, cc][has]]
    assert (truth_names == names[has]).mean() > 0.9


def test_polygon_texture_is_a_neighbourhood_signal(tiny, tmp_path: Path) -> None:
    """Inside and outside ice-wedge polygon fields, tundra pixels have the same spectrum one by
    one (on the lattice, after the stack's bilinear warp) but not the same local texture."""
    region, _ = tiny
    grids = demo_grids(region)
    world = demo_world(region, grids)
    nir_band = S2_NATIVE.index("B08")
    s2 = grids.sentinel2
    image = render_sentinel2(world, s2, demo_seed(region))[nir_band : nir_band + 1]
    write_geotiff(tmp_path / "nir.tif", image, s2.transform, s2.crs, nodata=0)
    window = grids.truth
    lat = warp_to_grid(tmp_path / "nir.tif", "EPSG:3338", region.lattice.window_transform(window),
                       (int(window.height), int(window.width)), Resampling.bilinear)[0]  # fmt: skip
    crop = world_window(world, region, window)
    tundra = ndimage.binary_erosion(world.cover[crop] == TUNDRA, iterations=4) & np.isfinite(lat)
    weight = world.polygon_weight[crop]
    slope_ok = world.elevation[crop] < np.percentile(world.elevation[crop][tundra], 90)
    inside, outside = tundra & (weight > 0.99), tundra & (weight < 0.01) & slope_ok
    assert inside.sum() > 500 and outside.sum() > 500
    a, b = lat[inside], lat[outside]
    # one pixel at a time: same centre and spread within a few percent
    assert abs(np.median(a) - np.median(b)) < 0.1 * np.std(b)
    assert 0.8 < np.std(a) / np.std(b) < 1.25
    # over 5 x 5 pixels (50 m): far more local contrast inside polygon fields
    filled = np.where(np.isfinite(lat), lat, 0.0)
    var = ndimage.uniform_filter(filled**2, 5) - ndimage.uniform_filter(filled, 5) ** 2
    local = np.sqrt(np.maximum(var, 0))
    assert np.median(local[inside]) > 2.0 * np.median(local[outside])
    # and the texture carries the truth: NSP ~0.9 in polygon fields, ~0.3 in other tundra
    nsp = world.nsp[crop]
    assert np.nanmean(nsp[inside]) > 0.8 and np.nanmean(nsp[outside]) < 0.45


def test_region_errors_name_the_file(tiny) -> None:
    region, _ = tiny
    settings = region.settings
    bad_kind = {**settings, "sources": {**settings["sources"], "dem": {"kind": "file",
                                                                        "path": "x.tif"}}}
    file = re.escape(str(region.path))
    with pytest.raises(ConfigError, match=rf"^{file}: sources\.dem\.kind is 'file'; .* 'demo'$"):
        demo_seed(dataclasses.replace(region, settings=bad_kind))
    no_seed = {**settings, "sources": {**settings["sources"], "sentinel2": {"kind": "demo"}}}
    with pytest.raises(ConfigError, match=rf"^{file}: sources\.sentinel2 has no 'seed'; add "):
        demo_seed(dataclasses.replace(region, settings=no_seed))
    with pytest.raises(ConfigError, match=rf"^{file}: demo sources are synthetic; .*synthetic: "
                                          "true"):
        demo_seed(dataclasses.replace(region, settings={**settings, "synthetic": False}))


def test_cli_runs_the_synthesis(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = _region_files(tmp_path, (250_000.0, 1_635_000.0, 251_000.0, 1_636_000.0))
    out = tmp_path / "cli"
    status = cli_main(["demo", "--config", str(config), "--region", "tiny", "--out", str(out)])
    assert status == 0
    assert capsys.readouterr().out.strip() == str(out / "sources" / "manifest.json")
    assert all((out / rel).exists() for rel in FILES.values())


def test_fetch_of_a_demo_source_writes_into_the_sources_folder_given(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``fetch --out`` names the region's sources folder; a demo source, synthesized with the
    truth beside it, refuses a folder of another name rather than writing next to it."""
    config = _region_files(tmp_path, (250_000.0, 1_635_000.0, 251_000.0, 1_636_000.0))
    mine = tmp_path / "run" / "mine"
    args = ["fetch", "--config", str(config), "--region", "tiny", "--source", "dem", "--out"]
    assert cli_main([*args, str(mine)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {mine}: a demo region's sources")
    assert "give the sources folder, named sources" in err[0]
    assert not (tmp_path / "run").exists()
    assert cli_main([*args, str(tmp_path / "run" / "sources")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "run" / "sources" / "manifest.json")
    assert all((tmp_path / "run" / rel).exists() for rel in FILES.values())


@pytest.mark.slow
def test_full_demo_holds_every_class() -> None:
    """On the demo region itself, every soil order covers >= 3 % of the land and of the
    observations, and polygon fields carry NSP ~0.9 against ~0.3 for other lowland tundra."""
    region = load_region(load_config(ROOT / "config/config.yaml"), "demo")
    world = demo_world(region)
    crop = world_window(world, region, region.lattice.bounds_window(region.boundary().bounds))
    shares = class_shares(world.soilorder[crop])
    assert min(shares.values()) >= 0.03, shares
    table = survey(world, region.boundary(), demo_seed(region))
    labelled = table["soil_order"][table["soil_order"] != CLASS_NODATA]
    counts = np.bincount(labelled, minlength=len(SOIL_ORDERS)) / len(table["soil_order"])
    assert counts.min() >= 0.03, dict(zip(SOIL_ORDERS, counts, strict=True))
    assert 1300 <= len(table["obs_id"]) <= 1700
    tundra = world.cover[crop] == TUNDRA
    weight = world.polygon_weight[crop]
    nsp = world.nsp[crop]
    assert np.nanmean(nsp[tundra & (weight > 0.99)]) > 0.85
    assert 0.2 < np.nanmean(nsp[tundra & (weight < 0.01)]) < 0.4
    assert (weight > 0.5).mean() > 0.05
