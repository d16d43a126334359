"""``python -m mapper uncertainty``: a map's uncertainty product in maps/ (stage 8), and
``uncertainty-report``: a synthetic region's error rate by decile of uncertainty."""

from __future__ import annotations

import argparse

from mapper.cli import add_config
from mapper.tasks import TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "uncertainty",
        help="mosaic a map's per-pixel uncertainty into a COG with quick-look, QGIS style, STAC",
        description=(
            "Write the uncertainty product beside a task's map: the normalised entropy of the "
            "blended class probabilities and, with ensemble members, the spread of the "
            "probability (binary task) or the members' disagreement on the class (multiclass), "
            "each as UInt8 percent (scale 0.01, nodata 255), with a quick-look PNG, a QGIS style "
            "and a STAC Item."
        ),
    )
    p.add_argument("tiles", nargs="+", help="the map's predicted tiles (results/<region>/predict/"
                   "<task>/)")
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--task", required=True, choices=list(TASKS))
    p.add_argument("--model", required=True, help="the checkpoint the map's tiles were predicted "
                   "with")
    p.add_argument("--out", required=True, help="the product's COG, maps/<task>_<region>_"
                   "uncertainty.tif")
    p.add_argument("--member-models", nargs="*", default=[], metavar="PT",
                   help="the ensemble members' checkpoints (none: entropy only)")
    p.add_argument("--member-tiles", nargs="*", default=[], metavar="TIF",
                   help="every member's predicted tiles (told apart by their model checksum)")
    p.set_defaults(func=run_uncertainty)

    r = subparsers.add_parser(
        "uncertainty-report",
        help="a synthetic region's map error by decile of uncertainty, against its hidden truth",
        description=(
            "Against a synthetic region's hidden truth (resources/<region>/truth/), the error "
            "rate of each map by decile of each band of its uncertainty product: a Markdown "
            "table, the figures as JSON and a PNG figure."
        ),
    )
    add_config(r)
    r.add_argument("--region", required=True, help="region name (a synthetic region)")
    r.add_argument("--maps", nargs="+", required=True, help="maps/<task>_<region>.tif, per task")
    r.add_argument("--uncertainty", nargs="+", required=True,
                   help="maps/<task>_<region>_uncertainty.tif, per task in the order of --maps")
    r.add_argument("--truth", nargs="+", required=True,
                   help="resources/<region>/truth/<task>.tif, per task in the order of --maps")
    r.add_argument("--out", required=True, help="report (.md); .json and _deciles.png beside it")
    r.set_defaults(func=run_report)


def run_uncertainty(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.products.uncertainty import make_uncertainty_products

    region = load_run_region(args.config, args.region)
    products = make_uncertainty_products(region, args.task, args.model, args.tiles, args.out,
                                         member_models=args.member_models,
                                         member_tiles=args.member_tiles)
    for path in products.all():
        print(path)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.uncertainty_report import write_uncertainty_report

    region = load_run_region(args.config, args.region)
    written = write_uncertainty_report(region, args.maps, args.uncertainty, args.truth, args.out)
    for path in written:
        print(path)
    return 0
