"""``python -m mapper cv-fold`` (one model, split and fold) and ``report`` (one task)."""

from __future__ import annotations

import argparse

from mapper.cli import add_config
from mapper.experiment import MODELS, SPLITS
from mapper.tasks import TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "cv-fold", help="train one model on one CV fold and write its test-point predictions"
    )
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--task", required=True, choices=list(TASKS), help="task")
    p.add_argument("--model", required=True, choices=list(MODELS))
    p.add_argument("--split", required=True, choices=list(SPLITS))
    p.add_argument("--fold", required=True, type=int, help="fold number (0-based)")
    p.add_argument("--samples", required=True, metavar="S", help="samples table (Parquet)")
    p.add_argument("--folds", required=True, metavar="F",
                   help="its folds table (Parquet; python -m mapper folds)")
    p.add_argument("--pretrained", metavar="P", help="pretrained checkpoint (model miso)")
    p.add_argument("--out", required=True, metavar="OUT", help="output Parquet table")
    p.add_argument("stacks", nargs="*", metavar="STACK",
                   help="the region's stack GeoTIFFs (MiSo's crops; a forest reads none)")
    p.add_argument("--device", default=None, help="MiSo's torch device (default: cuda if present)")
    p.set_defaults(func=run_cv_fold)

    r = subparsers.add_parser("report", help="metrics over CV folds: Markdown, JSON and plots")
    add_config(r)
    r.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    r.add_argument("--task", required=True, choices=list(TASKS), help="task")
    r.add_argument("--out", required=True, metavar="OUT", help="output Markdown (.md)")
    r.add_argument("--truth", metavar="T", help="truth raster (default for synthetic regions: "
                   "resources/<region>/truth/<task>.tif)")
    r.add_argument("folds", nargs="+", metavar="FOLD", help="cv-fold outputs")
    r.add_argument("--zones", nargs="*", metavar="ZONES", help="prepared zone layers to break "
                   "the results down by (default: the region's, resources/<region>/zones/"
                   "<name>.geojson; given empty: none)")
    r.set_defaults(func=run_report)


def run_cv_fold(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.evaluate import FoldSpec, cv_fold

    region = load_run_region(args.config, args.region)
    spec = FoldSpec(task=args.task, model=args.model, split=args.split, fold=args.fold)
    df = cv_fold(region, spec, samples=args.samples, folds=args.folds, stacks=args.stacks,
                 out=args.out, pretrained=args.pretrained, device=args.device)
    print(f"{args.out}: {len(df)} test points")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.report import report

    region = load_run_region(args.config, args.region)
    report(region, args.task, args.folds, args.out, args.truth, args.zones)
    print(args.out)
    return 0
