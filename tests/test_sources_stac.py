"""STAC search and the per-tile Sentinel-2 median composite, against a minimal STAC API on loopback.

The API serves a landing page (conformance item-search, query, sort), ``/search`` for GET and POST
(collections, bbox, datetime, query ``eo:cloud_cover``, pages of 2 items with ``next`` links) and
small COGs in EPSG:32606 (uint16 bands, an SCL band with cloud classes) with Range support, so
GDAL reads them through ``/vsicurl`` as it reads Earth Search's.

The scene is split into quadrants at its centre (UTM). Per item, the reflectance of band b is
``v + 0.01 b`` and the SCL masks:

==========  ========  ========  ==================  ==============================================
item        baseline  v         keys                SCL masked
==========  ========  ========  ==================  ==============================================
it1 2021    03.00     0.1       red, green, ...     west half: 9 (cloud)
it2 2022    04.00     0.2       red, green, ...     north half: 3 (shadow)  (flag says "no offset")
it3 2023    05.09     0.6       B04, B03, ... SCL   NE quadrant: 11 (snow); the block: 10 (cirrus)
it4 2020    02.14     0.4       red, green, ...     a block in the north-west: 8 (cloud)
==========  ========  ========  ==================  ==============================================

so the medians are NW 0.5 (it3, it4), NE 0.25 (it1, it4), SW 0.4 (it2, it3, it4), SE 0.3 (all
four), and NaN in the block (all four masked there). A wrong offset on it1, it2 or it3 changes
NE, SE or NW.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from earth_search import cog_bytes
from httpserver import LoopbackServer, stall
from pyproj import Transformer

from mapper.bands import S2_BANDS
from mapper.config import load_config, load_region
from mapper.errors import ConfigError, SourceError
from mapper.grid import Lattice
from mapper.sources.fetch import fetch_source
from mapper.sources.manifest import read_manifest
from mapper.sources.s2_items import check_offset, item_offsets
from mapper.sources.stac import (
    lonlat_bbox,
    month_intervals,
    search_items,
    split_antimeridian,
)

TILE = "R1500C4453"  # 64 px at 10 m: x 249920..250560, y 1639360..1640000 (EPSG:3338)
LATTICE = Lattice(-2_600_000.0, 2_600_000.0, 10.0, 64)
CODES = [code for _, code in S2_BANDS]
COMMON = ["red", "green", "blue", "rededge1", "rededge2", "rededge3", "nir", "swir16", "swir22"]
TWENTY_M = {"B05", "B06", "B07", "B11", "B12"}
SCENE_M = 1200.0


# -- pure functions -----------------------------------------------------------------------------
def test_split_antimeridian():
    assert split_antimeridian((-150, 60, -149, 61)) == [(-150.0, 60.0, -149.0, 61.0)]
    rfc = [(179.5, 51.0, 180.0, 52.0), (-180.0, 51.0, -179.5, 52.0)]
    assert split_antimeridian((179.5, 51, -179.5, 52)) == rfc  # RFC 7946: west > east
    assert split_antimeridian((179.5, 51, 180.5, 52)) == rfc  # unwrapped past 180
    assert split_antimeridian((-180.5, 51, -179.5, 52)) == rfc  # unwrapped below -180


def test_lonlat_bbox_of_a_tile_across_180_degrees():
    to_albers = Transformer.from_crs(4326, 3338, always_xy=True)
    x, y = to_albers.transform(180.0, 52.0)
    west, south, east, north = lonlat_bbox((x - 5000, y - 5000, x + 5000, y + 5000))
    assert 179.8 < west < 180.0 and -180.0 < east < -179.8 and south < 52.0 < north
    boxes = split_antimeridian((west, south, east, north))
    assert [b[2] for b in boxes] == [180.0, east] and [b[0] for b in boxes] == [west, -180.0]
    # A tile at Fairbanks is one box around it.
    x, y = to_albers.transform(-147.72, 64.84)
    (box,) = split_antimeridian(lonlat_bbox((x - 20000, y - 20000, x + 20000, y + 20000)))
    assert box[0] < -147.72 < box[2] and box[1] < 64.84 < box[3] and box[2] - box[0] < 1.5


def test_month_intervals_clip_to_the_interval():
    assert month_intervals("2020-07-15/2021-06-10", [8, 6, 7]) == [
        "2020-07-15T00:00:00Z/2020-08-31T23:59:59Z",
        "2021-06-01T00:00:00Z/2021-06-10T23:59:59Z",
    ]
    assert month_intervals("2019-01-01/2019-12-31", [1, 12]) == [
        "2019-01-01T00:00:00Z/2019-01-31T23:59:59Z",
        "2019-12-01T00:00:00Z/2019-12-31T23:59:59Z",
    ]


# -- a minimal STAC API -------------------------------------------------------------------------
class StacApi:
    """Landing page and item search over ``items`` (dicts), served by a LoopbackServer."""

    def __init__(self, server: LoopbackServer, post: bool = True, page_size: int = 2) -> None:
        self.server = server
        self.items: list[dict] = []
        self.searches: list[dict] = []
        self.page_size = page_size
        self.post = post
        server.add_route("/stac", self.landing)
        server.add_route("/stac/search", self.search)

    @property
    def url(self) -> str:
        return self.server.url("/stac")

    def landing(self, method, query, body):
        search = self.server.url("/stac/search")
        links = [
            {"rel": "self", "href": self.url, "type": "application/json"},
            {"rel": "root", "href": self.url, "type": "application/json"},
            {"rel": "search", "href": search, "type": "application/geo+json", "method": "GET"},
        ]
        if self.post:
            links.append(dict(links[-1], method="POST"))
        doc = {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "loopback",
            "description": "test STAC API",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
                "https://api.stacspec.org/v1.0.0/item-search#query",
                "https://api.stacspec.org/v1.0.0/item-search#sort",
            ],
            "links": links,
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(doc).encode()

    def search(self, method, query, body):
        if method == "POST":
            params = json.loads(body)
        else:
            params = {k: v[0] for k, v in query.items()}
            if "bbox" in params:
                params["bbox"] = [float(v) for v in params["bbox"].split(",")]
            if "collections" in params:
                params["collections"] = params["collections"].split(",")
            if "query" in params:
                params["query"] = json.loads(params["query"])
        self.searches.append({"method": method, **params})
        hits = [it for it in self.items if self._matches(it, params)]
        token = int(params.get("token", 0))
        size = min(int(params.get("limit", 10)), self.page_size)
        page = hits[token : token + size]
        links = []
        if token + size < len(hits):
            search = self.server.url("/stac/search")
            if method == "POST":
                links.append(
                    {
                        "rel": "next",
                        "href": search,
                        "method": "POST",
                        "body": {**params, "token": token + size},
                    }
                )
            else:
                q = "&".join(f"{k}={v}" for k, v in query.items() if k != "token")
                links.append({"rel": "next", "href": f"{search}?{q}&token={token + size}"})
        doc = {"type": "FeatureCollection", "features": page, "links": links}
        return 200, {"Content-Type": "application/geo+json"}, json.dumps(doc).encode()

    @staticmethod
    def _matches(item: dict, p: dict) -> bool:
        if "collections" in p and item["collection"] not in p["collections"]:
            return False
        if "bbox" in p:
            w, s, e, n = p["bbox"]
            iw, is_, ie, in_ = item["bbox"]
            if iw > e or ie < w or is_ > n or in_ < s:
                return False
        if "datetime" in p:
            lo, hi = (datetime.fromisoformat(t) for t in p["datetime"].split("/"))
            if not lo <= datetime.fromisoformat(item["properties"]["datetime"]) <= hi:
                return False
        lt = p.get("query", {}).get("eo:cloud_cover", {}).get("lt")
        return lt is None or item["properties"]["eo:cloud_cover"] < lt


def _item(server, item_id, when, cloud, bbox, props=None, assets=None) -> dict:
    w, s, e, n = bbox
    geom = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    item = pystac.Item(
        item_id,
        geom,
        list(bbox),
        when,
        {"eo:cloud_cover": cloud, **(props or {})},
        collection="sentinel-2-l2a",
    )
    for key, href in (assets or {}).items():
        item.add_asset(key, pystac.Asset(href, media_type=pystac.MediaType.COG))
    d = item.to_dict(include_self_link=False)
    d["links"] = [{"rel": "self", "href": server.url(f"/stac/items/{item_id}")}]
    return d


@pytest.fixture(scope="module")
def scene():
    """The scene's UTM grid (10 m and 20 m), centred on the tile, and its lon/lat box."""
    left, bottom, right, top = LATTICE.tile_bounds(TILE)
    to_utm = Transformer.from_crs(3338, 32606, always_xy=True)
    cx, cy = to_utm.transform((left + right) / 2, (bottom + top) / 2)
    cx, cy = round(cx / 20) * 20, round(cy / 20) * 20
    x0, y0 = cx - SCENE_M / 2, cy + SCENE_M / 2
    to_ll = Transformer.from_crs(32606, 4326, always_xy=True)
    lon, lat = to_ll.transform(
        [x0, x0 + SCENE_M, x0, x0 + SCENE_M], [y0, y0, y0 - SCENE_M, y0 - SCENE_M]
    )
    return {
        "cx": cx,
        "cy": cy,
        "x0": x0,
        "y0": y0,
        "bbox": (min(lon), min(lat), max(lon), max(lat)),
    }


