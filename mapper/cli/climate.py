"""``python -m mapper climate-normals``: the 3-band climate normals from SNAP's monthly archives."""

from __future__ import annotations

import argparse

from mapper.cli import add_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "climate-normals",
        help="derive precip_annual, summer_warmth and jan_tmin from SNAP monthly climate archives",
        description=(
            "Average SNAP's downscaled CRU TS monthly GeoTIFFs (read from their zip archives) over "
            "the region's normal period into one 3-band float32 GeoTIFF the stack reads; print "
            "its path. Formulas: mapper/sources/snap.py and the README."
        ),
    )
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--source", default="climate", help="the snap source's name (default climate)")
    p.add_argument("--pr", required=True, metavar="ZIP", help="monthly precipitation archive")
    p.add_argument("--tas", required=True, metavar="ZIP", help="monthly mean temperature archive")
    p.add_argument(
        "--tasmin", required=True, metavar="ZIP", help="monthly minimum temperature archive"
    )
    p.add_argument("--out", required=True, metavar="OUT", help="output GeoTIFF")
    p.set_defaults(func=run_climate_normals)


def run_climate_normals(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.sources.snap import derive_region_normals

    region = load_run_region(args.config, args.region)
    archives = {"pr": args.pr, "tas": args.tas, "tasmin": args.tasmin}
    print(derive_region_normals(region, args.source, archives, args.out))
    return 0
