"""Sentinel-2 items left out of composites: a STAC source's ``exclude`` setting.

A scene the SCL mask does not catch (smoke, haze, a cloud edge, a bad granule) shows in every
composite that used it. The region file names it with the tiles to leave it out of::

    sentinel2:
      kind: stac
      exclude:
        S2B_6VWP_20220714_0_L2A: [R0187C0556, R0187C0557]
        S2A_6WVC_20210711_0_L2A: all

An item stands for its acquisition (:func:`mapper.sources.stac.acquisition`: one satellite
pass), as in the composite, which gives each acquisition one vote: every granule of the pass
that the search returns, and any reprocessed copy, is left out with it (the neighbouring
granule of a spoilt pass holds the same spoilt pixels where the two overlap). A tile's
composite is then made as if the search had not returned them: the next acquisitions in order
of cloud cover take their place in each block. The fetch job of a tile
lists among its params only the ids left out of that tile (:func:`composite_settings`), so a new
entry fetches again the composites of the tiles it names and nothing else (``all``: every tile).
``python -m mapper scenes --item ID`` lists the tiles whose composites used the item's
acquisition (or were made without it), from their manifests, as an entry to paste.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mapper.errors import ConfigError, InputError
from mapper.grid import TILE_PATTERN

ALL = "all"
"""An ``exclude`` value: leave the item out of every tile's composite."""


def excluded_items(settings: dict[str, Any], tile: str) -> list[str]:
    """The ids of the items the source's ``exclude`` leaves out of ``tile``'s composite, sorted."""
    return sorted(item for item, tiles in (settings.get("exclude") or {}).items()
                  if tiles == ALL or tile in tiles)


def composite_settings(settings: dict[str, Any], tile: str) -> dict[str, Any]:
    """What ``tile``'s composite is made with: the source's section without ``exclude``, and
    under ``exclude`` the ids left out of this tile when there are any (the fetch job's params:
    an entry of another tile changes nothing here, and a region without exclusions gives its
    section as it is)."""
    out = {k: v for k, v in settings.items() if k != "exclude"}
    excluded = excluded_items(settings, tile)
    if excluded:
        out["exclude"] = excluded
    return out


def check_exclusions(region: Any) -> None:
    """Only a stac source leaves items out, and every tile an ``exclude`` entry names is one
    whose composite the region fetches (a mapped or context tile): a tile id of another lattice
    or a typo would leave the item in."""
    for source, settings in region.settings["sources"].items():
        if settings.get("exclude") is None:
            continue
        if settings["kind"] != "stac":
            raise ConfigError(
                f"{region.path}: key 'sources.{source}.exclude': only a stac source's items can "
                f"be left out (this source is {settings['kind']}); remove the key"
            )
        entries = {item: tiles for item, tiles in settings["exclude"].items() if tiles != ALL}
        stacked = set(region.stacked_tiles()) if entries else set()
        for item, tiles in entries.items():
            unknown = [t for t in tiles if t not in stacked]
            if unknown:
                raise ConfigError(
                    f"{region.path}: key 'sources.{source}.exclude.{item}': {', '.join(unknown)} "
                    f"{'is' if len(unknown) == 1 else 'are'} not a tile of region "
                    f"'{region.name}' (tile_px {region.settings['tile_px']}); list the tiles "
                    "whose composites used the item with: python -m mapper scenes --region "
                    f"{region.name} --item {item}"
                )


def composite_manifests(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Per tile, the manifest of its composite in a STAC source's folder (``<tile>.json``)."""
    from mapper.sources.manifest import read_manifest

    tile_json = re.compile(rf"^({TILE_PATTERN})\.json$")
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        match = tile_json.match(path.name)
        if match:
            manifest = read_manifest(path)
            if manifest["kind"] == "stac":
                out[match.group(1)] = manifest
    return out


def used_items(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The items a composite used (a clear pixel in at least one block), by id, in the order
    the search ranked them: each item's date, cloud cover and acquisition, and the blocks it was
    used in."""
    used: dict[str, dict[str, Any]] = {}
    for block, records in manifest.get("stac_blocks", {}).items():
        for record in records:
            if record.get("clear_fraction", 0) > 0:
                entry = used.setdefault(record["id"], {
                    "datetime": record.get("datetime"), "cloud_cover": record.get("cloud_cover"),
                    "acquisition": record.get("acquisition", record["id"]), "blocks": []})
                entry["blocks"].append(block)
    return dict(sorted(used.items(), key=lambda kv: (_cloud(kv[1]), kv[1]["datetime"] or "",
                                                     kv[0])))


def _cloud(entry: dict[str, Any]) -> float:
    return 100.0 if entry["cloud_cover"] is None else float(entry["cloud_cover"])


def tiles_using(folder: str | Path, items: Iterable[str]) -> dict[str, list[str]]:
    """Per item id, the tiles whose composites in ``folder`` used its acquisition (any of its
    granules) or were made without it by an ``exclude`` entry, sorted: the whole entry to give,
    so that pasting it again after more composites are fetched keeps the tiles it already
    leaves the item out of."""
    manifests = composite_manifests(folder)
    if not manifests:
        raise InputError(
            f"{folder}: no composite manifest (<tile>.json); fetch the composites first "
            f"(snakemake --cores 1 {Path(folder) / '<tile>.tif'})"
        )
    used = {tile: used_items(m) for tile, m in manifests.items()}
    passes = {item: e["acquisition"] for u in used.values() for item, e in u.items()}
    out = {}
    for item in items:
        out[item] = sorted(
            tile for tile, u in used.items()
            if item in _made_without(manifests[tile])
            or any(e["acquisition"] == passes.get(item, item) for e in u.values()))
    return out


def _made_without(manifest: dict[str, Any]) -> set[str]:
    """The items a composite was made without: its ``exclude`` entries and what they left out."""
    query = manifest.get("stac", {})
    return set(query.get("exclude", [])) | set(query.get("left_out", []))


def exclusion_entry(tiles_by_item: dict[str, list[str]]) -> str:
    """``tiles_by_item`` as ``exclude`` entries of a region file (YAML flow lists); an item no
    composite used as a comment that says so."""
    return "".join(f"{item}: {json.dumps(tiles)}\n" if tiles
                   else f"# {item}: used by no fetched composite\n"
                   for item, tiles in tiles_by_item.items())