ITEMS = [  # id, datetime, cloud, baseline, value, offset-flag, scl rule, keys
    ("it1", datetime(2021, 7, 1, 21, tzinfo=UTC), 5.0, "03.00", 0.1, None, "west", COMMON),
    ("it2", datetime(2022, 7, 1, 21, tzinfo=UTC), 10.0, "04.00", 0.2, False, "north", COMMON),
    ("it3", datetime(2023, 7, 15, 21, tzinfo=UTC), 20.0, "05.09", 0.6, True, "ne", CODES),
    ("it4", datetime(2020, 8, 10, 21, tzinfo=UTC), 30.0, "02.14", 0.4, None, "block", COMMON),
]
BLOCK = (16, 23)  # it4's cloud block: 20 m rows and cols 16..22 from the scene's corner
LAKE, LAKE_FROM = 0.01, 0.9
"""A lake (reflectance 0.01, SCL 6) across the scene's southern tenth, beyond the tile: the dark
pixels by which a harmonised item is told from one that still holds the offset."""


def _scl(rule: str) -> np.ndarray:
    n = int(SCENE_M / 20)
    scl = np.full((n, n), 4, dtype="uint16")  # 4: vegetation
    half = n // 2
    if rule == "west":
        scl[:, :half] = 9
    elif rule == "north":
        scl[:half, :] = 3
    elif rule == "ne":
        scl[:half, half:] = 11
        scl[BLOCK[0] : BLOCK[1], BLOCK[0] : BLOCK[1]] = 10
    elif rule == "block":
        scl[BLOCK[0] : BLOCK[1], BLOCK[0] : BLOCK[1]] = 8
    return scl


@pytest.fixture(scope="module")
def stac(scene):
    """The scenes with DNs as ESA delivers them: +1000 from processing baseline 04.00."""
    with serve_items(scene, harmonized=False) as api:
        yield api


