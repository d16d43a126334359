"""The stac source's ``exclude`` setting: what each tile's composite is made with, and the
checks made when the workflow starts."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import shapely

from mapper.config import load_config, load_region
from mapper.errors import ConfigError, InputError
from mapper.grid import Lattice
from mapper.sources.exclusions import (
    check_exclusions,
    composite_settings,
    excluded_items,
    restated_entries,
    tiles_over,
    tiles_using,
)
from mapper.sources.manifest import make_manifest, write_manifest
from mapper.sources.settings_checks import check_source_settings


@pytest.fixture(scope="module")
def fairbanks():  # noqa: ANN201
    return load_region(load_config("config/config.yaml"), "fairbanks")


def with_source(region, **changes):  # noqa: ANN001, ANN003, ANN201
    settings = copy.deepcopy(region.settings)
    settings["sources"]["sentinel2"].update(changes)
    return dataclasses.replace(region, settings=settings)


def test_a_region_without_exclusions_gives_its_section_as_it_is(fairbanks) -> None:  # noqa: ANN001
    """The fetch jobs' params of a project made before ``exclude`` existed are unchanged, so an
    upgrade fetches no composite again."""
    section = fairbanks.settings["sources"]["sentinel2"]
    assert "exclude" not in section
    assert composite_settings(section, fairbanks.tiles()[0], 64) == section


def test_each_tile_gets_the_ids_left_out_of_it_sorted() -> None:
    section = {"kind": "stac", "exclude_tile_px": 64,
               "exclude": {"b": ["R0001C0001"], "a": "all", "c": ["R0002C0002"]}}
    assert excluded_items(section, "R0001C0001", 64) == ["a", "b"]
    assert composite_settings(section, "R0002C0002", 64) == {"kind": "stac", "exclude": ["a", "c"]}
    assert composite_settings({"kind": "stac", "exclude_tile_px": 64,
                               "exclude": {"b": ["R0001C0001"]}},
                              "R0002C0002", 64) == {"kind": "stac"}


def _area(tiles: list[str], tile_px: int) -> shapely.Geometry:
    lattice = Lattice(0.0, 0.0, 10.0, tile_px)
    return shapely.union_all([shapely.box(*lattice.tile_bounds(t)) for t in tiles])


@pytest.mark.parametrize("listed_px, tile_px", [(384, 384), (384, 192), (384, 96), (192, 384),
                                                (384, 256), (256, 384), (100, 64)])
def test_a_listed_tile_maps_to_the_tiles_that_overlap_its_area(listed_px, tile_px) -> None:  # noqa: ANN001
    """The tiles an entry's id leaves the item out of at another tile size cover its area, and
    are the fewest that do: every one overlaps it (the same area when the listed tile splits
    into whole tiles)."""
    for listed in ("R0000C0000", "R0007C0003", "R0187C0556"):
        listed_area = _area([listed], listed_px)
        tiles = tiles_over(listed, listed_px, tile_px)
        assert tiles == sorted(tiles)
        assert _area(tiles, tile_px).contains(listed_area)
        assert all(_area([t], tile_px).intersection(listed_area).area > 0 for t in tiles)
        if listed_px % tile_px == 0:
            assert _area(tiles, tile_px).equals(listed_area)
            assert len(tiles) == (listed_px // tile_px) ** 2
    assert tiles_over("R0187C0556", 384, 384) == ["R0187C0556"]


def test_an_entry_leaves_the_item_out_of_the_same_area_after_tiles_are_split() -> None:
    """Listed at 384 px and read at 192 px: the four quarters of the listed tile, and no other
    tile; listed at 192 and read at 384: the tile that holds it."""
    section = {"kind": "stac", "exclude_tile_px": 384, "exclude": {"x": ["R0010C0020"]}}
    quarters = {"R0020C0040", "R0020C0041", "R0021C0040", "R0021C0041"}
    for row in range(18, 24):
        for col in range(38, 44):
            tile = Lattice.tile_id(row, col)
            assert (excluded_items(section, tile, 192) == ["x"]) == (tile in quarters), tile
    section = {"kind": "stac", "exclude_tile_px": 192, "exclude": {"x": ["R0021C0040"]}}
    assert excluded_items(section, "R0010C0020", 384) == ["x"]
    assert excluded_items(section, "R0010C0021", 384) == []


def test_an_entry_listing_tiles_needs_their_tile_size(fairbanks) -> None:  # noqa: ANN001
    """Without ``exclude_tile_px`` an id would name another area once ``tile_px`` changes: one
    error when the config is read, naming the key and the fix; ``all`` needs no size."""
    settings = copy.deepcopy(fairbanks.settings)
    settings["sources"]["sentinel2"]["exclude"] = {"S2A_Y": "all"}
    check_source_settings(settings, "fairbanks.yaml")
    settings["sources"]["sentinel2"]["exclude"]["S2A_X"] = [fairbanks.tiles()[0]]
    with pytest.raises(ConfigError) as err:
        check_source_settings(settings, "fairbanks.yaml")
    assert str(err.value) == (
        "fairbanks.yaml: key 'sources.sentinel2.exclude_tile_px': not set, and the tile ids under "
        "'exclude' name an area only at the tile size they were listed at; add "
        f"'exclude_tile_px: <that tile_px>' beside 'exclude' (the region's tile_px, "
        f"{fairbanks.settings['tile_px']}, unless it changed since they were listed)")
    settings["sources"]["sentinel2"]["exclude_tile_px"] = fairbanks.settings["tile_px"]
    check_source_settings(settings, "fairbanks.yaml")


def test_an_entry_must_name_tiles_the_region_fetches(fairbanks) -> None:  # noqa: ANN001
    tile = fairbanks.stacked_tiles()[-1]
    tile_px = fairbanks.settings["tile_px"]
    check_exclusions(with_source(fairbanks, exclude_tile_px=tile_px,
                                 exclude={"S2A_X": [tile], "S2A_Y": "all"}))
    with pytest.raises(ConfigError) as err:
        check_exclusions(with_source(fairbanks, exclude_tile_px=tile_px,
                                     exclude={"S2A_X": [tile, "R0001C0001"]}))
    assert str(err.value) == (
        f"{fairbanks.path}: key 'sources.sentinel2.exclude.S2A_X': R0001C0001 (tile_px "
        f"{tile_px}) is not in region 'fairbanks'; list the tiles whose composites used the item "
        "with: python -m mapper scenes --region fairbanks --item S2A_X")
    # the region's last tile, listed at twice the size: the tile that holds it is in the region
    row, col = Lattice.parse(tile)
    check_exclusions(with_source(fairbanks, exclude_tile_px=2 * tile_px,
                                 exclude={"S2A_X": [Lattice.tile_id(row // 2, col // 2)]}))


@pytest.mark.parametrize("key, value", [("exclude", {"S2A_X": "all"}), ("exclude_tile_px", 64)])
def test_only_a_stac_source_can_leave_items_out(fairbanks, key, value) -> None:  # noqa: ANN001
    settings = copy.deepcopy(fairbanks.settings)
    settings["sources"]["dem"][key] = value
    with pytest.raises(ConfigError, match=rf"key 'sources.dem.{key}': only a stac source's items "
                                          r"can be left out \(this source is cells\); remove the"):
        check_source_settings(settings, "fairbanks.yaml")


def test_entries_restated_at_another_tile_size() -> None:
    """Each listed tile becomes the region's tiles that overlap it; ``all`` stays ``all``; a
    tile outside the region's is dropped."""
    section = {"exclude_tile_px": 384,
               "exclude": {"x": ["R0010C0020"], "y": "all", "z": ["R0010C0020", "R0011C0020"]}}
    stacked = {"R0020C0040", "R0020C0041", "R0021C0040", "R0021C0041", "R0022C0040"}
    assert restated_entries(section, 192, stacked) == {
        "x": ["R0020C0040", "R0020C0041", "R0021C0040", "R0021C0041"], "y": "all",
        "z": ["R0020C0040", "R0020C0041", "R0021C0040", "R0021C0041", "R0022C0040"]}


