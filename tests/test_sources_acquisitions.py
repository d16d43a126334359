"""One vote per Sentinel-2 acquisition: granules of one pass (and reprocessed copies) are
mosaicked before the median, and the per-block cap counts acquisitions, against the loopback
Earth Search v1 replica (SYNTHETIC scenes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pystac
import pytest
import rasterio
import shapely
import shapely.geometry
from earth_search import EarthSearch, Scene
from httpserver import LoopbackServer
from pyproj import Transformer

from mapper.bands import S2_BANDS
from mapper.config import load_config, load_region
from mapper.errors import ConfigError, InputError
from mapper.grid import Lattice
from mapper.sources.exclusions import tiles_over, tiles_using
from mapper.sources.fetch import fetch_source
from mapper.sources.manifest import read_manifest
from mapper.sources.stac import acquisition, items_by_block

TILE = "R1500C4453"  # 64 px at 10 m near Nenana (EPSG:3338), the fetch_config region's tile
LATTICE = Lattice(-2_600_000.0, 2_600_000.0, 10.0, 64)
PASS_START = datetime(2021, 7, 1, 20, 58, 19, tzinfo=UTC)
FAR_GRANULE = "S2A_6UUC_20210701_0_L2A"
"""A granule of the first pass that the tile's search does not find."""


def _item(item_id: str, **properties) -> pystac.Item:
    box = (-149.2, 64.5, -149.1, 64.6)
    geometry = shapely.geometry.mapping(shapely.box(*box))
    return pystac.Item(item_id, geometry, list(box), datetime(2021, 7, 1, 21, tzinfo=UTC),
                       {"eo:cloud_cover": 1.0, **properties})


def test_acquisition_is_the_datatake_without_its_baseline():
    """Two granules of one pass, and the same granule reprocessed under another baseline, are one
    acquisition; without a datatake id the product name decides; with neither, the item."""
    a = _item("S2A_6WVC_20210701_0_L2A", **{"s2:datatake_id": "GS2A_20210701T205819_031513_N03.01"})
    b = _item("S2A_6WVD_20210701_0_L2A", **{"s2:datatake_id": "GS2A_20210701T205819_031513_N03.01"})
    again = _item("S2A_6WVC_20210701_1_L2A",
                  **{"s2:datatake_id": "GS2A_20210701T205819_031513_N05.00"})
    other = _item("S2A_6WVC_20210711_0_L2A",
                  **{"s2:datatake_id": "GS2A_20210711T205819_031656_N03.01"})
    assert acquisition(a) == acquisition(b) == acquisition(again) == "GS2A_20210701T205819_031513"
    assert acquisition(other) != acquisition(a)
    uri = "S2B_MSIL2A_20230912T133839_N0509_R124_T22MHD_20230912T174059.SAFE"
    c = _item("c", **{"s2:product_uri": uri})
    d = _item("d", **{"s2:product_uri": uri.replace("T22MHD", "T22MHE")})
    assert acquisition(c) == acquisition(d) == "GS2B_20230912T133839_R124"
    assert acquisition(_item("plain", **{"s2:datatake_id": "not a datatake"})) == "plain"


def test_the_block_cap_counts_acquisitions_and_keeps_their_granules():
    """``max_items`` 2: the two least cloudy acquisitions with all their granules that meet the
    block; a third acquisition is left out even though only three items were chosen."""
    take = {"s2:datatake_id": "GS2A_20210701T205819_031513_N03.01"}
    items = [
        _item("p1-west", **take),
        _item("p2", **{"s2:datatake_id": "GS2B_20210704T210019_022677_N03.01"}),
        _item("p1-east", **take),
        _item("p3", **{"s2:datatake_id": "GS2A_20210711T205819_031656_N03.01"}),
    ]
    x, y = Transformer.from_crs(4326, 3338, always_xy=True).transform(-149.15, 64.55)
    block = (x - 320, y - 320, x + 320, y + 320)
    chosen = items_by_block(items, {"b": block}, max_items=2)["b"]
    assert [it.id for it in chosen] == ["p1-west", "p2", "p1-east"]
    assert [it.id for it in items_by_block(items, {"b": block}, max_items=3)["b"]] == [
        "p1-west", "p2", "p1-east", "p3"]


