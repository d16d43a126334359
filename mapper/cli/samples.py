"""``python -m mapper samples``: observation points -> samples table with stack values and folds."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "samples",
        help="sample the stacks at the observation points; assign CV folds (Parquet table)",
    )
    p.add_argument("--config", default="config/config.yaml", help="config file")
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument(
        "--observations", required=True, metavar="OBS",
        help="CSV or Parquet: obs_id, lon, lat, date, nsp, soil_order",
    )
    p.add_argument("--out", required=True, metavar="OUT", help="output Parquet table")
    p.add_argument("stacks", nargs="+", metavar="STACK", help="the region's stack GeoTIFFs")
    p.set_defaults(func=run_samples)


def run_samples(args: argparse.Namespace) -> int:
    from mapper.config import load_config, load_region
    from mapper.samples import build_samples

    region = load_region(load_config(args.config), args.region)
    table = build_samples(region, args.observations, args.stacks, args.out)
    print(f"{args.out}: {len(table)} points")
    return 0
