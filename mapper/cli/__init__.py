"""Command line: ``python -m mapper <command> ...``.

Each module in this package adds its commands through ``register(subparsers)``; a command parses
its arguments and calls one library function. Library code logs; the CLI prints one-line results
and turns a :class:`mapper.errors.MapperError` into a one-line message and exit status 1.
To add a command, add a module here with a ``register`` function (and its name to
:data:`STAGE_ORDER`, which orders ``--help`` as the workflow runs).

Every command takes ``--log FILE``, as the workflow's rules give it: everything the command
writes goes to FILE, and the console gets short progress lines, warnings and the error line,
each starting with the job's label (:mod:`mapper.progress`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import traceback

from mapper import __version__
from mapper.errors import MapperError
from mapper.progress import LOG_FORMAT, job_output

STAGE_ORDER = ["demo", "sources", "climate", "zones", "stack", "samples", "train", "evaluate",
               "predict", "mosaic", "uncertainty", "resolution", "grid", "model"]
"""Command modules in the order of the workflow's stages, then the tools; others follow."""

LABEL_OPTIONS = ["region", "task", "model", "split", "fold", "tile", "source", "file", "cell",
                 "layer"]
"""Options whose values name a job on the console (as the rules' wildcards do)."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a count of crops, threads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def add_config(parser: argparse.ArgumentParser) -> None:
    """The ``--config`` option of a command: the config file, or several, each merged over the
    ones before as ``snakemake --configfile`` merges them (:func:`mapper.config.load_config`)."""
    parser.add_argument(
        "--config", action="append", metavar="FILE",
        help="config file (default: config/config.yaml); given again (a site file), merged over "
             "the ones before, as snakemake --configfile merges it",
    )  # fmt: skip


def _stage_rank(name: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mapper",
        description="Soil and permafrost maps of Alaska with MiSo: the stages of the workflow.",
    )
    parser.add_argument("--version", action="version", version=f"mapper {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in sorted((m.name for m in pkgutil.iter_modules(__path__)), key=_stage_rank):
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    for command in subparsers.choices.values():
        command.add_argument(
            "--log", metavar="FILE",
            help="write everything (log, progress bars, result, error) to FILE; print only "
                 "progress summaries, warnings and errors, each led by the job's label",
        )  # fmt: skip
    return parser


def job_label(args: argparse.Namespace) -> str:
    """``predict demo nsp R0187C0556``: the command and its short option values (no paths)."""
    parts = [args.command]
    for key in LABEL_OPTIONS:
        value = getattr(args, key, None)
        if value is None or os.sep in str(value):
            continue
        parts.append(f"f{value}" if key == "fold" else str(value))
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log:
        try:
            with job_output(args.log, job_label(args), args.verbose) as console:
                try:
                    return int(args.func(args) or 0)
                except MapperError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    console.error(f"error: {exc}")
                    return 1
                except Exception as exc:  # noqa: BLE001 - a bug: the traceback goes to the log
                    traceback.print_exc()
                    first = (str(exc).splitlines() or [""])[0]
                    console.error(f"failed ({type(exc).__name__}: {first}); traceback in "
                                  f"{args.log}")
                    return 1
        except MapperError as exc:  # the log file or the console settings
            print(f"error: {exc}", file=sys.stderr)
            return 1
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=LOG_FORMAT,
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except MapperError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader closed the pipe (``python -m mapper tiles alaska | head``): stop quietly, as
        # a Unix tool does; standard output goes to /dev/null so that exiting flushes nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