def test_a_granule_meeting_only_the_blocks_lonlat_box_takes_no_place():
    """In the Aleutians a block's lon/lat box is much larger than the block (Alaska Albers is
    rotated against the meridians there): a granule that meets only the box's corner adds no
    pixel, so it must not spend the block's one place (``max_items`` 1) that a granule over the
    block takes."""
    from mapper.sources.stac import lonlat_bbox

    x, y = Transformer.from_crs(4326, 3338, always_xy=True).transform(-172.0, 52.5)
    block = (x - 5120, y - 5120, x + 5120, y + 5120)
    west, south, east, north = lonlat_bbox(block)
    to_albers = Transformer.from_crs(4326, 3338, always_xy=True)
    corners = [(lon, lat) for lon in (west + 0.004, east - 0.004)
               for lat in (south + 0.004, north - 0.004)]
    outside = [(lon, lat) for lon, lat in corners
               if not shapely.box(*block).contains(shapely.Point(to_albers.transform(lon, lat)))]
    assert outside  # a corner of the box beyond the block

    def square(item_id: str, lon: float, lat: float, cloud: float) -> pystac.Item:
        box = (lon - 0.003, lat - 0.003, lon + 0.003, lat + 0.003)
        return pystac.Item(item_id, shapely.geometry.mapping(shapely.box(*box)), list(box),
                           datetime(2021, 7, 1, 21, tzinfo=UTC), {"eo:cloud_cover": cloud})

    lon, lat = Transformer.from_crs(3338, 4326, always_xy=True).transform(x, y)
    corner = square("corner-only", *outside[0], 1.0)  # the least cloudy
    over = square("over-the-block", lon, lat, 30.0)
    assert [it.id for it in items_by_block([corner, over], {"b": block}, max_items=1)["b"]] == [
        "over-the-block"]


def _flat(value: float):
    return {key: (lambda x, y, v=value: np.full(x.shape, round(v * 10000)))
            for key in ("red", "green", "blue", "rededge1", "rededge2", "rededge3", "nir",
                        "swir16", "swir22")}


@pytest.fixture
def overlapping_pass(tmp_path, fetch_config):
    """A pass whose two granules overlap in a 240 m band across the tile (west granule 0.10
    reflectance, 5 % cloud; east one 0.11, 6 %), a second pass over all of it (0.30) and a third,
    cloudier one (0.90) that the cap of 2 acquisitions leaves out; the tile's pixel centres in
    UTM x, less the band's middle."""
    return fetch_passes(tmp_path, fetch_config)


