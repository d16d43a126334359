"""``python -m mapper tiles``: list a region's tile ids."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("tiles", help="print the tile ids of a region, one per line")
    p.add_argument("region", help="region name (a key of config 'regions')")
    p.add_argument("--config", default="config/config.yaml", help="config file")
    p.set_defaults(func=run_tiles)


def run_tiles(args: argparse.Namespace) -> int:
    from mapper.config import load_config, load_region

    for tile in load_region(load_config(args.config), args.region).tiles():
        print(tile)
    return 0
