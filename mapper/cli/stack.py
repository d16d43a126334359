"""``python -m mapper stack``: one tile's stack; ``stack-vrt``: a GDAL VRT over stacks."""

from __future__ import annotations

import argparse

from mapper.cli import add_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stack",
        help="warp the sources onto one tile and derive terrain covariates (19-band GeoTIFF)",
    )
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--tile", required=True, help="tile id, e.g. R0012C0034")
    p.add_argument(
        "--sentinel2", required=True, nargs="+", metavar="F",
        help="Sentinel-2 raster(s), bands found by description; the first with a value wins",
    )
    p.add_argument(
        "--dem", required=True, nargs="+", metavar="F",
        help="DEM raster(s) in metres (e.g. one VRT), the first with a value wins; or the "
             "elevation cells' .json records (kind cells: each pixel takes the product that "
             "serves its cell)",
    )
    p.add_argument(
        "--climate", required=True, nargs="+", metavar="F",
        help="climate normals: one 3-band raster or three 1-band rasters",
    )
    p.add_argument("--out", required=True, metavar="OUT", help="output stack GeoTIFF")
    p.set_defaults(func=run_stack)

    v = subparsers.add_parser("stack-vrt", help="write a GDAL VRT mosaic over stack GeoTIFFs")
    v.add_argument("--out", required=True, metavar="OUT", help="output .vrt file")
    v.add_argument("stacks", nargs="+", metavar="STACK", help="stack GeoTIFFs of one region")
    v.set_defaults(func=run_stack_vrt)


def run_stack(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mapper.config import load_run_region
    from mapper.errors import ConfigError
    from mapper.stack import build_stack

    region = load_run_region(args.config, args.region)
    if args.tile not in set(region.stacked_tiles()):  # a typo would stack open sea, or fail late
        configs = "".join(f" --config {c}" for c in args.config or [])
        raise ConfigError(
            f"tile {args.tile} is not a stacked tile of region {region.name} ({region.path}); "
            f"list them with: python -m mapper tiles {region.name} --stacked{configs}"
        )
    out = build_stack(
        region, args.tile, [Path(f) for f in args.sentinel2], [Path(f) for f in args.dem],
        [Path(f) for f in args.climate], Path(args.out),
    )
    print(out)
    return 0


def run_stack_vrt(args: argparse.Namespace) -> int:
    from mapper.vrt import write_vrt

    print(write_vrt(args.stacks, args.out))
    return 0
