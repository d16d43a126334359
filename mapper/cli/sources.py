"""``python -m mapper fetch``: obtain one source of a region (download, STAC composite, check)."""

from __future__ import annotations

import argparse

from mapper.cli import add_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fetch",
        help="fetch one source of a region (http download, per-tile STAC composite, local file)",
        description=(
            "Fetch one source of a region into OUT (default resources/<region>/sources) and write "
            "its manifest (what, where from, size, sha256); print the manifest's path. For a "
            "snap source (SNAP's monthly climate archives) --file names the variable whose "
            "archive to fetch: pr, tas or tasmin."
        ),
    )
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--source", required=True, help="source name: sentinel2, dem, climate, ...")
    p.add_argument("--tile", help="tile id (stac sources: one composite per tile)")
    p.add_argument("--file", help="http sources: fetch only this file (its local name)")
    p.add_argument("--cell", help="cells sources: the 1 x 1 degree cell, e.g. N64W148")
    p.add_argument(
        "--out",
        help=(
            "the region's sources folder (default resources/<region>/sources); with --tile or "
            "--file it may instead be the target file's path inside that folder, "
            "<folder>/<source>/<file or tile.tif>"
        ),
    )
    p.set_defaults(func=run_fetch)

    w = subparsers.add_parser(
        "fetch-weights",
        help="download the region's model.satlas_weights URL (checked against its lock file)",
    )
    add_config(w)
    w.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    w.add_argument("--out", required=True, metavar="OUT", help="where to write the weights")
    w.set_defaults(func=run_fetch_weights)

    s = subparsers.add_parser(
        "scenes",
        help="the Sentinel-2 items a region's composites used (to leave one out: 'exclude')",
        description=(
            "From the manifests of a region's fetched Sentinel-2 composites: with --tile, the "
            "items a tile's composite used (id, date, cloud cover, acquisition, the "
            "scene-selection blocks it gave clear pixels to); with --item, the tiles whose "
            "composites used each item's acquisition or were made without it, printed as "
            "entries of the source's 'exclude' setting to paste into the region file, after "
            "the 'exclude_tile_px' their tile ids need."
        ),
    )
    add_config(s)
    s.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--tile", help="a tile id: list the items its composite used")
    which.add_argument("--item", nargs="+", help="STAC item ids: list the tiles that used them")
    s.add_argument("--sources", metavar="DIR",
                   help="the region's sources folder (default resources/<region>/sources)")
    s.set_defaults(func=run_scenes)


def run_fetch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mapper.config import load_run_region
    from mapper.sources.fetch import default_out_dir, fetch_source

    region = load_run_region(args.config, args.region)
    out = Path(args.out) if args.out else default_out_dir(args.region)
    target = f"{args.tile}.tif" if args.tile else f"{args.cell}.json" if args.cell else args.file
    if args.file and region.settings["sources"].get(args.source, {}).get("kind") == "snap":
        from mapper.sources.snap import archive_path

        target = archive_path("", args.source, args.file).name  # snap_<variable>.zip
    if target and out.name == target and out.parent.name == args.source:
        out = out.parent.parent  # the target file was given: its sources folder is two up
    manifest = fetch_source(
        region, args.source, out, tile=args.tile, file=args.file, cell=args.cell
    )
    print(manifest)
    return 0


def run_fetch_weights(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.sources.weights import fetch_weights

    print(fetch_weights(load_run_region(args.config, args.region), args.out))
    return 0


def run_scenes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mapper.config import load_run_region
    from mapper.errors import ConfigError, InputError
    from mapper.sources.exclusions import (
        ALL,
        TILE_PX_KEY,
        exclusion_entry,
        manifest_tile_px,
        restated_entries,
        tiles_using,
        used_items,
    )
    from mapper.sources.fetch import default_out_dir
    from mapper.sources.manifest import read_manifest

    region = load_run_region(args.config, args.region)
    kind = region.settings["sources"]["sentinel2"]["kind"]
    if kind != "stac":
        raise ConfigError(f"{region.path}: region '{region.name}''s sentinel2 source is {kind}, "
                          "not a STAC search: its composites hold no scenes to list")
    folder = Path(args.sources or default_out_dir(args.region)) / "sentinel2"
    tile_px = region.lattice.tile_px
    if args.item:
        found = tiles_using(folder, args.item, tile_px)
        section = region.settings["sources"]["sentinel2"]
        listed_px = section.get(TILE_PX_KEY)
        if listed_px and listed_px != tile_px:  # the region's entries name tiles of another size
            entries = restated_entries(section, tile_px, set(region.stacked_tiles()))
            for item, tiles in found.items():
                if entries.get(item) != ALL:
                    entries[item] = sorted({*entries.get(item, []), *tiles})
            print(f"# the region's exclude entries name tiles of {TILE_PX_KEY} {listed_px}; "
                  f"all of them restated at tile_px {tile_px}, with the items asked for: "
                  "replace the whole exclude section and its size with these")
            print(exclusion_entry(entries, tile_px, "none of its tiles meets the region's "
                                  f"(tile_px {listed_px}), and no fetched composite used it"),
                  end="")
            return 0
        print(exclusion_entry(found, tile_px), end="")
        return 0
    path = folder / f"{args.tile}.json"
    if not path.is_file():
        raise InputError(f"{path}: no composite manifest of tile {args.tile}; fetch its "
                         f"composite first: snakemake --cores 1 {folder / args.tile}.tif")
    manifest = read_manifest(path)
    made_at = manifest_tile_px(manifest)
    if made_at not in (tile_px, None):
        raise InputError(f"{path}: the composite of {args.tile} was made at tile_px {made_at}, "
                         f"another area than tile {args.tile} at the region's {tile_px}; fetch "
                         f"it again: snakemake --cores 1 {folder / args.tile}.tif")
    for item, entry in used_items(manifest).items():
        cloud = entry["cloud_cover"]
        print(f"{item}  {entry['datetime'] or '-'}  cloud {'-' if cloud is None else f'{cloud:g}'}"
              f" %  acquisition {entry['acquisition']}  blocks {' '.join(entry['blocks'])}")
    return 0