@contextmanager
def serve_items(scene: dict, harmonized: bool, still_raw: tuple[str, ...] = ()
                ) -> Iterator[StacApi]:
    """The STAC API of :data:`ITEMS` (and three items never to be read); ``harmonized``: the DNs
    with the baseline offset removed, as Earth Search's sentinel-2-l2a COGs hold them, except
    the items ``still_raw``."""
    with LoopbackServer() as server:
        api = StacApi(server)
        for item_id, when, cloud, baseline, value, flag, rule, keys in ITEMS:
            raw = not harmonized or item_id in still_raw
            offset = 1000 if float(baseline) >= 4 and raw else 0
            assets = {}
            for b, (code, key) in enumerate(zip(CODES, keys, strict=True)):
                res = 20.0 if code in TWENTY_M else 10.0
                n = int(SCENE_M / res)
                dn = np.full((n, n), round((value + 0.01 * b) * 10000) + offset, dtype="uint16")
                dn[round(n * LAKE_FROM):] = round(LAKE * 10000) + offset
                t = Affine(res, 0, scene["x0"], 0, -res, scene["y0"])
                cog = cog_bytes(dn, t, 32606, blocksize=32)
                assets[key] = server.add_file(f"/cogs/{item_id}/{code}.tif", cog)
            t20 = Affine(20, 0, scene["x0"], 0, -20, scene["y0"])
            scl_key = "SCL" if keys is CODES else "scl"
            scl = _scl(rule)
            lake = scl[round(len(scl) * LAKE_FROM):]
            lake[lake == 4] = 6
            cog = cog_bytes(scl, t20, 32606, blocksize=32)
            assets[scl_key] = server.add_file(f"/cogs/{item_id}/SCL.tif", cog)
            props = {"s2:processing_baseline": baseline}
            if flag is not None:
                props["earthsearch:boa_offset_applied"] = flag
            api.items.append(_item(server, item_id, when, cloud, scene["bbox"], props, assets))
        # Never to be used: too cloudy, in winter, elsewhere (no assets: reading one would fail).
        api.items.append(
            _item(
                server,
                "cloudy",
                datetime(2022, 7, 5, tzinfo=UTC),
                80.0,
                scene["bbox"],
                {"s2:processing_baseline": "04.00"},
            )
        )
        api.items.append(
            _item(
                server,
                "winter",
                datetime(2022, 1, 15, tzinfo=UTC),
                1.0,
                scene["bbox"],
                {"s2:processing_baseline": "03.01"},
            )
        )
        api.items.append(
            _item(
                server,
                "far",
                datetime(2022, 7, 2, tzinfo=UTC),
                0.0,
                (-140.5, 60.0, -140.0, 60.5),
                {"s2:processing_baseline": "04.00"},
            )
        )
        yield api


def _sentinel2(api_url: str, **over) -> dict:
    return {
        "sentinel2": {
            "kind": "stac",
            "api": api_url,
            "datetime": "2019-06-01/2023-08-31",
            "months": [6, 7, 8],
            "max_cloud": 40,
            "max_items": 10,
            "block_px": 32,
            "harmonized": False,  # the server's items keep ESA's offset unless told otherwise
            **over,
        }
    }


def test_search_filters_sorts_pages_and_caps(stac):
    bounds = LATTICE.tile_bounds(TILE)
    items = search_items(stac.url, bounds, datetime_interval="2019-06-01/2023-08-31", max_items=10)
    assert [it.id for it in items] == ["it1", "it2", "it3", "it4"]  # by cloud cover
    assert all(s["method"] == "POST" for s in stac.searches)
    assert {s["query"]["eo:cloud_cover"]["lt"] for s in stac.searches} == {40.0}
    assert len(stac.searches) >= 5  # one per summer (2019..2023) plus next pages
    capped = search_items(stac.url, bounds, datetime_interval="2019-06-01/2023-08-31", max_items=2)
    assert [it.id for it in capped] == ["it1", "it2"]


def test_search_across_the_antimeridian_uses_two_boxes(tmp_path):
    to_albers = Transformer.from_crs(4326, 3338, always_xy=True)
    x, y = to_albers.transform(180.0, 52.0)
    bounds = (x - 3000, y - 3000, x + 3000, y + 3000)
    with LoopbackServer() as server:
        api = StacApi(server, post=False)  # a GET-only API
        when = datetime(2021, 7, 1, tzinfo=UTC)
        api.items.append(_item(server, "east_of_180", when, 3.0, (179.9, 51.9, 179.99, 52.1)))
        api.items.append(_item(server, "west_of_180", when, 2.0, (-179.99, 51.9, -179.9, 52.1)))
        items = search_items(api.url, bounds, datetime_interval="2021-06-01/2021-08-31")
    assert [it.id for it in items] == ["west_of_180", "east_of_180"]
    boxes = [s["bbox"] for s in api.searches]
    assert all(s["method"] == "GET" for s in api.searches) and len(boxes) == 2
    assert boxes[0][2] == 180.0 and boxes[1][0] == -180.0
    assert all(b[0] < b[2] for b in boxes)  # each box is plain (west < east)


