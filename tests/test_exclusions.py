"""The stac source's ``exclude`` setting: what each tile's composite is made with, and the
checks made when the workflow starts."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from mapper.config import load_config, load_region
from mapper.errors import ConfigError
from mapper.sources.exclusions import check_exclusions, composite_settings, excluded_items


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
    assert composite_settings(section, fairbanks.tiles()[0]) == section


def test_each_tile_gets_the_ids_left_out_of_it_sorted() -> None:
    section = {"kind": "stac", "exclude": {"b": ["R0001C0001"], "a": "all", "c": ["R0002C0002"]}}
    assert excluded_items(section, "R0001C0001") == ["a", "b"]
    assert composite_settings(section, "R0002C0002") == {"kind": "stac", "exclude": ["a", "c"]}
    assert composite_settings({"kind": "stac", "exclude": {"b": ["R0001C0001"]}},
                              "R0002C0002") == {"kind": "stac"}


def test_an_entry_must_name_tiles_the_region_fetches(fairbanks) -> None:  # noqa: ANN001
    tile = fairbanks.stacked_tiles()[-1]
    check_exclusions(with_source(fairbanks, exclude={"S2A_X": [tile], "S2A_Y": "all"}))
    with pytest.raises(ConfigError) as err:
        check_exclusions(with_source(fairbanks, exclude={"S2A_X": [tile, "R0001C0001"]}))
    assert str(err.value) == (
        f"{fairbanks.path}: key 'sources.sentinel2.exclude.S2A_X': R0001C0001 is not a tile of "
        f"region 'fairbanks' (tile_px {fairbanks.settings['tile_px']}); list the tiles whose "
        "composites used the item with: python -m mapper scenes --region fairbanks --item S2A_X")


def test_only_a_stac_source_can_leave_items_out(fairbanks) -> None:  # noqa: ANN001
    settings = copy.deepcopy(fairbanks.settings)
    settings["sources"]["dem"]["exclude"] = {"S2A_X": "all"}
    with pytest.raises(ConfigError, match=r"key 'sources.dem.exclude': only a stac source's items "
                                          r"can be left out \(this source is cells\); remove the"):
        check_exclusions(dataclasses.replace(fairbanks, settings=settings))


def test_scenes_of_a_region_without_a_stac_source_is_an_error(capsys) -> None:  # noqa: ANN001
    from mapper.cli import main

    assert main(["scenes", "--region", "demo", "--item", "S2A_X"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "region 'demo''s sentinel2 source is demo, not a STAC search: its composites hold no "
        "scenes to list")
