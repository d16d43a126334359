"""``python -m mapper pretrain`` / ``finetune``: train MiSo checkpoints (resumable)."""

from __future__ import annotations

import argparse

from mapper.cli import add_config
from mapper.tasks import TASKS


def _common(p: argparse.ArgumentParser) -> None:
    add_config(p)
    p.add_argument("--region", required=True, help="region name (a key of config 'regions')")
    p.add_argument("--samples", required=True, metavar="S", help="samples table (Parquet)")
    p.add_argument("--out", required=True, metavar="OUT", help="output checkpoint (.pt)")
    p.add_argument("stacks", nargs="+", metavar="STACK", help="the region's stack GeoTIFFs")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="contrastive pretraining of MiSo on unlabelled crops (resumable)"
    )
    _common(p)
    p.set_defaults(func=run_pretrain)

    f = subparsers.add_parser(
        "finetune", help="fine-tune MiSo for one task on the labelled points (resumable)"
    )
    _common(f)
    f.add_argument("--task", required=True, choices=list(TASKS), help="task")
    f.add_argument("--pretrained", metavar="P", help="pretrained checkpoint to start from")
    f.set_defaults(func=run_finetune)


def run_pretrain(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.train import pretrain

    region = load_run_region(args.config, args.region)
    print(pretrain(region, args.samples, args.stacks, args.out, device=args.device))
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from mapper.config import load_run_region
    from mapper.errors import ConfigError
    from mapper.train import finetune

    region = load_run_region(args.config, args.region)
    if region.settings["training"]["pretrain"] and not args.pretrained:
        raise ConfigError(
            f"region {region.name} pretrains (training.pretrain: true in {region.path}): its "
            "maps' models start from the pretrained checkpoint; pass it with --pretrained "
            f"results/{region.name}/models/pretrain.pt, or set training.pretrain: false"
        )
    result = finetune(region, args.task, args.samples, args.stacks, args.out, args.pretrained,
                      device=args.device)
    loss = result.history[-1]["total"] if result.history else float("nan")
    print(f"{args.out}: {len(result.history)} epochs, final loss {loss:.4f}")
    return 0