def test_composite_masks_clouds_applies_offsets_and_takes_the_median(
    stac, scene, tmp_path, fetch_config
):
    config = fetch_config(_sentinel2(stac.url))
    region = load_region(load_config(config), "r")
    out = tmp_path / "sources"
    manifest = read_manifest(fetch_source(region, "sentinel2", out, tile=TILE))
    dest = out / "sentinel2" / f"{TILE}.tif"
    assert manifest["kind"] == "stac" and manifest["tile"] == TILE
    assert manifest["items"][0]["path"] == str(dest)
    blocks = manifest["stac_blocks"]  # the tile's four 32 px blocks all lie inside the scene
    assert sorted(blocks) == ["R3000C8906", "R3000C8907", "R3001C8906", "R3001C8907"]
    for chosen in blocks.values():
        assert [i["id"] for i in chosen] == ["it1", "it2", "it3", "it4"]
        assert [i["offset"] for i in chosen] == [0.0, -1000.0, -1000.0, 0.0]

    with rasterio.open(dest) as src:
        assert src.crs.to_epsg() == 3338 and src.count == 9 and src.dtypes[0] == "float32"
        assert src.transform == LATTICE.tile_transform(TILE) and src.shape == (64, 64)
        assert list(src.descriptions) == [name for name, _ in S2_BANDS]
        assert np.isnan(src.nodata)
        assert src.tags()["MAPPER_ITEMS"] == "it1,it2,it3,it4"
        assert src.tags()["MAPPER_ITEM_COUNT"] == "4"
        assert src.tags()["MAPPER_SCENE_BLOCK_PX"] == "32"
        assert src.tags()["MAPPER_REFLECTANCE"] == (
            "(DN + offset) / 10000: 2 items with offset -1000, 2 items with offset 0")
        data = src.read()

    # Expected value per pixel from where its centre falls in the scene (UTM), away from edges.
    rows, cols = np.mgrid[0:64, 0:64]
    left, _, _, top = LATTICE.tile_bounds(TILE)
    xs, ys = left + (cols + 0.5) * 10.0, top - (rows + 0.5) * 10.0  # pixel centres
    ux, uy = Transformer.from_crs(3338, 32606, always_xy=True).transform(xs, ys)
    dx, dy = ux - scene["cx"], uy - scene["cy"]
    bx, by = (ux - scene["x0"]) / 20, (scene["y0"] - uy) / 20  # 20 m pixel coordinates

    def inside(margin: float) -> np.ndarray:
        lo, hi = BLOCK[0] + margin, BLOCK[1] - margin
        return (bx > lo) & (bx < hi) & (by > lo) & (by < hi)

    in_block, near_block = inside(0.0), inside(-1.5) & ~inside(1.5)
    clear = (np.abs(dx) > 25) & (np.abs(dy) > 25) & ~near_block
    expected = np.select([dy > 0, True], [np.where(dx < 0, 0.5, 0.25), np.where(dx < 0, 0.4, 0.3)])
    expected = np.where(in_block & (dy > 0) & (dx < 0), np.nan, expected)
    # Every region (NaN block, NE, SW, SE, rest of NW) has pixels among those checked.
    assert (clear & in_block).sum() > 20 and (clear & (dx > 0) & (dy > 0)).sum() > 20
    assert (clear & (dx < 0) & (dy < 0)).sum() > 20 and (clear & (dx > 0) & (dy < 0)).sum() > 20
    assert (clear & ~in_block & (dx < 0) & (dy > 0)).sum() > 20
    for b in range(9):
        np.testing.assert_allclose(
            data[b][clear],
            (expected + 0.01 * b)[clear],
            atol=1e-5,
            err_msg=f"band {S2_BANDS[b][0]}",
        )
    assert np.isnan(data[:, clear & in_block]).all()


@pytest.fixture
def composite(tmp_path, fetch_config):
    """``composite(api_url, folder, **sentinel2 settings)`` -> (the tile's composite, manifest)."""
    def make(api_url: str, folder: str, **over) -> tuple[np.ndarray, dict]:
        region = load_region(load_config(fetch_config(_sentinel2(api_url, **over))), "r")
        manifest = read_manifest(fetch_source(region, "sentinel2", tmp_path / folder, tile=TILE))
        with rasterio.open(tmp_path / folder / "sentinel2" / f"{TILE}.tif") as src:
            return src.read(), manifest
    return make


def _by_item(manifest: dict, key: str) -> dict:
    return {i["id"]: i[key] for chosen in manifest["stac_blocks"].values() for i in chosen}


def test_a_harmonized_collection_is_read_without_the_offset(stac, scene, composite, tmp_path):
    """Earth Search's sentinel-2-l2a COGs hold DNs with the baseline 04.00 offset removed:
    read with ``harmonized: true`` they give the same composite as ESA's DNs read with the
    offset, every item's offset 0 (the items of 04.00 and later checked on their water, the
    lake at DN 100); read without the setting, the later scenes would be 0.1 dark."""
    esa, _ = composite(stac.url, "esa")
    with serve_items(scene, harmonized=True) as harmonized:
        same, manifest = composite(harmonized.url, "harmonized", harmonized=True)
        dark, _ = composite(harmonized.url, "dark")
    assert set(_by_item(manifest, "offset").values()) == {0.0}
    with rasterio.open(tmp_path / "harmonized" / "sentinel2" / f"{TILE}.tif") as src:
        assert src.tags()["MAPPER_REFLECTANCE"] == "(DN + offset) / 10000: 4 items with offset 0"
    assert manifest["stac"]["harmonized"] is True and manifest["stac"]["check_offset"] is True
    checks = _by_item(manifest, "offset_check")
    assert checks["it1"] is None and checks["it4"] is None  # before 04.00: nothing to check
    for item in ("it2", "it3"):
        assert checks[item]["verdict"] == "harmonised" and checks[item]["dark_dn"] == 100.0
    np.testing.assert_array_equal(same, esa)
    darker = (esa - dark)[np.isfinite(esa)]
    # a median of up to 4 items, 2 of them 0.1 too dark: never brighter, often darker
    assert darker.min() >= -1e-6 and 0.04 < darker.max() <= 0.1 + 1e-6
    assert (darker > 0.01).mean() > 0.2, (darker > 0.01).mean()


