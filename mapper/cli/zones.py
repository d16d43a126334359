"""``python -m mapper zone-layer``, ``fetch-zone`` and ``demo-zones``: the zone layers the
evaluation reports break their results down by (:mod:`mapper.zones`)."""

from __future__ import annotations

import argparse

from mapper.cli import add_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "zone-layer",
        help="prepare a zone layer: its polygons in EPSG:3338, one per zone, cut to the region",
        description=(
            "Read zone layer LAYER of the region from its file(s) (GeoJSON or a polygon "
            "shapefile, loose or zipped, in any CRS), keep its 'field', and write one "
            "(Multi)Polygon per zone in EPSG:3338 to OUT (GeoJSON); print OUT."
        ),
    )
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--layer", required=True, help="the layer's name (under the region's 'zones')")
    p.add_argument("--out", required=True, metavar="OUT", help="output GeoJSON")
    p.add_argument("inputs", nargs="+", metavar="FILE", help="the layer's source file(s)")
    p.set_defaults(func=run_zone_layer)

    f = subparsers.add_parser(
        "fetch-zone", help="download one file of an http zone layer (retries, resume, sha256)"
    )
    add_config(f)
    f.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    f.add_argument("--layer", required=True, help="the layer's name (under the region's 'zones')")
    f.add_argument("--file", required=True, help="the file's local name")
    f.add_argument("--out", required=True, metavar="OUT", help="where to write it")
    f.set_defaults(func=run_fetch_zone)

    d = subparsers.add_parser(
        "demo-zones", help="SYNTHETIC climate zones of a demo region from its synthetic climate"
    )
    d.add_argument("--climate", required=True, metavar="TIF", help="the demo's climate.tif")
    d.add_argument("--out", required=True, metavar="OUT", help="output GeoJSON (EPSG:4326)")
    d.set_defaults(func=run_demo_zones)


def run_zone_layer(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.zones import prepare_zone_layer

    region = load_run_region(args.config, args.region)
    counts = prepare_zone_layer(region, args.layer, args.inputs, args.out)
    print(f"{args.out}: {len(counts)} zones")
    return 0


def run_fetch_zone(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.zones import fetch_zone_file

    region = load_run_region(args.config, args.region)
    print(fetch_zone_file(region, args.layer, args.file, args.out))
    return 0


def run_demo_zones(args: argparse.Namespace) -> int:
    from mapper.demo.zones import synthesize_zones

    areas = synthesize_zones(args.climate, args.out)
    print(f"{args.out}: {len(areas)} SYNTHETIC zones")
    return 0