def test_scenes_leaves_out_composites_made_at_another_tile_size(tmp_path) -> None:  # noqa: ANN001
    """A composite left from another ``tile_px`` names another area by the same id: ``scenes
    --item`` lists only the composites made at the region's tile size (and those whose
    manifest predates the record)."""
    folder = tmp_path / "sentinel2"
    folder.mkdir()
    block = {"b0": [{"id": "S2A_X", "clear_fraction": 0.5, "datetime": "2021-07-01"}]}
    for tile, extra in (("R0001C0001", {"tile_px": 64}), ("R0001C0002", {"tile_px": 128}),
                        ("R0001C0003", {})):
        write_manifest(folder / f"{tile}.json", make_manifest(
            "r", "sentinel2", "stac", [], tile=tile, stac={}, stac_blocks=block, **extra))
    assert tiles_using(folder, ["S2A_X"], 64) == {"S2A_X": ["R0001C0001", "R0001C0003"]}
    assert tiles_using(folder, ["S2A_X"]) == {"S2A_X": ["R0001C0001", "R0001C0002",
                                                         "R0001C0003"]}
    (folder / "R0001C0003.json").unlink()
    with pytest.raises(InputError, match="no composite manifest .* of tile_px 32; fetch"):
        tiles_using(folder, ["S2A_X"], 32)


def test_scenes_of_a_region_without_a_stac_source_is_an_error(capsys) -> None:  # noqa: ANN001
    from mapper.cli import main

    assert main(["scenes", "--region", "demo", "--item", "S2A_X"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "region 'demo''s sentinel2 source is demo, not a STAC search: its composites hold no "
        "scenes to list")
