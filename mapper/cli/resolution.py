"""``python -m mapper resolution-report``: a region's maps at coarser out_res against its 10 m
map aggregated to their cells, and the prediction time of each resolution."""

from __future__ import annotations

import argparse

from mapper.cli import add_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "resolution-report",
        help="agreement of coarser maps with the 10 m map aggregated to their cells, and cost",
        description=(
            "Compare a region's maps predicted at coarser out_res (tiles of every task; each "
            "tile's task and out_res from its tags) with its 10 m maps aggregated to the same "
            "cells: NSP class agreement at 0.5 and mean absolute probability difference, soil "
            "order class agreement; and the seconds the predict jobs logged per resolution. "
            "Writes a Markdown table and the figures as JSON beside it."
        ),
    )
    p.add_argument("tiles", nargs="+", help="predicted tiles at 10 m and at each coarser out_res")
    p.add_argument("--logs", nargs="+", required=True,
                   help="each tile's predict log (logs/predict/...), in the order of the tiles")
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--out", required=True, help="report (.md); the .json is written beside it")
    p.set_defaults(func=run_resolution_report)


def run_resolution_report(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.resolution import write_resolution_report

    region = load_run_region(args.config, args.region)
    for path in write_resolution_report(region, args.tiles, args.logs, args.out):
        print(path)
    return 0
