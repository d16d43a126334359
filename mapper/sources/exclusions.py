"""Sentinel-2 items left out of composites: a STAC source's ``exclude`` setting.

A scene the SCL mask does not catch (smoke, haze, a cloud edge, a bad granule) shows in every
composite that used it. The region file names it with the tiles to leave it out of::

    sentinel2:
      kind: stac
      exclude_tile_px: 384
      exclude:
        S2B_6VWP_20220714_0_L2A: [R0187C0556, R0187C0557]
        S2A_6WVC_20210711_0_L2A: all

A tile id names an area only together with a tile size (``R0187C0556`` is another area at
another ``tile_px``), so the entries state the size their ids were listed at
(``exclude_tile_px``; ``scenes --item`` prints it). At the region's own ``tile_px`` an entry
leaves the item out of the tiles it names; at another, out of every tile that overlaps one of
them (:func:`tiles_over`): the same area when the tiles were split (384 to 192 px), all of each
larger tile that holds one when they grew.

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
from mapper.grid import TILE_PATTERN, Lattice

ALL = "all"
"""An ``exclude`` value: leave the item out of every tile's composite."""


TILE_PX_KEY = "exclude_tile_px"
"""The source key stating the tile size the ``exclude`` entries' tile ids were listed at."""


def tiles_over(listed: str, listed_px: int, tile_px: int) -> list[str]:
    """The tiles of ``tile_px`` pixels that overlap tile ``listed`` of ``listed_px`` pixels (the
    lattices share their origin), in lattice order: ``[listed]`` when the sizes are equal."""
    row, col = Lattice.parse(listed)
    first_row, first_col = row * listed_px // tile_px, col * listed_px // tile_px
    end_row = -(-(row + 1) * listed_px // tile_px)
    end_col = -(-(col + 1) * listed_px // tile_px)
    return [Lattice.tile_id(r, c) for r in range(first_row, end_row)
            for c in range(first_col, end_col)]


def excluded_items(settings: dict[str, Any], tile: str, tile_px: int) -> list[str]:
    """The ids of the items the source's ``exclude`` leaves out of ``tile``'s composite (a tile
    of ``tile_px`` pixels), sorted: the items whose entry is ``all`` or names a tile (of
    ``exclude_tile_px`` pixels) that overlaps it."""
    listed_px = settings.get(TILE_PX_KEY) or tile_px
    return sorted(item for item, tiles in (settings.get("exclude") or {}).items()
                  if tiles == ALL or any(tile in tiles_over(t, listed_px, tile_px)
                                         for t in tiles))


def composite_settings(settings: dict[str, Any], tile: str, tile_px: int) -> dict[str, Any]:
    """What ``tile``'s composite is made with: the source's section without ``exclude`` and
    ``exclude_tile_px``, and under ``exclude`` the ids left out of this tile when there are any
    (the fetch job's params: an entry of another area changes nothing here, and a region
    without exclusions gives its section as it is)."""
    out = {k: v for k, v in settings.items() if k not in ("exclude", TILE_PX_KEY)}
    excluded = excluded_items(settings, tile, tile_px)
    if excluded:
        out["exclude"] = excluded
    return out


def check_exclusion_keys(settings: dict, origin: Any) -> None:
    """When the config is read: only a stac source leaves items out, and entries that list tile
    ids say at which tile size (``exclude_tile_px``): without it an id would silently name
    another area once ``tile_px`` changes."""
    for source, section in settings["sources"].items():
        for key in ("exclude", TILE_PX_KEY):
            if section.get(key) is not None and section["kind"] != "stac":
                raise ConfigError(
                    f"{origin}: key 'sources.{source}.{key}': only a stac source's items can "
                    f"be left out (this source is {section['kind']}); remove the key"
                )
        listing = any(tiles != ALL for tiles in (section.get("exclude") or {}).values())
        if listing and section.get(TILE_PX_KEY) is None:
            raise ConfigError(
                f"{origin}: key 'sources.{source}.{TILE_PX_KEY}': not set, and the tile ids "
                "under 'exclude' name an area only at the tile size they were listed at; add "
                f"'{TILE_PX_KEY}: <that tile_px>' beside 'exclude' (the region's tile_px, "
                f"{settings['tile_px']}, unless it changed since they were listed)"
            )


def check_exclusions(region: Any) -> None:
    """Every tile an ``exclude`` entry names overlaps a tile whose composite the region fetches
    (a mapped or context tile): a typo, or a tile of another region, would leave the item in.
    (The keys themselves are checked when the config is read: :func:`check_exclusion_keys`.)"""
    tile_px = int(region.settings["tile_px"])
    for source, settings in region.settings["sources"].items():
        entries = {item: tiles for item, tiles in (settings.get("exclude") or {}).items()
                   if tiles != ALL}
        if not entries:
            continue
        listed_px = int(settings[TILE_PX_KEY])
        stacked = set(region.stacked_tiles())
        for item, tiles in entries.items():
            unknown = [t for t in tiles if stacked.isdisjoint(tiles_over(t, listed_px, tile_px))]
            if unknown:
                raise ConfigError(
                    f"{region.path}: key 'sources.{source}.exclude.{item}': {', '.join(unknown)} "
                    f"(tile_px {listed_px}) {'is' if len(unknown) == 1 else 'are'} not in region "
                    f"'{region.name}'; list the tiles whose composites used the item with: "
                    f"python -m mapper scenes --region {region.name} --item {item}"
                )


def composite_manifests(folder: str | Path,
                        tile_px: int | None = None) -> dict[str, dict[str, Any]]:
    """Per tile, the manifest of its composite in a STAC source's folder (``<tile>.json``); with
    ``tile_px``, only those made at that tile size (a composite left from another ``tile_px``
    names another area by the same id; a manifest from before the size was recorded is sized by
    its composite's width, :func:`manifest_tile_px`, and counts when that is unknown too)."""
    from mapper.sources.manifest import read_manifest

    tile_json = re.compile(rf"^({TILE_PATTERN})\.json$")
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        match = tile_json.match(path.name)
        if match:
            manifest = read_manifest(path)
            if manifest["kind"] == "stac" and (
                    tile_px is None or manifest_tile_px(manifest) in (tile_px, None)):
                out[match.group(1)] = manifest
    return out


def manifest_tile_px(manifest: dict[str, Any]) -> int | None:
    """The tile size a composite was made at: its manifest's record, else (a manifest written
    before the size was recorded) its composite's width; None when neither is known."""
    if manifest.get("tile_px"):
        return int(manifest["tile_px"])
    items = manifest.get("items") or []
    path = Path(items[0]["path"]) if items else None
    if path is None or not path.is_file():
        return None
    import rasterio

    try:
        with rasterio.open(path) as src:
            return int(src.width)
    except rasterio.errors.RasterioError:
        return None


def restated_entries(settings: dict[str, Any], tile_px: int,
                     stacked: set[str]) -> dict[str, list[str] | str]:
    """The source's ``exclude`` entries restated as tiles of ``tile_px`` pixels: for each item,
    the ``stacked`` tiles that overlap a tile it lists (at ``exclude_tile_px``), or ``all``."""
    listed_px = settings.get(TILE_PX_KEY) or tile_px
    return {item: tiles if tiles == ALL else sorted(
                {t for listed in tiles for t in tiles_over(listed, listed_px, tile_px)
                 if t in stacked})
            for item, tiles in (settings.get("exclude") or {}).items()}


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


def tiles_using(folder: str | Path, items: Iterable[str],
                tile_px: int | None = None) -> dict[str, list[str]]:
    """Per item id, the tiles whose composites in ``folder`` (made at ``tile_px``, when given)
    used its acquisition (any of its granules) or were made without it by an ``exclude`` entry,
    sorted: the whole entry to give, so that pasting it again after more composites are fetched
    keeps the tiles it already leaves the item out of."""
    manifests = composite_manifests(folder, tile_px)
    if not manifests:
        raise InputError(
            f"{folder}: no composite manifest (<tile>.json)"
            + (f" of tile_px {tile_px}" if tile_px else "") + "; fetch the composites first "
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


def exclusion_entry(tiles_by_item: dict[str, list[str] | str], tile_px: int,
                    empty: str = "used by no fetched composite") -> str:
    """``tiles_by_item`` (tiles of ``tile_px`` pixels) as ``exclude`` entries of a region file
    (YAML flow lists), after a comment giving the ``exclude_tile_px`` they need; an item without
    tiles as a comment saying ``empty``."""
    head = f"# tile ids at tile_px {tile_px}: {TILE_PX_KEY}: {tile_px}\n"
    return head + "".join(f"{item}: {ALL if tiles == ALL else json.dumps(tiles)}\n" if tiles
                          else f"# {item}: {empty}\n"
                          for item, tiles in tiles_by_item.items())
