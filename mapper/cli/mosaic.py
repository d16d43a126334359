"""``python -m mapper mosaic``: a region's predicted tiles -> map products in maps/ (stage 8)."""

from __future__ import annotations

import argparse

from mapper.cli import add_config
from mapper.tasks import TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mosaic",
        help="mosaic predicted tiles into COGs with overviews, quick-look, QGIS style, STAC item",
        description=(
            "Mosaic one task's predicted tiles into Cloud-Optimized GeoTIFFs (NSP: percent "
            "probability; soil order: class with colour table and names, plus class "
            "probabilities), each with a quick-look PNG, a QGIS style and a STAC Item beside it."
        ),
    )
    p.add_argument("tiles", nargs="+", help="predicted tiles (results/<region>/predict/<task>/)")
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--model", required=True, help="the checkpoint the tiles were predicted with")
    p.add_argument("--out", required=True, help="main COG, maps/<task>_<region>.tif")
    p.set_defaults(func=run_mosaic)


def run_mosaic(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.products import make_products

    region = load_run_region(args.config, args.region)
    products = make_products(region, args.task, args.model, args.tiles, args.out)
    for path in products.all():
        print(path)
    return 0