def test_an_item_that_still_holds_the_offset_is_read_with_it(stac, scene, composite, caplog):
    """One COG of a harmonised collection with the offset left in (it3, baseline 05.09): its
    water (the lake, SCL 6) reads DN 1100, not about 100, so it is read with the offset and the
    composite equals ESA's; with ``check_offset: false`` it reads 0.1 too bright."""
    esa, _ = composite(stac.url, "esa")
    with serve_items(scene, harmonized=True, still_raw=("it3",)) as api:
        with caplog.at_level(logging.WARNING, logger="mapper.sources.s2_items"):
            fixed, manifest = composite(api.url, "fixed", harmonized=True)
        unchecked, plain = composite(api.url, "unchecked", harmonized=True, check_offset=False)
    checks = _by_item(manifest, "offset_check")
    assert checks["it3"] == {"verdict": "raw", "dark_dn": 1100.0, "over": "water",
                             "pixels": checks["it3"]["pixels"]}
    assert checks["it2"]["verdict"] == "harmonised"
    assert _by_item(manifest, "offset") == {"it1": 0.0, "it2": 0.0, "it3": -1000.0, "it4": 0.0}
    assert "item it3: its DNs still hold the baseline 04.00 offset" in caplog.text
    np.testing.assert_array_equal(fixed, esa)
    assert set(_by_item(plain, "offset_check").values()) == {None}
    assert plain["stac"]["check_offset"] is False
    brighter = (unchecked - esa)[np.isfinite(esa)]  # NW: the median of it3 and it4, 0.05 up
    assert brighter.min() >= -1e-6 and abs(brighter.max() - 0.05) < 1e-5
    assert (brighter > 0.01).mean() > 0.1, (brighter > 0.01).mean()


def test_the_offset_check_needs_enough_clear_pixels(tmp_path):
    """An item whose granule is clear in fewer than 100 pixels keeps the collection's word; the
    verdict is read over the whole granule (the SCL's extent, a band reaching further read over
    it), so it does not depend on the tile."""
    n = 40
    t10, t20 = (Affine(r, 0, 500_000, 0, -r, 7_200_000) for r in (10, 20))
    dn = np.full((2 * n, 2 * n), 1500, dtype="uint16")  # reflectance 0.05 + the offset
    dn[:8] = 1030  # a lake, still with the offset
    scl = np.full((n, n), 9, dtype="uint16")  # cloud
    assets = {}
    # B02 reaches 40 m further east, over water (DN 100) that the check must not read: squeezed
    # into the SCL's shape it would make the item look harmonised
    wider = np.pad(dn, ((0, 0), (0, 4)), constant_values=100)
    for code, data, t in (("B02", wider, t10), ("B12", dn[::2, ::2].copy(), t20),
                          ("SCL", scl, t20)):
        path = tmp_path / f"{code}.tif"
        path.write_bytes(cog_bytes(data, t, 32606, blocksize=32))
        assets[code] = pystac.Asset(str(path))
    item = pystac.Item("cloudy", None, None, datetime(2023, 7, 1, tzinfo=UTC),
                       {"s2:processing_baseline": "05.09"}, assets=assets)
    for clear_rows, verdict in ((2, "inconclusive"), (3, "raw")):  # 80 and 120 clear pixels
        scl[:clear_rows] = 4
        (tmp_path / "SCL.tif").write_bytes(cog_bytes(scl, t20, 32606, blocksize=32))
        record = check_offset(item)
        assert record["verdict"] == verdict and record["pixels"] == clear_rows * n
        offsets = item_offsets([item], harmonized=True)
        assert offsets["cloudy"] == ((-1000.0 if verdict == "raw" else 0.0), record)
    assert item_offsets([item], harmonized=False)["cloudy"] == (-1000.0, None)
    assert item_offsets([item], harmonized=True, check=False)["cloudy"] == (0.0, None)


def _granule(folder, scl: np.ndarray, dn20: np.ndarray) -> dict[str, pystac.Asset]:
    """SCL and B12 at 20 m, B02 at 10 m (each 20 m DN repeated 2 x 2): a granule's files."""
    t10, t20 = (Affine(r, 0, 500_000, 0, -r, 7_200_000) for r in (10, 20))
    dn10 = np.repeat(np.repeat(dn20, 2, axis=0), 2, axis=1)
    assets = {}
    for code, data, t in (("B02", dn10, t10), ("B12", dn20, t20), ("SCL", scl, t20)):
        path = folder / f"{code}.tif"
        path.write_bytes(cog_bytes(data, t, 32606, blocksize=64))
        assets[code] = pystac.Asset(str(path))
    return assets


def test_the_offset_check_reads_water_first(tmp_path):
    """A granule whose clear land is all bright (snow the SCL missed: 0.3 reflectance) holds a
    lake of 144 water pixels, 0.2 % of its clear ones: too few for the darkest 1 % of the clear
    pixels, which would call a harmonised item raw, but the median over water (SCL 6) reads the
    lake, DN 100 harmonised and 1100 raw; without water, the clear pixels decide."""
    n = 256
    scl = np.full((n, n), 4, dtype="uint16")
    scl[100:112, 100:112] = 6
    for offset, verdict in ((0, "harmonised"), (1000, "raw")):
        dn = np.full((n, n), 3000 + offset, dtype="uint16")
        dn[100:112, 100:112] = 100 + offset
        folder = tmp_path / verdict
        folder.mkdir()
        item = pystac.Item(verdict, None, None, datetime(2023, 7, 1, tzinfo=UTC),
                           {"s2:processing_baseline": "05.09"}, assets=_granule(folder, scl, dn))
        record = check_offset(item)
        assert record == {"verdict": verdict, "dark_dn": 100.0 + offset, "over": "water",
                          "pixels": 144}, record
    dry = tmp_path / "dry"  # the lake's SCL class lost: the darkest 1 % of clear land decides
    dry.mkdir()
    item.assets = _granule(dry, np.full((n, n), 4, dtype="uint16"), dn)
    assert check_offset(item) == {"verdict": "raw", "dark_dn": 4000.0, "over": "clear",
                                  "pixels": n * n}