def fetch_passes(tmp_path, fetch_config, exclude=None):  # noqa: ANN001, ANN201
    """:func:`overlapping_pass`'s composite, the source's ``exclude`` setting ``exclude``: the
    manifest, the composite's path and the pixels' UTM x less the band's middle; the config
    beside them."""
    left, bottom, right, top = LATTICE.tile_bounds(TILE)
    to_utm = Transformer.from_crs(3338, 32606, always_xy=True)
    cx, cy = to_utm.transform([left, right, left, right], [top, top, bottom, bottom])
    xmid = round((min(cx) + max(cx)) / 40) * 20
    ytop = round(max(cy) / 20) * 20 + 1000
    clear = lambda x, y: np.full(x.shape, 4)  # noqa: E731  SCL 4: vegetation
    with LoopbackServer() as server:
        api = EarthSearch(server)
        granules = [
            Scene("S2A_6WVC_20210701_0_L2A", datetime(2021, 7, 1, 21, 0, 3, tzinfo=UTC), 5.0,
                  "03.01", 32606, xmid - 2320, ytop, 2440.0, "VC", PASS_START),
            Scene("S2A_6WVD_20210701_0_L2A", datetime(2021, 7, 1, 21, 0, 7, tzinfo=UTC), 6.0,
                  "03.01", 32606, xmid - 120, ytop, 2440.0, "VD", PASS_START),
            Scene("S2B_6WVC_20210704_0_L2A", datetime(2021, 7, 4, 21, tzinfo=UTC), 10.0,
                  "03.01", 32606, xmid - 1500, ytop, 3000.0),
            Scene("S2A_6WVC_20210711_0_L2A", datetime(2021, 7, 11, 21, tzinfo=UTC), 20.0,
                  "03.01", 32606, xmid - 1500, ytop, 3000.0),
            # the first pass's granule 200 km south: it reaches no block of the tile
            Scene(FAR_GRANULE, datetime(2021, 7, 1, 20, 59, 40, tzinfo=UTC), 30.0, "03.01",
                  32606, xmid - 2320, ytop - 200_000, 2440.0, "UC", PASS_START),
        ]
        for scene, value in zip(granules, (0.10, 0.11, 0.30, 0.90, 0.50), strict=True):
            api.add_scene(scene, _flat(value), clear)
        config = fetch_config({"sentinel2": {
            "kind": "stac", "api": api.url, "datetime": "2021-06-01/2021-08-31",
            "max_cloud": 40, "max_items": 2, "block_px": 32, "harmonized": False,
            **({"exclude": exclude, "exclude_tile_px": 64} if exclude else {})}})
        region = load_region(load_config(config), "r")
        out = tmp_path / "sources"
        manifest = read_manifest(fetch_source(region, "sentinel2", out, tile=TILE))
    rows, cols = np.mgrid[0:64, 0:64]
    ux, _ = to_utm.transform(left + (cols + 0.5) * 10.0, top - (rows + 0.5) * 10.0)
    return manifest, out / "sentinel2" / f"{TILE}.tif", ux - xmid


