"""Map products: COGs that validate, proper overviews, colour table and class names, provenance
tags, quick-look, QGIS style and a valid STAC Item, from hand-made predicted tiles."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely
import shapely.geometry
from damage import assert_one_write_failure
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate
from tiny_region import ORIGIN, write_tiny_region

from mapper.bands import SOIL_ORDERS
from mapper.config import load_config, load_region
from mapper.errors import InputError
from mapper.grid import Lattice
from mapper.products import make_products, product_paths
from mapper.products.stac import footprint_4326, validate_item
from mapper.raster import write_geotiff
from mapper.tasks import TASKS

TILE = 64
LEFT, TOP = 241_600.0, 1_647_680.0  # on the 64 px tile lattice: tiles R1488C4440..R1489C4441
SIZE = 2 * TILE * 10.0  # a region of 2 x 2 tiles (m)


def write_tiles(root: Path, task: str, values: np.ndarray, model_sha: str,
                tags: dict[str, str] | None = None) -> list[Path]:
    """Cut a [bands, 128, 128] float array (NaN nodata) into the region's 4 predicted tiles (with
    ``tags`` besides the task and model)."""
    lattice = Lattice(*ORIGIN, 10.0, TILE)
    names = SOIL_ORDERS if task == "soilorder" else ["nsp"]
    paths = []
    for tile in ["R1488C4440", "R1488C4441", "R1489C4440", "R1489C4441"]:
        row, col = lattice.parse(tile)
        r0, c0 = (row - 1488) * TILE, (col - 4440) * TILE
        path = root / "predict" / task / f"{tile}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_geotiff(path, values[:, r0:r0 + TILE, c0:c0 + TILE].astype(np.float32),
                      lattice.tile_transform(tile), "EPSG:3338", nodata=np.nan,
                      descriptions=names,
                      tags={"MAPPER_TASK": task, "MAPPER_MODEL_SHA256": model_sha,
                            **(tags or {})})
        paths.append(path)
    return paths


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, str]:
    config = write_tiny_region(tmp_path, (LEFT, TOP - SIZE, LEFT + SIZE, TOP), TILE,
                               prediction={"crop_px": 64, "stride_px": 32})
    model = tmp_path / "model.pt"
    model.write_bytes(b"not really a model, only its checksum matters here")
    sources = tmp_path / "sources" / "dem"
    sources.mkdir(parents=True)
    (sources / "manifest.json").write_text(json.dumps({
        "what": "mapper source manifest", "version": 1, "region": "tiny", "source": "dem",
        "kind": "demo", "synthetic": True, "items": [{"path": "dem.tif", "sha256": "ab" * 32}]}))
    return config, model, hashlib.sha256(model.read_bytes()).hexdigest()


def nsp_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, (1, 128, 128))
    p[0, :2, :2] = [[0.10, 0.20], [0.30, 0.40]]  # overview pixel (0, 0): average 25 %
    p[0, 100:, 100:] = np.nan  # nodata corner
    return p


def soil_values() -> np.ndarray:
    rng = np.random.default_rng(1)
    cls = rng.integers(0, 7, (128, 128))
    cls[:2, :2] = [[5, 2], [2, 6]]  # mode 2, nearest (top-left) 5, mean 3.75
    logits = rng.normal(0, 0.3, (7, 128, 128))
    np.put_along_axis(logits, cls[None], 3.0, axis=0)
    p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    p[:, :10, 120:] = np.nan
    return p


def mosaic(setup: tuple[Path, Path, str], task: str, values: np.ndarray):  # noqa: ANN201
    config, model, sha = setup
    root = config.parent
    tiles = write_tiles(root, task, values, sha)
    out = root / "maps" / f"{task}_tiny.tif"
    region = load_region(load_config(config), "tiny")
    return make_products(region, task, model, tiles, out, sources_dir=root / "sources")


def test_nsp_products(setup: tuple[Path, Path, str]) -> None:
    p = nsp_values()
    products = mosaic(setup, "nsp", p)
    assert products.all() == list(product_paths(products.cog, "nsp").values())[:1] + [
        products.quicklook, products.style, products.item]
    valid, errors, _ = cog_validate(str(products.cog), quiet=True)
    assert valid, errors
    with rasterio.open(products.cog) as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.crs.to_epsg() == 3338
        assert ds.scales == (0.01,) and ds.offsets == (0.0,)
        assert ds.block_shapes[0] == (512, 512) and ds.overviews(1) == [2]
        assert ds.bounds == pytest.approx((LEFT, TOP - 1280, LEFT + 1280, TOP))
        data = ds.read(1)
        tags = ds.tags()
    expected = np.where(np.isnan(p[0]), 255, np.rint(np.nan_to_num(p[0]) * 100)).astype(np.uint8)
    assert np.array_equal(data, expected)
    with rasterio.open(products.cog, overview_level=0) as ov:
        over = ov.read(1)
    assert over[0, 0] == 25  # AVERAGE of 10, 20, 30, 40 (NEAREST would give 10)
    assert over[-1, -1] == 255  # nodata stays nodata
    assert tags["MAPPER_MODEL_SHA256"] == setup[2]
    recorded = json.loads(tags["MAPPER_CONFIG"])
    assert recorded["prediction"]["stride_px"] == 32
    # what remakes no map is not recorded: the tag could be older than it
    assert not {"description", "evaluation", "zones"} & set(recorded)
    assert "ensemble" not in recorded["prediction"] and "training" in recorded
    sources = json.loads(tags["MAPPER_SOURCES"])
    assert sources["dem"]["files"] == 1 and sources["sentinel2"]["manifest"] == "none found"
    assert "SYNTHETIC" in tags["MAPPER_SYNTHETIC_STATEMENT"] and tags["MAPPER_SYNTHETIC"] == "true"
    assert "percent" in tags["MAPPER_UNITS"] and tags["MAPPER_SOFTWARE"].startswith("mapper ")
    assert products.quicklook.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    qml = ET.parse(products.style).getroot()
    assert qml.find("pipe/rasterrenderer").get("type") == "singlebandpseudocolor"
    item = json.loads(products.item.read_text())
    validate_item(item)
    assert item["properties"]["proj:code"] == "EPSG:3338"
    assert item["properties"]["proj:shape"] == [128, 128]
    assert item["assets"]["data"]["href"] == "./nsp_tiny.tif"
    assert item["assets"]["data"]["raster:bands"][0]["scale"] == 0.01
    west, south, east, north = item["bbox"]
    assert -149.0 < west < east < -148.8 and 64.6 < south < north < 64.8
    loaded = pystac.Item.from_file(str(products.item))
    assert loaded.assets["thumbnail"].roles == ["thumbnail", "overview"]
    assert not list(products.cog.parent.glob(".*")), "no temporary files left behind"


def test_soilorder_products(setup: tuple[Path, Path, str]) -> None:
    p = soil_values()
    products = mosaic(setup, "soilorder", p)
    probs_path = products.extra["probabilities"]
    for path in (products.cog, probs_path):
        valid, errors, _ = cog_validate(str(path), quiet=True)
        assert valid, errors
    with rasterio.open(products.cog) as ds:
        cls = ds.read(1)
        cmap = ds.colormap(1)
        assert ds.nodata == 255 and ds.tags(1)["CLASS_2"] == "Gelisols"
        assert json.loads(ds.tags(1)["CLASS_NAMES"]) == SOIL_ORDERS
    expected = np.argmax(np.nan_to_num(p, nan=-1), axis=0).astype(np.uint8)
    expected[np.isnan(p).any(axis=0)] = 255
    assert np.array_equal(cls, expected)
    assert cmap[3][:3] == TASKS["soilorder"].colours[SOIL_ORDERS.index("Histosols")]
    assert cmap[255][3] == 0
    with rasterio.open(products.cog, overview_level=0) as ov:
        assert ov.read(1)[0, 0] == 2  # MODE of 5, 2, 2, 6 (NEAREST 5, AVERAGE 4)
    assert not Path(str(products.cog) + ".aux.xml").exists()  # the names are in the file
    with rasterio.open(probs_path) as ds:
        assert ds.count == 7 and list(ds.descriptions) == SOIL_ORDERS
        assert ds.scales == (0.01,) * 7
        probs = ds.read()
        assert "MAPPER_MODEL_SHA256" in ds.tags()
        # its units are its own, not the class map's
        assert ds.tags()["MAPPER_UNITS"] == ("probability of each soil order, stored as percent "
                                             "(value x 0.01)")
    with rasterio.open(products.cog) as ds:
        assert ds.tags()["MAPPER_UNITS"].startswith("soil order class index (CLASS_NAMES)")
    ok = probs[0] != 255
    np.testing.assert_array_equal(probs[:, ok], np.rint(p[:, ok] * 100).astype(np.uint8))
    item = json.loads(products.item.read_text())
    validate_item(item)
    classes = item["assets"]["data"]["classification:classes"]
    assert [c["name"] for c in classes[:7]] == SOIL_ORDERS
    assert len(item["assets"]["probabilities"]["raster:bands"]) == 7
    assert item["assets"]["probabilities"]["title"].endswith(  # a STAC client's band names
        "one band per class in this order: " + ", ".join(SOIL_ORDERS))
    qml = ET.parse(products.style).getroot()
    labels = [e.get("label") for e in qml.iter("paletteEntry")]
    assert labels == SOIL_ORDERS


def test_soilorder_cog_as_gdal_reads_it(setup: tuple[Path, Path, str], gdalinfo: str) -> None:
    """What a GIS built on GDAL shows of the class map: the class names, the colour table and a
    COG layout."""
    products = mosaic(setup, "soilorder", soil_values())
    info = subprocess.run([gdalinfo, str(products.cog)], capture_output=True, text=True,
                          check=True).stdout
    assert "CLASS_6=Spodosols" in info and "Color Table" in info
    assert "LAYOUT=COG" in info


def test_the_maps_folder_holds_exactly_the_listed_products(setup: tuple[Path, Path, str]
                                                          ) -> None:
    """What the workflow's mosaic rules declare, and nothing beside it (no sidecar): after both
    tasks' products are made, and read as the quick-looks and a user read them."""
    mosaic(setup, "nsp", nsp_values())
    mosaic(setup, "soilorder", soil_values())
    maps = setup[0].parent / "maps"
    for cog in sorted(maps.glob("*.tif")):
        with rasterio.open(cog) as ds:
            assert ds.read(1, out_shape=(ds.height // 2, ds.width // 2)).size
            assert ds.tags(1)
    listed = ["nsp_tiny.tif", "nsp_tiny.png", "nsp_tiny.qml", "nsp_tiny.stac.json",
              "soilorder_tiny.tif", "soilorder_tiny_probabilities.tif", "soilorder_tiny.png",
              "soilorder_tiny.qml", "soilorder_tiny.stac.json"]
    assert sorted(p.name for p in maps.iterdir()) == sorted(listed)


def test_a_product_that_fails_in_its_last_file_leaves_the_earlier_product_whole(
        setup: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """As when ``python -m mapper mosaic`` is run by hand (Snakemake would also delete a failed
    job's outputs): the STAC Item, written last, fails; the COGs, quick-look and style already
    made must not replace the earlier product's, nor appear where there was none."""
    import mapper.products.mosaic as mosaic_module

    maps = setup[0].parent / "maps"
    maps.mkdir()
    earlier = ["soilorder_tiny.tif", "soilorder_tiny_probabilities.tif", "soilorder_tiny.png"]
    for name in earlier:
        (maps / name).write_bytes(b"earlier " + name.encode())

    def fail(item: object, path: Path) -> None:
        raise OSError(f"{path}: No space left on device")

    monkeypatch.setattr(mosaic_module, "write_item", fail)
    with pytest.raises(OSError, match="No space left"):
        mosaic(setup, "soilorder", soil_values())
    assert sorted(p.name for p in maps.iterdir()) == sorted(earlier)
    assert [(maps / n).read_bytes() for n in earlier] == [b"earlier " + n.encode()
                                                         for n in earlier]
    monkeypatch.undo()
    products = mosaic(setup, "soilorder", soil_values())
    assert sorted(p.name for p in maps.iterdir()) == sorted(p.name for p in products.all())
    with rasterio.open(products.cog) as ds:
        assert ds.tags()["MAPPER_TASK"] == "soilorder"


@pytest.mark.parametrize(("task", "product"), [("nsp", "map"), ("soilorder", "map"),
                                               ("nsp", "uncertainty")])
def test_a_mosaic_counts_its_blocks_and_says_which_cog_it_writes(
        setup: tuple[Path, Path, str], task: str, product: str,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A statewide mosaic runs for hours: its console counts the blocks written, then names the
    COG being written (GDAL reports no progress through rasterio), not a staged file."""
    import io
    import sys

    import mapper.products.mosaic
    import mapper.products.uncertainty
    from mapper.progress import bar

    opened: list = []

    def recording(*args: object, **kwargs: object):
        opened.append(bar(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    module = mapper.products.mosaic if product == "map" else mapper.products.uncertainty
    monkeypatch.setattr(module, "progress_bar", recording)
    monkeypatch.setattr(mapper.products.mosaic, "COLUMN_CHUNK", 32)  # 4 blocks of the 128 px
    caplog.set_level(logging.INFO, logger="mapper.products.cog")
    values = nsp_values() if task == "nsp" else soil_values()
    products = (mosaic if product == "map" else uncertainty)(setup, task, values)
    desc = f"mosaic {task}" + (" uncertainty" if product == "uncertainty" else "")
    assert [(b.desc, b.total, b.n) for b in opened] == [(desc, 4, 4)]
    writing = [r.getMessage() for r in caplog.records if r.getMessage().startswith("writing COG")]
    assert writing and writing[-1].startswith(f"writing COG {products.cog} (128 x 128 px, 1 band")


@pytest.mark.parametrize("tiles_synthetic", [True, False])
def test_products_of_synthetic_tiles_say_so_though_the_region_does_not(
        setup: tuple[Path, Path, str], tiles_synthetic: bool) -> None:
    """Tiles predicted from a synthetic file (the demo's, given to a real region) are tagged
    synthetic: the map, its STAC Item and its quick-look state it like the demo's."""
    import dataclasses

    config, model, sha = setup
    root = config.parent
    tiles = write_tiles(root, "nsp", nsp_values(), sha)
    for path in tiles:
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(MAPPER_SYNTHETIC=str(tiles_synthetic).lower())
    region = load_region(load_config(config), "tiny")
    real = dataclasses.replace(region, settings={**region.settings, "synthetic": False})
    products = make_products(real, "nsp", model, tiles, root / "maps" / "nsp_tiny.tif",
                             sources_dir=root / "sources")
    with rasterio.open(products.cog) as ds:
        tags = ds.tags()
    assert tags["MAPPER_SYNTHETIC"] == str(tiles_synthetic).lower()
    assert ("MAPPER_SYNTHETIC_STATEMENT" in tags) is tiles_synthetic
    assert json.loads(tags["MAPPER_CONFIG"])["synthetic"] is False  # the setting as given
    item = json.loads(products.item.read_text())
    assert item["properties"]["mapper:synthetic"] is tiles_synthetic
    title, description = item["properties"]["title"], item["properties"]["description"]
    assert title.endswith("(SYNTHETIC)") is tiles_synthetic  # what a catalog shows
    assert description.startswith("SYNTHETIC: ") is tiles_synthetic
    assert description.endswith(real.settings["description"].strip())


def test_tiles_of_another_model_are_refused(setup: tuple[Path, Path, str]) -> None:
    config, model, _ = setup
    tiles = write_tiles(config.parent, "nsp", nsp_values(), "0" * 64)
    with pytest.raises(InputError, match="rerun predict with this model"):
        make_products(load_region(load_config(config), "tiny"), "nsp", model, tiles,
                      config.parent / "maps" / "nsp_tiny.tif")
    assert not (config.parent / "maps" / "nsp_tiny.tif").exists()


@pytest.mark.parametrize(("key", "old"), [("MAPPER_PRECISION", "float32"),
                                          ("MAPPER_MIN_WEIGHT", "0"),
                                          ("MAPPER_BLENDING", "weighted mean over 64 px crops")])
def test_tiles_of_other_prediction_settings_are_refused(
    setup: tuple[Path, Path, str], key: str, old: str
) -> None:
    """One tile still as predicted with the old precision, negligible weight or crops (made
    before a setting changed): one error naming it, the tile it differs from and the fix, and
    no map of mixed tiles stating the new settings."""
    config, model, sha = setup
    tiles = write_tiles(config.parent, "nsp", nsp_values(), sha)
    stated = {"MAPPER_PRECISION": "bfloat16", "MAPPER_MIN_WEIGHT": "0.02",
              "MAPPER_BLENDING": "weighted mean over 64 px crops, stride 32 px"}
    for i, tile in enumerate(sorted(tiles)):
        with rasterio.open(tile, "r+") as ds:
            ds.update_tags(**{**stated, **({key: old} if i == 2 else {})})
    odd, first = sorted(tiles)[2], sorted(tiles)[0]
    out = config.parent / "maps" / "nsp_tiny.tif"
    with pytest.raises(InputError) as err:
        make_products(load_region(load_config(config), "tiny"), "nsp", model, tiles, out)
    assert str(err.value).startswith(f"{odd}: {key} {old!r} differs from {first} "
                                     f"({stated[key]!r}): the tiles were predicted with other "
                                     "prediction settings; rerun predict for the tiles")
    assert not out.exists()


@pytest.mark.parametrize("which", ["one", "all"])
def test_a_tile_without_nan_nodata_is_named_with_the_fix(
    setup: tuple[Path, Path, str], which: str
) -> None:
    """A predicted tile of another version or copied in by hand (here with a finite nodata
    value): its nodata would be read as probabilities (-9999 as 0 %, class 0) even when every
    tile agrees. One error naming it and what to do about a predicted tile, and no map."""
    config, model, sha = setup
    tiles = write_tiles(config.parent, "nsp", nsp_values(), sha)
    odd = sorted(tiles)[-1]
    for path in tiles if which == "all" else [odd]:
        with rasterio.open(path, "r+") as ds:
            ds.nodata = -9999.0
    out = config.parent / "maps" / "nsp_tiny.tif"
    with pytest.raises(InputError) as caught:
        make_products(load_region(load_config(config), "tiny"), "nsp", model, tiles, out)
    named = odd if which == "one" else sorted(tiles)[0]
    assert str(caught.value) == (
        f"{named}: float32 with nodata -9999.0, not float32 with NaN nodata as predict writes; "
        "delete that tile and run the same target again (its predict job makes it again)")
    assert not out.exists()


def test_one_tile_given_twice_from_two_folders_is_refused(setup: tuple[Path, Path, str]) -> None:
    """A stale copy of a tile passed beside the current one (another folder, the same
    <tile>.tif) would silently win or lose in the mosaic by path order: one error naming both."""
    config, model, sha = setup
    tiles = write_tiles(config.parent, "nsp", nsp_values(), sha)
    first = sorted(tiles)[0]
    stale = config.parent / "backup" / first.name
    stale.parent.mkdir()
    stale.write_bytes(first.read_bytes())
    out = config.parent / "maps" / "nsp_tiny.tif"
    with pytest.raises(InputError) as caught:
        make_products(load_region(load_config(config), "tiny"), "nsp", model,
                      [*tiles, stale], out)
    assert str(caught.value) == (f"{stale}: tile {first.stem} given twice ({first}); pass one "
                                 "file per tile")
    assert not out.exists()
    # the same file named twice (another spelling of its path) is one tile: accepted
    again = first.parent / ".." / first.parent.name / first.name
    make_products(load_region(load_config(config), "tiny"), "nsp", model, [*tiles, again], out)
    assert out.exists()


def test_a_tile_whose_bands_are_other_classes_is_refused(setup: tuple[Path, Path, str]) -> None:
    """Every tile's bands are the task's classes in the task's order: a tile of a class list in
    another order (another version's) would put each probability under another class's name and
    colour. One error naming it and the fix, and no map."""
    config, model, sha = setup
    tiles = write_tiles(config.parent, "soilorder", soil_values(), sha)
    odd = sorted(tiles)[1]
    with rasterio.open(odd, "r+") as ds:
        for band, name in enumerate(reversed(SOIL_ORDERS), start=1):
            ds.set_band_description(band, name)
    out = config.parent / "maps" / "soilorder_tiny.tif"
    with pytest.raises(InputError) as caught:
        make_products(load_region(load_config(config), "tiny"), "soilorder", model, tiles, out)
    assert str(caught.value) == (
        f"{odd}: bands {', '.join(reversed(SOIL_ORDERS))}, not the soilorder task's "
        f"{', '.join(SOIL_ORDERS)} in that order; delete that tile and run the same target again "
        "(its predict job makes it again)")
    assert not out.exists()


def test_the_items_period_is_the_scene_searchs() -> None:
    """The STAC Item's end_datetime is the end of the period's last day, as the scene search
    takes it (2023-08-31T23:59:59.999999Z), not its first instant."""
    from datetime import UTC, datetime

    from mapper.products.mosaic import source_period

    alaska = load_region(load_config(), "alaska")
    assert alaska.settings["sources"]["sentinel2"]["datetime"] == "2019-06-01/2023-08-31"
    assert source_period(alaska) == (datetime(2019, 6, 1, tzinfo=UTC),
                                     datetime(2023, 8, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert source_period(load_region(load_config(), "demo")) is None  # no scenes: no period


def test_footprint_is_cut_at_the_antimeridian() -> None:
    """Cut at 180 degrees into a MultiPolygon, each part's outer ring counterclockwise as RFC 7946
    (section 3.1.6) requires of GeoJSON."""
    import shapely

    geom, bbox = footprint_4326((-1_500_000.0, 400_000.0, 1_500_000.0, 2_400_000.0))
    assert geom["type"] == "MultiPolygon"
    assert bbox[0] > bbox[2]  # west > east across 180 degrees
    parts = shapely.get_parts(shapely.geometry.shape(geom))
    assert len(parts) == 2 and all(shapely.is_ccw(p.exterior) for p in parts)
    geom, bbox = footprint_4326((241_600.0, 1_627_200.0, 262_080.0, 1_647_680.0))
    assert geom["type"] == "Polygon" and bbox[0] < bbox[2]
    assert shapely.is_ccw(shapely.geometry.shape(geom).exterior)


def test_footprint_covers_the_raster_to_its_edges() -> None:
    """Points along the four edges of the statewide map's extent (which crosses 180 degrees) are
    inside the Item's geometry, and points 3 m beyond them are not: the straight lon/lat segments
    neither cut into the raster nor stray from it (64 points per edge left up to 169 m of the top
    edge outside)."""
    import shapely
    from pyproj import Transformer

    from mapper.products.stac import EDGE_TOLERANCE_M

    left, bottom, right, top = -2_170_560.0, 413_250.0, 1_495_580.0, 2_376_940.0  # alaska
    geom = shapely.geometry.shape(footprint_4326((left, bottom, right, top))[0])
    to_lonlat = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True)
    t = np.linspace(0.0, 1.0, 5001)
    for beyond in (0.0, 3.0 * EDGE_TOLERANCE_M):
        edges = {
            "top": (left + (right - left) * t, np.full_like(t, top + beyond)),
            "bottom": (left + (right - left) * t, np.full_like(t, bottom - beyond)),
            "left": (np.full_like(t, left - beyond), bottom + (top - bottom) * t),
            "right": (np.full_like(t, right + beyond), bottom + (top - bottom) * t),
        }
        for side, (xs, ys) in edges.items():
            lon, lat = to_lonlat.transform(xs, ys)
            inside = np.zeros(t.size, bool)
            for shift in (-360.0, 0.0, 360.0):  # the two sides of the cut at 180 degrees
                inside |= shapely.covers(geom, shapely.points(np.column_stack([lon + shift, lat])))
            assert inside.all() if beyond == 0.0 else not inside.any(), (side, beyond)


def test_the_statewide_footprint_is_the_mapped_land_not_the_rectangle() -> None:
    """The statewide Item's geometry is Alaska's mapped area (the buffered coastline, cut at 180
    degrees; each outer ring counterclockwise), so a catalog search in the Yukon or the North
    Pacific does not return it: it holds every point of the area and the corners of pixels
    whose centre lies on its outline, and no point of Whitehorse, Vancouver Island or the sea
    south of the Aleutians; its bbox runs from Attu (172.4 E) east across 180 degrees."""
    import shapely
    from pyproj import Transformer

    from mapper.products.stac import area_footprint_4326

    region = load_region(load_config("config/config.yaml"), "alaska")
    area = region.area()
    bounds = (-2_170_560.0, 413_250.0, 1_495_580.0, 2_376_940.0)  # the map's raster
    geometry, bbox = area_footprint_4326(area, bounds, 10.0)
    footprint = shapely.geometry.shape(geometry)
    assert geometry["type"] == "MultiPolygon" and shapely.get_num_coordinates(footprint) < 10_000
    assert all(shapely.is_ccw(part.exterior) for part in shapely.get_parts(footprint))
    assert bbox[0] == pytest.approx(172.41, abs=0.01) and bbox[2] < -129 and bbox[0] > bbox[2]
    to_lonlat = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True)

    def covered(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # (points of the raster)
        x, y = np.clip(x, bounds[0], bounds[2]), np.clip(y, bounds[1], bounds[3])
        lon, lat = to_lonlat.transform(x, y)
        return np.any([shapely.covers(footprint, shapely.points(lon + shift, lat))
                       for shift in (-360.0, 0.0, 360.0)], axis=0)

    outline = shapely.get_coordinates(shapely.segmentize(area.boundary, 2_000.0))
    for dx, dy in ((-5, -5), (-5, 5), (5, -5), (5, 5)):  # a 10 m pixel centred on the outline
        assert covered(outline[:, 0] + dx, outline[:, 1] + dy).all(), (dx, dy)
    rng = np.random.default_rng(0)
    x = rng.uniform(area.bounds[0], area.bounds[2], 20_000)
    y = rng.uniform(area.bounds[1], area.bounds[3], 20_000)
    inside = shapely.contains_xy(area, x, y)
    assert inside.sum() > 2_000 and covered(x[inside], y[inside]).all()
    elsewhere = shapely.points([(-135.05, 60.72), (-125.5, 49.6), (-170.0, 49.5)])
    assert not shapely.covers(footprint, elsewhere).any()


def test_products_cover_the_mapped_area_and_the_quicklook_draws_it(
    setup: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """A triangle given in EPSG:4326 inside the 2 x 2 tiles: the products' grid is its bounding
    box snapped outward to the 10 m out grid (not the tiles'), cut from the tiles unchanged; the
    quick-look differs from one without the outline; tiles that leave part of the area uncovered
    are refused."""
    import math

    from tiny_region import changed_copy, lonlat_boundary

    from mapper.products.quicklook import write_quicklook
    from mapper.tasks import get_task

    config, model, sha = setup
    corners = [(LEFT + 123.4, TOP - 1000.0), (LEFT + 1100.0, TOP - 1203.3),
               (LEFT + 600.0, TOP - 77.7)]
    geojson = tmp_path / "triangle.geojson"
    geojson.write_text(json.dumps(lonlat_boundary(corners)))
    changed = changed_copy(config, "tiny", tmp_path / "triangle",
                           lambda s: s.update(boundary=str(geojson), buffer_m=20.0))
    region = load_region(load_config(changed), "tiny")
    assert len(region.tiles()) == 4
    p = nsp_values()
    tiles = write_tiles(config.parent, "nsp", p, sha)
    out = tmp_path / "maps" / "nsp_tiny.tif"
    products = make_products(region, "nsp", model, tiles, out, sources_dir=tmp_path)
    left, bottom, right, top = region.area().bounds
    snapped = (LEFT + math.floor((left - LEFT) / 10) * 10,
               TOP - math.ceil((TOP - bottom) / 10) * 10,
               LEFT + math.ceil((right - LEFT) / 10) * 10,
               TOP - math.floor((TOP - top) / 10) * 10)
    with rasterio.open(products.cog) as ds:
        assert ds.bounds == pytest.approx(snapped)
        data = ds.read(1)
        r0, c0 = round((TOP - ds.bounds.top) / 10), round((ds.bounds.left - LEFT) / 10)
    expected = np.where(np.isnan(p[0]), 255, np.rint(np.nan_to_num(p[0]) * 100)).astype(np.uint8)
    assert np.array_equal(data, expected[r0:r0 + data.shape[0], c0:c0 + data.shape[1]])
    # the Item's footprint: every mapped pixel (its centre in the area) whole, by its 4 corners;
    # not the raster's corners
    with rasterio.open(products.cog) as ds:
        rows, cols = np.mgrid[0:ds.height, 0:ds.width]
        cx, cy = ds.xy(rows.ravel(), cols.ravel())
        mapped = shapely.contains_xy(region.area(), cx, cy)
        xs, ys = ds.xy(rows.ravel()[mapped], cols.ravel()[mapped], offset="ul")
        item = json.loads(products.item.read_text())
        rectangle = ds.bounds
    assert 1000 < mapped.sum() < mapped.size / 2
    footprint = shapely.geometry.shape(item["geometry"])
    to_lonlat = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True)
    for dx, dy in ((0, 0), (10, 0), (0, -10), (10, -10)):
        lon, lat = to_lonlat.transform(np.add(xs, dx), np.add(ys, dy))
        assert shapely.covers(footprint, shapely.points(lon, lat)).all(), (dx, dy)
    corners = to_lonlat.transform([rectangle.left, rectangle.left, rectangle.right],
                                  [rectangle.bottom, rectangle.top, rectangle.top])
    # the three corners of the bounding box away from the triangle (the fourth is its vertex)
    assert not shapely.covers(footprint, shapely.points(*corners)).any()
    task = get_task("nsp")
    title = f"{task.title}, {region.name}"  # the product's: only the outline may differ
    plain = write_quicklook(products.cog, tmp_path / "plain.png", task, title, region.synthetic)
    drawn = write_quicklook(products.cog, tmp_path / "drawn.png", task, title, region.synthetic,
                            outline=region.boundary(), area=region.area())
    assert drawn.read_bytes() == products.quicklook.read_bytes()  # the product's, made again
    assert plain.read_bytes() != products.quicklook.read_bytes()
    with pytest.raises(InputError, match="3 of its 4 mapped tiles not given"):
        make_products(region, "nsp", model, tiles[:1], tmp_path / "maps2" / "nsp_tiny.tif",
                      sources_dir=tmp_path)


# -- the uncertainty products (mapper/products/uncertainty.py) ----------------------------------


def uncertainty(setup: tuple[Path, Path, str], task: str, values: np.ndarray,
                members: list[np.ndarray] = ()):  # noqa: ANN201
    """The uncertainty product of ``values`` (the map's tiles) with members predicting
    ``members`` (each its own checkpoint)."""
    from mapper.products.uncertainty import make_uncertainty_products

    config, model, sha = setup
    root = config.parent
    tiles = write_tiles(root, task, values, sha)
    member_models, member_tiles = [], []
    for k, m in enumerate(members, start=1):
        path = root / f"member{k}.pt"
        path.write_bytes(f"member {k}".encode())
        member_models.append(path)
        member_sha = hashlib.sha256(path.read_bytes()).hexdigest()
        for tile in write_tiles(root / f"m{k}", task, m, member_sha):
            member_tiles.append(tile)
    region = load_region(load_config(config), "tiny")
    out = root / "maps" / f"{task}_tiny_uncertainty.tif"
    return make_uncertainty_products(region, task, model, tiles, out, member_models=member_models,
                                     member_tiles=member_tiles, sources_dir=root / "sources")


def binary_entropy_percent(p: np.ndarray) -> np.ndarray:
    """Independent: scipy's entropy of (1 - p, p) in base 2, as stored (percent, 255 nodata)."""
    from scipy.stats import entropy

    q = np.nan_to_num(p)
    h = entropy(np.stack([1 - q, q]), base=2, axis=0)
    return np.where(np.isnan(p), 255, np.rint(h * 100)).astype(np.uint8)


def test_nsp_uncertainty_without_ensemble_is_the_binary_entropy(
        setup: tuple[Path, Path, str]) -> None:
    p = nsp_values()
    products = uncertainty(setup, "nsp", p)
    assert products.cog.name == "nsp_tiny_uncertainty.tif"
    assert [x.name for x in products.all()] == [
        "nsp_tiny_uncertainty.tif", "nsp_tiny_uncertainty.png", "nsp_tiny_uncertainty.qml",
        "nsp_tiny_uncertainty.stac.json"]
    valid, errors, _ = cog_validate(str(products.cog), quiet=True)
    assert valid, errors
    with rasterio.open(products.cog) as ds:
        assert ds.count == 1 and ds.dtypes[0] == "uint8" and ds.nodata == 255
        assert ds.scales == (0.01,) and ds.offsets == (0.0,) and ds.overviews(1) == [2]
        assert ds.descriptions == ("normalised_entropy",)
        data = ds.read(1)
        tags = ds.tags()
    assert np.array_equal(data, binary_entropy_percent(p[0]))
    assert "normalised binary entropy" in json.loads(tags["MAPPER_UNCERTAINTY"])[
        "normalised_entropy"]
    assert tags["MAPPER_ENSEMBLE"].startswith("none") and tags["MAPPER_MODEL_SHA256"] == setup[2]
    assert tags["MAPPER_SYNTHETIC"] == "true"
    assert products.quicklook.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(products.style).getroot().find("pipe/rasterrenderer").get(
        "type") == "singlebandpseudocolor"
    item = json.loads(products.item.read_text())
    validate_item(item)
    assert item["id"] == "nsp_tiny_uncertainty"
    assert item["assets"]["data"]["href"] == "./nsp_tiny_uncertainty.tif"
    assert [b["scale"] for b in item["assets"]["data"]["raster:bands"]] == [0.01]
    assert item["assets"]["style"]["href"] == "./nsp_tiny_uncertainty.qml"
    assert not list(products.cog.parent.glob(".*")), "no temporary files left behind"


def test_nsp_ensemble_band_is_the_spread_over_the_map_and_its_members(
        setup: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import mapper.products.uncertainty as module

    drawn = {}
    real = module.write_ramp_quicklook

    def spy(*args: object, **kwargs: object) -> Path:
        drawn.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "write_ramp_quicklook", spy)
    p = nsp_values()
    m1, m2 = np.clip(p + 0.1, 0, 1), np.clip(p - 0.2, 0, 1)
    products = uncertainty(setup, "nsp", p, [m1, m2])
    assert drawn["maxima"] == [100, 50]  # a spread of probabilities is at most 50 %
    with rasterio.open(products.cog) as ds:
        assert ds.count == 2 and ds.descriptions == ("normalised_entropy", "ensemble_std")
        entropy_band, spread = ds.read(1), ds.read(2)
        tags = ds.tags()
    assert np.array_equal(entropy_band, binary_entropy_percent(p[0]))
    stacked = np.stack([p[0], m1[0], m2[0]])
    expected = np.sqrt(((stacked - stacked.mean(0)) ** 2).mean(0))  # population std
    ok = ~np.isnan(p[0])
    assert np.abs(spread[ok].astype(int) - np.rint(expected[ok] * 100)).max() == 0
    assert (spread[~ok] == 255).all()
    assert len(json.loads(tags["MAPPER_ENSEMBLE_MODELS_SHA256"])) == 2
    item = json.loads(products.item.read_text())
    assert len(item["assets"]["data"]["raster:bands"]) == 2
    assert len(item["properties"]["mapper:ensemble_models_sha256"]) == 2


def test_ramp_quicklook_tops_each_band_at_its_maximum(tmp_path: Path) -> None:
    """A band at 50 % drawn on a 0-50 % bar takes the ramp's top colour, on a 0-100 % bar its
    middle one."""
    from matplotlib.image import imread

    from mapper.products.colours import UNCERTAINTY_RAMP
    from mapper.products.quicklook import write_ramp_quicklook

    src = tmp_path / "u.tif"
    write_geotiff(src, np.full((1, 64, 64), 50, np.uint8),
                  rasterio.Affine(10, 0, LEFT, 0, -10, TOP), "EPSG:3338", nodata=255)

    def share(maxima: list[int] | None, rgb: tuple[int, int, int]) -> float:
        png = write_ramp_quicklook(src, tmp_path / f"{maxima}.png", ["spread (%)"],
                                   UNCERTAINTY_RAMP, "t", False, maxima=maxima)
        pixels = np.rint(imread(png)[..., :3] * 255).astype(int)
        return float((np.abs(pixels - rgb).max(axis=-1) <= 2).mean())

    top, middle = UNCERTAINTY_RAMP[-1][1], UNCERTAINTY_RAMP[2][1]
    assert share([50], top) > 0.2 and share([50], middle) < 0.05
    assert share(None, middle) > 0.2 and share(None, top) < 0.05


def test_soilorder_ensemble_band_is_the_share_of_members_that_disagree(
        setup: tuple[Path, Path, str]) -> None:
    p = soil_values()
    agreeing = p.copy()
    other = np.roll(p, 1, axis=0)  # every cell's most probable class moved to the next one
    products = uncertainty(setup, "soilorder", p, [agreeing, other])
    with rasterio.open(products.cog) as ds:
        assert ds.descriptions == ("normalised_entropy", "ensemble_disagreement")
        h, d = ds.read(1), ds.read(2)
    ok = np.isfinite(p).all(axis=0)
    assert (d[ok] == 50).all() and (d[~ok] == 255).all() and (h[~ok] == 255).all()
    from scipy.stats import entropy

    expected = np.rint(entropy(np.nan_to_num(p), base=7, axis=0) * 100)
    assert np.abs(h[ok].astype(int) - expected[ok]).max() == 0


def test_uncertainty_refuses_a_member_missing_tiles(setup: tuple[Path, Path, str]) -> None:
    from mapper.products.uncertainty import make_uncertainty_products

    config, model, sha = setup
    root = config.parent
    tiles = write_tiles(root, "nsp", nsp_values(), sha)
    member = root / "member1.pt"
    member.write_bytes(b"member 1")
    member_tiles = write_tiles(root / "m1", "nsp", nsp_values(),
                               hashlib.sha256(member.read_bytes()).hexdigest())[:3]
    region = load_region(load_config(config), "tiny")
    with pytest.raises(InputError, match=r"member1.pt: .*3 of 4 tiles.*predict_member"):
        make_uncertainty_products(region, "nsp", model, tiles, root / "maps" / "u.tif",
                                  member_models=[member], member_tiles=member_tiles)
    assert not (root / "maps" / "u.tif").exists()
    again = root / "copy" / "member1.pt"  # one member given twice
    again.parent.mkdir()
    again.write_bytes(member.read_bytes())
    with pytest.raises(InputError) as twice:
        make_uncertainty_products(region, "nsp", model, tiles, root / "maps" / "u.tif",
                                  member_models=[member, again], member_tiles=member_tiles)
    assert str(twice.value) == (f"{again}: the same ensemble member as {member}; pass each "
                                "member's checkpoint once")
    assert not (root / "maps" / "u.tif").exists()
    missing = root / "member2.pt"
    with pytest.raises(InputError) as gone:
        make_uncertainty_products(region, "nsp", model, tiles, root / "maps" / "u.tif",
                                  member_models=[missing], member_tiles=member_tiles)
    assert str(gone.value) == (f"{missing}: no such ensemble member checkpoint; fine-tune it "
                               "first (rule finetune_member) or check the path")
    own = write_tiles(root / "own", "nsp", nsp_values(), sha)  # the map's model, not member 1's
    with pytest.raises(InputError) as mixed:
        make_uncertainty_products(region, "nsp", model, tiles, root / "maps" / "u.tif",
                                  member_models=[member],
                                  member_tiles=write_tiles(root / "m1", "nsp", nsp_values(),
                                                           hashlib.sha256(b"member 1").hexdigest())
                                  + own[:1])
    assert str(mixed.value) == (f"{own[0]}: predicted with the map's own model, not an "
                                "ensemble member; pass the members' tiles (rule predict_member)")
    assert not (root / "maps" / "u.tif").exists()


class _Area:
    """A region as :func:`area_window` reads it: a name and its mapped area."""

    name = "box"

    def __init__(self, left: float, bottom: float, right: float, top: float) -> None:
        import shapely

        self._area = shapely.box(left, bottom, right, top)

    def area(self):
        return self._area


def test_area_window_leaves_out_a_cell_beyond_the_tiles_whose_centre_is_outside() -> None:
    """At an out_res that does not divide tile_px (50 m on 2048 px tiles), the VRT of the mapped
    tiles starts at a cell edge that is not the lattice's, and the area's box may cut a cell whose
    centre lies in the unmapped tile beyond it: that cell is left out, not an error. Within the
    VRT the box is snapped outward, as at 10 m."""
    from types import SimpleNamespace

    from affine import Affine

    from mapper.products.mosaic import area_window

    res, x0, y0 = 50.0, 1000.0, 9000.0  # the VRT: 40 x 60 cells from (x0, y0)
    vrt = SimpleNamespace(res=(res, res), transform=Affine(res, 0, x0, 0, -res, y0), width=40,
                          height=60)
    # left 10 m before the VRT (the cut cell's centre 15 m before it: left out), right 20 m into
    # the VRT's last cell, top on an edge, bottom 30 m into the last row (both snapped outward)
    window = area_window(_Area(x0 - 10, y0 - 60 * res + 20, x0 + 39 * res + 20, y0), vrt)
    assert (window.col_off, window.row_off, window.width, window.height) == (0, 0, 40, 60)
    # bottom 20 m beyond the VRT (the cut row's centre 5 m beyond it: left out)
    window = area_window(_Area(x0, y0 - 60 * res - 20, x0 + 10 * res, y0 - res), vrt)
    assert (window.col_off, window.row_off, window.width, window.height) == (0, 1, 10, 59)
    # a box on the cells' edges is the box itself
    window = area_window(_Area(x0 + 2 * res, y0 - 7 * res, x0 + 5 * res, y0 - 3 * res), vrt)
    assert (window.col_off, window.row_off, window.width, window.height) == (2, 3, 3, 4)
    with pytest.raises(InputError, match="do not cover its mapped area"):
        area_window(_Area(x0 - 2 * res, y0 - 5 * res, x0 + 5 * res, y0), vrt)


@pytest.mark.parametrize("product", ["map", "uncertainty"])
def test_a_tile_whose_blocks_fail_to_read_is_named_and_nothing_is_written(
        setup: tuple[Path, Path, str], product: str) -> None:
    """A predicted tile whose header opens but whose blocks are damaged (a disk error, a copy
    cut short) fails the mosaic with one error naming that tile and the fix, and no product."""
    from damage import zero_blocks

    from mapper.products.uncertainty import make_uncertainty_products

    config, model, sha = setup
    root = config.parent
    tiles = write_tiles(root, "nsp", nsp_values(), sha)
    zero_blocks(tiles[1], tiles[1])
    region = load_region(load_config(config), "tiny")
    out = root / "maps" / "nsp_tiny.tif"
    make = make_products if product == "map" else make_uncertainty_products
    with pytest.raises(InputError) as info:
        make(region, "nsp", model, tiles, out)
    message = str(info.value)
    assert message.startswith(f"{tiles[1]}: damaged or truncated, read failed (")
    assert f"({tiles[1].name}, band 1: IReadBlock failed" in message
    assert message.endswith("delete that tile and run the same target again (its predict job "
                            "makes it again)")
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_cog_compression_uses_the_jobs_threads(tmp_path: Path, monkeypatch) -> None:
    """Snakemake sets OMP_NUM_THREADS to the rule's threads: GDAL compresses with that many, not
    with every CPU of a machine shared with other jobs; run by hand, with every CPU."""
    from mapper.products.cog import to_cog

    asked: list[str] = []
    copy = rasterio.shutil.copy

    def spy(src, dst, **options):
        asked.append(options["NUM_THREADS"])
        return copy(src, dst, **options)

    monkeypatch.setattr(rasterio.shutil, "copy", spy)
    src = tmp_path / "src.tif"
    grid = Lattice(ORIGIN[0], ORIGIN[1], 10.0, 64)
    data = np.arange(64 * 64, dtype="uint8").reshape(1, 64, 64)
    write_geotiff(src, data, grid.transform, grid.crs, nodata=255)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    to_cog(src, tmp_path / "job.tif", resampling="AVERAGE")
    monkeypatch.delenv("OMP_NUM_THREADS")
    to_cog(src, tmp_path / "by_hand.tif", resampling="AVERAGE")
    assert asked == ["3", "ALL_CPUS"]
    for name in ("job.tif", "by_hand.tif"):
        assert cog_validate(str(tmp_path / name))[0]
        with rasterio.open(tmp_path / name) as ds:
            np.testing.assert_array_equal(ds.read(), data)


def test_percent_is_the_float64_probability_rounded_half_to_even() -> None:
    """A float32 probability x 100 rounds as in float64: NumPy 2 computes float32 x 100 in
    float32, where 0.165 (0.16500000655 as float32) is 16.5 exactly, rounded to 16, not 17, and
    0.575 (0.57499998808) is 57.5, rounded to 58, not 57. Exact halves still go to the even
    percent, NaN is nodata and values beyond 0..1 are clipped."""
    from mapper.products.mosaic import to_percent

    p = np.array([0.165, 0.575, 0.125, 0.375, 0.005, 1.0, 1.2, -0.1, np.nan], dtype=np.float32)
    expected = np.rint(p[:-1].astype(np.float64) * 100.0)
    assert list(expected[:4]) == [17, 57, 12, 38]
    got = to_percent(p)
    assert got.dtype == np.uint8
    assert list(got) == [*np.clip(expected, 0, 100).astype(int), 255]


@pytest.mark.parametrize("product", ["map", "uncertainty"])
def test_a_mosaic_missing_a_mapped_tile_is_one_error_naming_it(
        setup: tuple[Path, Path, str], product: str) -> None:
    """``python -m mapper mosaic`` run by hand with every predicted tile but one (its predict job
    failed): one error naming the missing tile and the command that makes it, and no product
    with a nodata square where the tile is."""
    from mapper.products.uncertainty import make_uncertainty_products

    config, model, sha = setup
    root = config.parent
    tiles = write_tiles(root, "nsp", nsp_values(), sha)
    region = load_region(load_config(config), "tiny")
    out = root / "maps" / "nsp_tiny.tif"
    make = make_products if product == "map" else make_uncertainty_products
    given = [t for t in tiles if t.stem != "R1489C4440"]
    with pytest.raises(InputError) as info:
        make(region, "nsp", model, given, out, sources_dir=root / "sources")
    assert str(info.value) == (
        "mosaic nsp of region tiny: 1 of its 4 mapped tiles not given (R1489C4440); make each "
        "with `snakemake --cores 1 results/tiny/predict/nsp/<tile>.tif` and pass every mapped tile")
    assert not out.parent.exists() or not list(out.parent.iterdir())


def gdal_write_error(*args: object, **kwargs: object) -> None:
    """What rasterio raises when GDAL fails to write a block (a full disk)."""
    from rasterio._err import CPLE_AppDefinedError

    try:
        raise CPLE_AppDefinedError(3, 1, "TIFFAppendToStrip:Write error at scanline 512")
    except CPLE_AppDefinedError as exc:
        raise rasterio.errors.RasterioIOError(
            "Write failed. See previous exception for details.") from exc


@pytest.mark.parametrize("product", ["map", "uncertainty"])
def test_a_failed_write_of_the_raw_raster_names_the_product_and_not_a_tile(
        setup: tuple[Path, Path, str], product: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk while the raw raster is written (GDAL's "TIFFAppendToStrip:Write error",
    raised as the RasterioIOError that a damaged tile's read raises too): one error naming the
    product and saying to free disk space, not "damaged or truncated" blaming a good tile; no
    file is left."""
    from mapper.products.uncertainty import make_uncertainty_products

    config, model, sha = setup
    root = config.parent
    tiles = write_tiles(root, "nsp", nsp_values(), sha)
    region = load_region(load_config(config), "tiny")
    out = root / "maps" / ("nsp_tiny.tif" if product == "map" else "nsp_tiny_uncertainty.tif")
    make = make_products if product == "map" else make_uncertainty_products
    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", gdal_write_error)
    with pytest.raises(InputError) as info:
        make(region, "nsp", model, tiles, out, sources_dir=root / "sources")
    assert str(info.value) == (
        f"{out}: write failed (TIFFAppendToStrip:Write error at scanline 512); free disk space "
        f"in {out.parent} (or make that folder writable) and run the same target again")
    assert not list(out.parent.iterdir())


@pytest.mark.parametrize("command", ["mosaic", "uncertainty"])
def test_the_commands_on_a_full_disk_give_one_error_line_and_no_product(
        setup: tuple[Path, Path, str], command: str) -> None:
    """The real failure: the raw raster (22 kB) cannot grow beyond 10 kB, the tiles' VRT (3 kB)
    can. rasterio reports no failure when the file is closed (GDAL writes the last blocks and
    the header then); the file that does not read back is the error, not a traceback later."""
    config, model, sha = setup
    root = config.parent
    tiles = write_tiles(root, "nsp", nsp_values(), sha)
    out = root / "maps" / ("nsp_tiny.tif" if command == "mosaic" else "nsp_tiny_uncertainty.tif")
    assert_one_write_failure(10000, [command, "--config", config, "--region", "tiny", "--task",
                                     "nsp", "--model", model, "--out", out, *tiles], root, out)
    assert not list(out.parent.iterdir())


def test_a_failed_cog_conversion_is_one_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """GDAL's COG driver fails with its own CPLE_* error (a full disk), which is no
    RasterioIOError: one error naming the product (not the staged files it is made from, which
    are gone by the time the user reads it) and the disk to check, and no COG left."""
    from rasterio._err import CPLE_AppDefinedError

    from mapper.products.cog import to_cog

    src = tmp_path / "src.tif"
    grid = Lattice(ORIGIN[0], ORIGIN[1], 10.0, 64)
    write_geotiff(src, np.zeros((1, 64, 64), "uint8"), grid.transform, grid.crs, nodata=255)

    def full_disk(source: str, dest: str, **options: object) -> None:
        Path(dest).write_bytes(b"half a COG")
        raise CPLE_AppDefinedError(3, 1, "TIFFAppendToStrip:Write error at scanline 4294967295")

    monkeypatch.setattr(rasterio.shutil, "copy", full_disk)
    out = tmp_path / "maps" / "cog.tif"
    with pytest.raises(InputError) as info:
        to_cog(src, out, resampling="AVERAGE")
    assert str(info.value) == (
        f"{out}: writing the Cloud-Optimized GeoTIFF failed (TIFFAppendToStrip:Write error at "
        f"scanline 4294967295); check the free space on the disk holding {out.parent} (and "
        "that the folder is writable) and run again")
    assert not list(out.parent.iterdir())
    staged = tmp_path / "maps" / ".nsp_demo.tif.1234" / "out" / "nsp_demo.tif"
    staged.parent.mkdir(parents=True)
    with pytest.raises(InputError) as info:
        to_cog(src, staged, resampling="AVERAGE", name=tmp_path / "maps" / "nsp_demo.tif")
    assert str(info.value).startswith(f"{tmp_path / 'maps' / 'nsp_demo.tif'}: writing the ")


def test_the_sources_tag_describes_only_the_files_the_settings_name_now(tmp_path: Path) -> None:
    from mapper.products.provenance import sources_summary

    stac = {"kind": "stac", "api": "https://earth-search.aws.element84.com/v1",
            "collection": "sentinel-2-l2a", "datetime": "2021-06-01/2021-08-31",
            "harmonized": True, "block_px": 32}
    dem = {"kind": "http", "files": [{"url": "https://x.test/dem/a.tif"}]}
    config = write_tiny_region(tmp_path, (LEFT, TOP - SIZE, LEFT + SIZE, TOP), TILE,
                               sources={"sentinel2": stac, "dem": dem})
    region = load_region(load_config(config), "tiny")
    stacked = region.stacked_tiles()
    sources = tmp_path / "sources"

    def manifest(path: str, source: str, kind: str, files: list[str], **extra: str) -> None:
        out = sources / path
        out.parent.mkdir(parents=True, exist_ok=True)
        items = [{"path": f"resources/tiny/sources/{source}/{f}", "sha256": f[0] * 64,
                  "url": f"https://x.test/{f}"} for f in files]
        out.write_text(json.dumps({"what": "mapper source manifest", "version": 1,
                                   "region": "tiny", "source": source, "kind": kind,
                                   "synthetic": False, "items": items, **extra}))

    manifest(f"sentinel2/{stacked[0]}.json", "sentinel2", "stac", [f"{stacked[0]}.tif"],
             tile=stacked[0])
    far = "R0001C0001"  # a tile of an earlier boundary or tile size
    assert far not in stacked
    manifest(f"sentinel2/{far}.json", "sentinel2", "stac", [f"{far}.tif"], tile=far)
    manifest("dem/a.tif.json", "dem", "http", ["a.tif"])
    manifest("dem/old.tif.json", "dem", "http", ["old.tif"])  # a file no longer listed
    manifest("dem/manifest.json", "dem", "http", ["a.tif", "old.tif"])
    manifest("observations/manifest.json", "observations", "demo", ["obs.csv"])
    summary = sources_summary(region, sources)
    assert summary["sentinel2"]["files"] == 1
    assert summary["sentinel2"]["first_files"][0]["path"].endswith(f"/{stacked[0]}.tif")
    assert summary["dem"]["files"] == 1 and summary["dem"]["urls"] == ["https://x.test/a.tif"]
    assert summary["observations"]["files"] == 1  # kind demo: as configured
    region.settings["sources"]["observations"] = {"kind": "file", "path": "obs.parquet"}
    summary = sources_summary(region, sources)  # the demo manifest is of another kind now
    assert summary["observations"]["manifest"] == "none found"


def test_uncertainty_refuses_the_maps_model_or_other_settings_as_a_member(
        setup: tuple[Path, Path, str]) -> None:
    """The map's own checkpoint given as a member would make a spread of 0 stated as that of a
    separate model; a member predicted with other prediction settings would add their difference
    to its spread. Each is one error naming the file, and nothing is written."""
    from mapper.products.uncertainty import make_uncertainty_products

    config, model, sha = setup
    root = config.parent
    settings = {"MAPPER_PRECISION": "float32", "MAPPER_BLENDING": "crop 64, stride 32"}
    tiles = write_tiles(root, "nsp", nsp_values(), sha, settings)
    region = load_region(load_config(config), "tiny")
    out = root / "maps" / "u.tif"
    with pytest.raises(InputError) as own:
        make_uncertainty_products(region, "nsp", model, tiles, out, member_models=[model],
                                  member_tiles=write_tiles(root / "own", "nsp", nsp_values(), sha,
                                                           settings))
    assert str(own.value) == (f"{model}: the map's own model (its tiles carry this checksum), "
                              "not an ensemble member; pass the members' checkpoints (rule "
                              "finetune_member)")
    assert not out.exists()
    member = root / "member1.pt"
    member.write_bytes(b"member 1")
    member_sha = hashlib.sha256(member.read_bytes()).hexdigest()
    other = write_tiles(root / "m1", "nsp", nsp_values(), member_sha,
                        {**settings, "MAPPER_PRECISION": "bfloat16"})
    with pytest.raises(InputError) as differs:
        make_uncertainty_products(region, "nsp", model, tiles, out, member_models=[member],
                                  member_tiles=other)
    assert str(differs.value) == (
        f"{other[0]}: MAPPER_PRECISION 'bfloat16' differs from the map's tile {tiles[0]} "
        "('float32'): the member was predicted with other prediction settings, so its spread "
        "would hold the settings' difference; rerun predict_member for its tiles (snakemake "
        "<target> --cores N -R <their files>)")
    assert not out.exists()
    same = write_tiles(root / "m1", "nsp", nsp_values(), member_sha, settings)
    products = make_uncertainty_products(region, "nsp", model, tiles, out, member_models=[member],
                                         member_tiles=same, sources_dir=root / "sources")
    with rasterio.open(products.cog) as ds:
        assert ds.descriptions == ("normalised_entropy", "ensemble_std")
