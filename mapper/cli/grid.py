"""``python -m mapper tiles``: list a region's tile ids (mapped, or with the context tiles)."""

from __future__ import annotations

import argparse

from mapper.cli import add_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tiles", help="print the tile ids of a region, one per line")
    p.add_argument("region", nargs="?", help="region name (a key of config 'regions')")
    p.add_argument("--region", dest="region_option", metavar="REGION",
                   help="the region, as the other commands take it")
    add_config(p)
    p.add_argument("--stacked", action="store_true",
                   help="also the context tiles (stacked, not mapped) within a crop's reach")
    p.set_defaults(func=run_tiles)


def run_tiles(args: argparse.Namespace) -> int:
    from mapper.config import check_places, load_run_region
    from mapper.errors import ConfigError

    name = args.region or args.region_option
    if not name or (args.region and args.region_option and args.region != args.region_option):
        raise ConfigError("give one region: python -m mapper tiles <region> [--stacked] (or "
                          "--region <region>)")
    region = load_run_region(args.config, name)
    check_places(region)  # a boundary that meets no tile is an error, not an empty list
    for tile in region.stacked_tiles() if args.stacked else region.tiles():
        print(tile)
    return 0