def test_an_item_without_a_baseline_is_warned_of_only_where_its_date_decides(caplog):
    """Without ``s2:processing_baseline`` the date decides the offset of ESA's DNs, and a warning
    says so; a harmonized collection's item is read with offset 0 whatever its date, so nothing
    is decided by date and nothing is said."""
    item = pystac.Item("undated-baseline", None, None, datetime(2023, 7, 1, tzinfo=UTC), {})
    with caplog.at_level(logging.INFO, logger="mapper.sources.s2_items"):
        assert item_offsets([item], harmonized=True, check=False)["undated-baseline"] == (0.0, None)
    assert not caplog.records
    with caplog.at_level(logging.INFO, logger="mapper.sources.s2_items"):
        assert item_offsets([item], harmonized=False)["undated-baseline"] == (-1000.0, None)
    assert [r.getMessage() for r in caplog.records] == [
        "item undated-baseline has no s2:processing_baseline; deciding the offset by date"]


def test_no_items_gives_an_empty_composite(stac, tmp_path, fetch_config):
    config = fetch_config(_sentinel2(stac.url, datetime="2018-06-01/2018-08-31"))
    region = load_region(load_config(config), "r")
    manifest = read_manifest(fetch_source(region, "sentinel2", tmp_path / "s", tile=TILE))
    assert all(chosen == [] for chosen in manifest["stac_blocks"].values())
    assert manifest["valid_fraction"] == 0.0
    with rasterio.open(tmp_path / "s" / "sentinel2" / f"{TILE}.tif") as src:
        assert src.tags()["MAPPER_ITEM_COUNT"] == "0" and np.isnan(src.read()).all()


def test_an_unreadable_asset_names_the_item_and_leaves_no_composite(scene, tmp_path, fetch_config):
    with LoopbackServer() as server:
        api = StacApi(server)
        assets = {key: server.url(f"/cogs/gone/{key}.tif") for key in [*COMMON, "scl"]}
        api.items.append(
            _item(
                server,
                "gone",
                datetime(2021, 7, 1, tzinfo=UTC),
                1.0,
                scene["bbox"],
                {"s2:processing_baseline": "03.00"},
                assets,
            )
        )
        config = fetch_config(_sentinel2(api.url))
        region = load_region(load_config(config), "r")
        with pytest.raises(
            SourceError, match=r"STAC item gone SCL \(http://.*/cogs/gone/scl.tif\)"
        ) as exc:
            fetch_source(region, "sentinel2", tmp_path / "s", tile=TILE)
    message = str(exc.value)
    assert "'gone: [<tile>, ...]'" in message and "'exclude'" in message and "\n" not in message
    assert not list((tmp_path / "s").rglob("*.tif")) and not list((tmp_path / "s").rglob("*.json"))


def test_a_stalled_asset_read_fails_instead_of_waiting(scene, tmp_path, fetch_config, monkeypatch):
    """Every asset read stalls after its headers: with GDAL_HTTP_ENV's low-speed limit (cut to
    1 s here, 60 s in use) the fetch fails with one error naming an item, long before the server
    would send the bytes (libcurl's defaults would wait for them)."""
    from mapper.raster import GDAL_HTTP_ENV

    monkeypatch.setitem(GDAL_HTTP_ENV, "GDAL_HTTP_LOW_SPEED_TIME", "1")
    stalled_s = 60.0
    with serve_items(scene, harmonized=True) as api:
        server = api.server
        for path in [p for p in server.files if p.startswith("/cogs/")]:
            server.add_faults(path, *[stall(0, stalled_s) for _ in range(12)])
        config = fetch_config(_sentinel2(api.url))
        region = load_region(load_config(config), "r")
        began = time.monotonic()
        with pytest.raises(SourceError, match=r"^STAC item it\d .*retry later") as exc:
            fetch_source(region, "sentinel2", tmp_path / "s", tile=TILE)
        took = time.monotonic() - began
    assert took < stalled_s / 2, f"waited {took:.0f} s for a stalled read"
    assert "\n" not in str(exc.value)
    assert not list((tmp_path / "s").rglob("*.tif")) and not list((tmp_path / "s").rglob("*.json"))


