"""``python -m mapper samples``: observation points -> samples table with stack values;
``folds``: its cross-validation folds."""

from __future__ import annotations

import argparse

from mapper.cli import add_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "samples",
        help="sample the stacks at the observation points (Parquet table)",
    )
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument(
        "--observations", required=True, metavar="OBS",
        help="CSV or Parquet: obs_id, lon, lat, date, nsp, soil_order",
    )
    p.add_argument("--out", required=True, metavar="OUT", help="output Parquet table")
    p.add_argument("stacks", nargs="+", metavar="STACK", help="the region's stack GeoTIFFs")
    p.set_defaults(func=run_samples)

    f = subparsers.add_parser(
        "folds", help="draw the cross-validation folds of a samples table (Parquet table)"
    )
    add_config(f)
    f.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    f.add_argument("--samples", required=True, metavar="S", help="samples table (Parquet)")
    f.add_argument("--out", required=True, metavar="OUT", help="output Parquet table")
    f.set_defaults(func=run_folds)


def run_samples(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.samples import build_samples

    region = load_run_region(args.config, args.region)
    table = build_samples(region, args.observations, args.stacks, args.out)
    print(f"{args.out}: {len(table)} points")
    return 0


def run_folds(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.folds import build_folds

    region = load_run_region(args.config, args.region)
    folds = build_folds(region, args.samples, args.out)
    print(f"{args.out}: folds of {len(folds)} points")
    return 0
