"""Command line: ``python -m mapper <command> ...``.

Each module in this package adds its commands through ``register(subparsers)``; a command parses
its arguments and calls one library function. Library code logs; the CLI prints one-line results
and turns a :class:`mapper.errors.MapperError` into a one-line message and exit status 1.
To add a command, add a module here with a ``register`` function.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from mapper import __version__
from mapper.errors import MapperError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mapper",
        description="Soil and permafrost maps of Alaska with MiSo: the stages of the workflow.",
    )
    parser.add_argument("--version", action="version", version=f"mapper {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except MapperError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