def test_composite_does_not_depend_on_the_strip_size(stac, tmp_path):
    from mapper.sources.composite import composite_tile

    items = search_items(
        stac.url, LATTICE.tile_bounds(TILE), datetime_interval="2019-06-01/2023-08-31"
    )
    block = {LATTICE.tile_id(*LATTICE.parse(TILE)): items}  # one block: the tile itself
    whole = composite_tile(block, LATTICE, TILE, tmp_path / "whole.tif", block_px=64)
    # 4 items x 9 bands x 64 columns x 4 bytes = 9216 bytes a row: strips of 25, 25 and 14 rows.
    strips = composite_tile(
        block, LATTICE, TILE, tmp_path / "strips.tif", block_px=64, max_buffer_bytes=25 * 9216
    )
    assert whole["strips"] == 1 and strips["strips"] == 3
    with rasterio.open(tmp_path / "whole.tif") as a, rasterio.open(tmp_path / "strips.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())

def _moved(stac, source_id: str, item_id: str, lonlat, cloud: float, when: str) -> dict:  # noqa: ANN001
    """A copy of item ``source_id`` (its assets) as ``item_id`` over the lon/lat box of the
    corners ``lonlat`` ([lons], [lats]), with cloud cover ``cloud`` at ``when``."""
    lon, lat = lonlat
    w, s, e, n = min(lon), min(lat), max(lon), max(lat)
    source = next(it for it in stac.items if it["id"] == source_id)
    props = dict(source["properties"], **{"eo:cloud_cover": cloud, "datetime": when})
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return dict(source, id=item_id, bbox=[w, s, e, n], properties=props,
                geometry={"type": "Polygon", "coordinates": [ring]})  # fmt: skip



def test_scenes_are_chosen_per_block_so_the_composite_does_not_depend_on_the_tile_size(
    stac, scene, tmp_path, fetch_config
):
    """max_items 2 per 32 px block; a small clear scene (cloud cover 1 %) covers only the tile's
    north-west block, so there it displaces it2; a clearer one (0.5 %) lies west of the tile,
    inside the 128 px tile that holds it (a per-tile choice there would take it for every pixel).
    The tile's composite equals, bit for bit, the same pixels of the 128 px tile's composite."""
    from mapper.sources.composite import scene_blocks

    left, _, _, top = LATTICE.tile_bounds(TILE)
    to_ll = Transformer.from_crs(3338, 4326, always_xy=True)
    small = _moved(stac, "it1", "small", to_ll.transform([left + 120, left + 200],
                                                        [top - 200, top - 120]),
                   1.0, "2021-07-02T21:00:00Z")  # fmt: skip
    elsewhere = _moved(stac, "it3", "elsewhere", to_ll.transform([left - 500, left - 300],
                                                               [top - 400, top - 200]),
                       0.5, "2022-07-02T21:00:00Z")  # fmt: skip
    stac.items.extend([small, elsewhere])
    try:
        out = {}
        for tile_px in (64, 128):
            config = fetch_config(_sentinel2(stac.url, max_items=2))
            region = load_region(load_config(config), "r")
            region = type(region)(
                region.name,
                dict(region.settings, tile_px=tile_px),
                Lattice(LATTICE.origin_x, LATTICE.origin_y, 10.0, tile_px),
                region.path,
                region.grid,
            )
            tile = region.lattice.tile_of_xy(left + 1, top - 1)
            dest = tmp_path / str(tile_px)
            manifest = read_manifest(fetch_source(region, "sentinel2", dest, tile=tile))
            assert len(manifest["stac_blocks"]) == (tile_px // 32) ** 2
            ids = {b: [i["id"] for i in c] for b, c in manifest["stac_blocks"].items()}
            assert ids["R3000C8906"] == ["small", "it1"]  # the block the small scene meets
            assert ids["R3001C8907"] == ["it1", "it2"]
            with rasterio.open(dest / "sentinel2" / f"{tile}.tif") as src:
                win = src.window(*LATTICE.tile_bounds(TILE))
                out[tile_px] = src.read(window=win)
            assert ("elsewhere" in ",".join(map(",".join, ids.values()))) == (tile_px == 128)
        assert np.isfinite(out[64]).any()
        np.testing.assert_array_equal(out[64], out[128])
    finally:
        stac.items.remove(small)
        stac.items.remove(elsewhere)
    assert [b for b, _ in scene_blocks(LATTICE, TILE, 32)] == [
        "R3000C8906",
        "R3000C8907",
        "R3001C8906",
        "R3001C8907",
    ]


def test_nanmedian_rows_equals_numpy():
    import warnings

    from mapper.sources.composite import nanmedian_rows

    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 4, 7):
        a = rng.random((n, 70, 33)).astype("float32")
        a[rng.random(a.shape) < 0.4] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
            expected = np.nanmedian(a, axis=0)
        np.testing.assert_allclose(nanmedian_rows(a, rows=16), expected, rtol=1e-6)


def test_the_earth_search_replica_pages_a_get_search_through_encoded_next_links() -> None:
    """The replica's GET ``next`` links carry the query encoded, as stac-server's do: a datetime
    with "+00:00" (a "+" that a bare query string would read as a space) pages through."""
    import requests
    from earth_search import EarthSearch, Scene

    flat = {key: (lambda x, y: np.full(x.shape, 1500)) for key in COMMON}
    with LoopbackServer() as server:
        api = EarthSearch(server)
        for day in range(1, 8):
            scene = Scene(f"S2B_6WVC_202107{day:02d}_0_L2A", datetime(2021, 7, day, 21, tzinfo=UTC),
                          float(day), "03.01", 32606, 400000.0, 7300000.0, 1200.0)
            api.add_scene(scene, flat, lambda x, y: np.full(x.shape, 4))
        url = server.url("/v1/search")
        params = {"collections": "sentinel-2-l2a", "limit": 3,
                  "datetime": "2021-06-01T00:00:00+00:00/2021-08-31T23:59:59+00:00"}
        ids, pages = [], 0
        while url and pages < 10:
            page = requests.get(url, params=params, timeout=10)
            assert page.status_code == 200, page.text
            doc = page.json()
            ids += [f["id"] for f in doc["features"]]
            url = next((link["href"] for link in doc["links"] if link["rel"] == "next"), None)
            params, pages = None, pages + 1
    assert pages == 3 and sorted(ids) == [f"S2B_6WVC_202107{d:02d}_0_L2A" for d in range(1, 8)]


def test_search_follows_earth_search_paging_and_reports_its_errors(monkeypatch, tmp_path):
    """Against the Earth Search v1 replica: POST paging with a ``next`` token in the repeated
    body, every page's items kept; a 400 answer is one SourceError naming the API and the fix."""
    from earth_search import EarthSearch, Scene

    import mapper.sources.stac as stac_module

    monkeypatch.setattr(stac_module, "PAGE_LIMIT", 3)
    left, bottom, right, top = LATTICE.tile_bounds(TILE)
    ux, uy = Transformer.from_crs(3338, 32606, always_xy=True).transform(left, top)
    x0, y0 = round(ux / 20) * 20 - 200, round(uy / 20) * 20 + 200
    flat = {key: (lambda x, y: np.full(x.shape, 1500)) for key in COMMON}
    with LoopbackServer() as server:
        api = EarthSearch(server)
        for day in range(1, 8):
            when = datetime(2021, 7, day, 21, tzinfo=UTC)
            scene = Scene(f"S2B_6WVC_202107{day:02d}_0_L2A", when, float(day), "03.01", 32606,
                          x0, y0, 1200.0)  # fmt: skip
            api.add_scene(scene, flat, lambda x, y: np.full(x.shape, 4))
        items = search_items(api.url, (left, bottom, right, top),
                             datetime_interval="2021-06-01/2021-08-31", max_items=None)  # fmt: skip
        assert [it.id for it in items] == [f"S2B_6WVC_202107{d:02d}_0_L2A" for d in range(1, 8)]
        assert [s.get("next") for s in api.searches] == [None, "3", "6"]
        assert all(s["method"] == "POST" and s["limit"] == 3 for s in api.searches)
        assert items[0].properties["grid:code"] == "MGRS-6WVC"
        server.routes["/v1/search"] = lambda m, q, b: (
            400, {"Content-Type": "application/json"},
            b'{"code": "BadRequest", "description": "invalid bbox"}')  # fmt: skip
        with pytest.raises(SourceError) as exc:
            search_items(
                api.url, (left, bottom, right, top), datetime_interval="2021-07-01/2021-07-31"
            )
    message = str(exc.value)
    assert api.url in message and "\n" not in message and "retry later" in message


def test_a_collection_the_api_does_not_hold_is_one_error_before_any_search() -> None:
    """stac-server answers a search of an unknown collection (a typo, or Earth Search v0's
    sentinel-s2-l2a-cogs) with 200 and no items, which would leave every tile without imagery
    and the job a success: the collection is asked for first, and its 404 is one ConfigError
    naming the API, the collection and the setting."""
    from earth_search import EarthSearch

    with LoopbackServer() as server:
        api = EarthSearch(server)
        with pytest.raises(ConfigError) as exc:
            search_items(api.url, LATTICE.tile_bounds(TILE), collection="sentinel-s2-l2a-cogs",
                         datetime_interval="2021-07-01/2021-07-31")
        assert api.searches == []
        assert server.requests_for("/v1/collections/sentinel-s2-l2a-cogs", "GET")
        assert search_items(api.url, LATTICE.tile_bounds(TILE),
                            datetime_interval="2021-07-01/2021-07-31") == []  # the real one
    assert str(exc.value) == (
        f"{api.url}: no collection 'sentinel-s2-l2a-cogs' (HTTP 404 at {api.url}/collections/"
        "sentinel-s2-l2a-cogs); set the source's 'collection' in the region file to one the API "
        f"lists at {api.url}/collections (Earth Search v1: sentinel-2-l2a or sentinel-2-c1-l2a)")


def test_a_catalog_whose_paging_does_not_advance_is_an_error_not_a_loop(monkeypatch):
    """Earth Search once answered a POST search with ``sortby`` by a ``next`` link without its
    token (Element84/earth-search#27): the search sends no ``sortby`` (it reads every page and
    ranks the items itself), and a catalog whose next page repeats the last is one SourceError
    naming it, not a job that loops until its time limit."""
    from earth_search import EarthSearch, Scene

    import mapper.sources.stac as stac_module

    monkeypatch.setattr(stac_module, "PAGE_LIMIT", 3)
    left, bottom, right, top = LATTICE.tile_bounds(TILE)
    ux, uy = Transformer.from_crs(3338, 32606, always_xy=True).transform(left, top)
    x0, y0 = round(ux / 20) * 20 - 200, round(uy / 20) * 20 + 200
    flat = {key: (lambda x, y: np.full(x.shape, 1500)) for key in COMMON}
    bounds = (left, bottom, right, top)
    with LoopbackServer() as server:
        api = EarthSearch(server)
        for day in range(1, 8):
            scene = Scene(f"S2B_6WVC_202107{day:02d}_0_L2A", datetime(2021, 7, day, 21, tzinfo=UTC),
                          float(day), "03.01", 32606, x0, y0, 1200.0)  # fmt: skip
            api.add_scene(scene, flat, lambda x, y: np.full(x.shape, 4))
        api.sortby_drops_next = True
        items = search_items(api.url, bounds, datetime_interval="2021-07-01/2021-07-31",
                             max_items=None)
        assert len(items) == 7 and not any("sortby" in s for s in api.searches)
        api.stuck_paging = True
        api.searches.clear()
        with pytest.raises(SourceError) as exc:
            search_items(api.url, bounds, datetime_interval="2021-07-01/2021-07-31")
        assert len(api.searches) == 2  # the first page, then its repeat: stopped there
    assert str(exc.value) == (
        f"{api.url}: STAC search: page 2 repeats the items of an earlier page (the catalog's "
        "next link does not advance); retry later, or report it to the catalog's operator")
