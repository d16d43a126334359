"""``python -m mapper model-info``: what a MiSo checkpoint holds."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "model-info", help="print a MiSo checkpoint's size, task, classes, bands and checksum"
    )
    p.add_argument("checkpoint", help="checkpoint file written by training")
    p.set_defaults(func=run_model_info)


def run_model_info(args: argparse.Namespace) -> int:
    from mapper.models.checkpoint import describe_checkpoint

    info = describe_checkpoint(args.checkpoint)
    for key, value in info.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:8} {shown}")
    return 0