def test_a_pass_seen_in_two_granules_counts_once(overlapping_pass):
    """West of the overlap the median of the first granule and the second pass, east of it of
    the second granule and the second pass; in the overlap the first granule (the less cloudy)
    alone stands for its pass: 0.20, not the 0.11 of a pass counted twice."""
    manifest, dest, dx = overlapping_pass
    passes = {i["id"]: i["acquisition"] for c in manifest["stac_blocks"].values() for i in c}
    assert sorted(passes) == ["S2A_6WVC_20210701_0_L2A", "S2A_6WVD_20210701_0_L2A",
                              "S2B_6WVC_20210704_0_L2A"]  # the third pass is beyond the cap
    assert passes["S2A_6WVC_20210701_0_L2A"] == passes["S2A_6WVD_20210701_0_L2A"]
    assert passes["S2A_6WVC_20210701_0_L2A"].startswith("GS2A_20210701T205819_")
    assert passes["S2B_6WVC_20210704_0_L2A"] != passes["S2A_6WVC_20210701_0_L2A"]
    with rasterio.open(dest) as src:
        data, tags = src.read(), src.tags()
    assert tags["MAPPER_ITEM_COUNT"] == "3" and tags["MAPPER_ACQUISITION_COUNT"] == "2"
    west, overlap, east = dx < -150, np.abs(dx) < 90, dx > 150
    assert min(west.sum(), overlap.sum(), east.sum()) > 200
    for b, (name, _) in enumerate(S2_BANDS):
        np.testing.assert_allclose(data[b][west | overlap], 0.20, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(data[b][east], 0.205, atol=1e-5, err_msg=name)


SECOND_PASS = "S2B_6WVC_20210704_0_L2A"


def test_an_excluded_item_is_left_out_and_the_next_pass_takes_its_place(tmp_path, fetch_config):
    """Left out of this tile, the second pass (0.30) gives way to the third (0.90), which the
    cap had left out: the medians become 0.50 and 0.505, and the manifest says what was left
    out. One granule of the first pass leaves out the whole pass (its other granule too). An
    entry of another tile changes nothing here."""
    manifest, dest, dx = fetch_passes(tmp_path / "one", fetch_config, {SECOND_PASS: [TILE]})
    used = {i["id"] for c in manifest["stac_blocks"].values() for i in c}
    assert SECOND_PASS not in used and "S2A_6WVC_20210711_0_L2A" in used
    assert tiles_using(tmp_path / "one" / "sources" / "sentinel2", [SECOND_PASS]) == {
        SECOND_PASS: [TILE]}  # the entry to give again keeps the tile it leaves the item out of
    assert manifest["stac"]["exclude"] == manifest["stac"]["left_out"] == [SECOND_PASS]
    with rasterio.open(dest) as src:
        data = src.read()
    west, east = dx < -150, dx > 150
    np.testing.assert_allclose(data[0][west], 0.50, atol=1e-5)
    np.testing.assert_allclose(data[0][east], 0.505, atol=1e-5)

    whole, whole_dest, _ = fetch_passes(tmp_path / "pass", fetch_config,
                                        {"S2A_6WVC_20210701_0_L2A": "all"})
    assert whole["stac"]["left_out"] == ["S2A_6WVC_20210701_0_L2A", "S2A_6WVD_20210701_0_L2A"]
    with rasterio.open(whole_dest) as src:  # the whole first pass gives way: 0.30 and 0.90
        np.testing.assert_allclose(src.read()[0][west | east], 0.60, atol=1e-5)
    assert tiles_using(tmp_path / "pass" / "sources" / "sentinel2",
                       ["S2A_6WVD_20210701_0_L2A"]) == {"S2A_6WVD_20210701_0_L2A": [TILE]}

    # the entry names the pass's granule far away (as `scenes --item` lists the tiles its pass
    # reached): it is looked up by id, and its pass left out here too
    far, far_dest, _ = fetch_passes(tmp_path / "far", fetch_config, {FAR_GRANULE: [TILE]})
    assert far["stac"]["left_out"] == ["S2A_6WVC_20210701_0_L2A", "S2A_6WVD_20210701_0_L2A"]
    with rasterio.open(far_dest) as src:
        np.testing.assert_allclose(src.read()[0][west | east], 0.60, atol=1e-5)

    other, other_dest, _ = fetch_passes(tmp_path / "other", fetch_config,
                                        {SECOND_PASS: ["R1500C4454"]})
    assert other["stac"].get("exclude", []) == [] and other["stac"].get("left_out", []) == []
    assert SECOND_PASS in {i["id"] for c in other["stac_blocks"].values() for i in c}
    with rasterio.open(other_dest) as src:
        data = src.read()
    np.testing.assert_allclose(data[0][west], 0.20, atol=1e-5)
    np.testing.assert_allclose(data[0][east], 0.205, atol=1e-5)


def test_an_excluded_id_the_catalog_does_not_have_is_one_error(tmp_path, fetch_config):
    """A typo, or the scene as another catalog names it (S2B_MSIL2A_..., Copernicus'), would
    leave nothing out: one line naming the entry, the collection and how to list the tile's
    items, and no composite."""
    with pytest.raises(ConfigError) as exc:
        fetch_passes(tmp_path, fetch_config, {"S2X_absent": "all", SECOND_PASS: [TILE]})
    message = str(exc.value)
    assert "\n" not in message
    assert "key 'sources.sentinel2.exclude.S2X_absent': no item of collection sentinel-2-l2a " \
        "at http://127.0.0.1:" in message and message.endswith(
            f"(python -m mapper scenes --region r --tile {TILE} lists the items of the tile's "
            "composite)")
    assert not (tmp_path / "sources" / "sentinel2" / f"{TILE}.tif").exists()


def test_scenes_lists_a_tiles_items_and_the_tiles_that_used_an_item(
        overlapping_pass, tmp_path, capsys):
    """``python -m mapper scenes``: a tile's items by cloud cover with their blocks; per item
    the tiles whose composites used it, as an ``exclude`` entry (a comment when none did)."""
    from mapper.cli import main

    config = tmp_path / "config.yaml"
    sources = ["--config", str(config), "--region", "r", "--sources", str(tmp_path / "sources")]
    assert main(["scenes", *sources, "--tile", TILE]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "S2A_6WVC_20210701_0_L2A", "S2A_6WVD_20210701_0_L2A", SECOND_PASS]
    assert lines[0].split()[1:4] == ["2021-07-01T21:00:03+00:00", "cloud", "5"]
    assert lines[0].split()[6] == lines[1].split()[6]  # the two granules of the first pass
    assert main(["scenes", *sources, "--item", SECOND_PASS, "S2A_6WVC_20210711_0_L2A"]) == 0
    assert capsys.readouterr().out == ("# tile ids at tile_px 64: exclude_tile_px: 64\n"
                                       f'{SECOND_PASS}: ["{TILE}"]\n'
                                       "# S2A_6WVC_20210711_0_L2A: used by no fetched composite\n")
    assert main(["scenes", *sources, "--tile", "R1500C4454"]) == 1
    missing = tmp_path / "sources" / "sentinel2" / "R1500C4454"
    assert capsys.readouterr().err.strip().endswith(
        f"{missing}.json: no composite manifest of tile R1500C4454; fetch its composite first: "
        f"snakemake --cores 1 {missing}.tif")


def test_scenes_restates_entries_listed_at_another_tile_size(overlapping_pass, tmp_path, capsys):
    """After ``tile_px`` changed, the ids ``scenes --item`` finds (at the new size) cannot join
    entries listed at the old one under one ``exclude_tile_px``: it prints the whole section
    restated at the new size (each old tile as the region's tiles that overlap it), with the
    items asked for. ``scenes --tile`` refuses a composite made at another size."""
    from tiny_region import changed_copy

    from mapper.cli import main

    old = Lattice.tile_id(*(i // 2 for i in Lattice.parse(TILE)))  # the 128 px tile holding it
    config = changed_copy(tmp_path / "config.yaml", "r", tmp_path / "listed", lambda s: s[
        "sources"]["sentinel2"].update(exclude_tile_px=128, exclude={"S2A_OLD": [old],
                                                                     "S2A_ANY": "all"}))
    stacked = set(load_region(load_config(config), "r").stacked_tiles())
    quarters = sorted(t for t in tiles_over(old, 128, 64) if t in stacked)
    assert TILE in quarters and len(tiles_over(old, 128, 64)) == 4
    sources = ["--config", str(config), "--region", "r", "--sources", str(tmp_path / "sources")]
    assert main(["scenes", *sources, "--item", SECOND_PASS]) == 0
    assert capsys.readouterr().out == (
        "# the region's exclude entries name tiles of exclude_tile_px 128; all of them restated "
        "at tile_px 64, with the items asked for: replace the whole exclude section and its size "
        "with these\n"
        "# tile ids at tile_px 64: exclude_tile_px: 64\n"
        f"S2A_OLD: {json.dumps(quarters)}\nS2A_ANY: all\n{SECOND_PASS}: [\"{TILE}\"]\n")

    manifest = tmp_path / "sources" / "sentinel2" / f"{TILE}.json"
    data = json.loads(manifest.read_text())
    data["tile_px"] = 128
    manifest.write_text(json.dumps(data))
    assert main(["scenes", *sources, "--tile", TILE]) == 1
    assert "was made at tile_px 128, another area than tile R1500C4453 at the region's 64; " \
        "fetch it again" in capsys.readouterr().err
    del data["tile_px"]  # a manifest from before the size was recorded: its composite's width
    manifest.write_text(json.dumps(data))
    assert main(["scenes", *sources, "--tile", TILE]) == 0
    with pytest.raises(InputError, match="no composite manifest .* of tile_px 32"):
        tiles_using(tmp_path / "sources" / "sentinel2", [SECOND_PASS], 32)  # its width is 64
