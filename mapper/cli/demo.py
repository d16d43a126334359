"""``python -m mapper demo``: synthesize the demo region's sources (SYNTHETIC, deterministic)."""

from __future__ import annotations

import argparse

from mapper.cli import add_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="synthesize a demo region's sources and truth maps (SYNTHETIC, from its seed)",
        description=(
            "Write the SYNTHETIC sources of a demo region (Sentinel-2, DEM, climate, "
            "observations), its truth maps and a manifest under OUT, deterministically from the "
            "region's seed."
        ),
    )
    add_config(p)
    p.add_argument("--region", default="demo", help="region name (its sources must be kind demo)")
    p.add_argument("--out", default=None, help="output folder (default resources/<region>)")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mapper.config import load_run_region
    from mapper.demo.sources import synthesize_demo

    region = load_run_region(args.config, args.region)
    out = Path(args.out) if args.out else Path("resources") / args.region
    paths = synthesize_demo(region, out)
    print(paths["manifest"])
    return 0
