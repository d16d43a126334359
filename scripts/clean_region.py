"""Delete one region's files from a project: its sources, results, maps and jobs' logs, no other's.

    python scripts/clean_region.py demo [--config config/config.yaml] [--dry-run]

Run from the project's folder (``make clean-demo`` runs it for the demo). Deleted:

- ``resources/<region>/`` and ``results/<region>/``;
- ``maps/<task>_<region>.*``, ``maps/<task>_<region>_uncertainty.*`` and
  ``maps/<task>_<region>_probabilities.*`` for each task of :mod:`mapper.tasks`;
- ``logs/<stage>/<name>.log`` whose region is ``<region>``: the log's name is
  ``<region>`` or starts with ``<region>_`` (workflow/rules/*.smk name them so), and no region
  of the config with a longer name (``demo_world2`` beside ``demo``) claims it.

A glob such as ``logs/*/demo_*.log`` would also take the logs and maps of a region whose name
starts with ``demo_``; the config's region names (read as written, not validated) tell them
apart. Prints each path it deletes (or would, with ``--dry-run``), then the count.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from mapper.config import DEFAULT_CONFIG, read_yaml
from mapper.errors import MapperError
from mapper.tasks import TASKS

MAP_SUFFIXES = ("", "_uncertainty", "_probabilities")
"""What follows ``<task>_<region>`` in the name of a map product (then ``.tif``, ``.png``, ...)."""


def region_of(name: str, regions: list[str]) -> str | None:
    """The region a log's file name (without ``.log``) belongs to: the longest of ``regions``
    that is the name or a prefix of it followed by ``_``; None when none is."""
    owners = [r for r in regions if name == r or name.startswith(f"{r}_")]
    return max(owners, key=len) if owners else None


def region_files(root: Path, region: str, regions: list[str]) -> list[Path]:
    """The files and folders of ``region`` under the project folder ``root`` (module doc)."""
    regions = sorted({*regions, region})
    found = [p for p in (root / "resources" / region, root / "results" / region) if p.exists()]
    for task in TASKS:
        for suffix in MAP_SUFFIXES:
            found += sorted((root / "maps").glob(f"{task}_{region}{suffix}.*"))
    for log in sorted((root / "logs").glob("*/*.log")):
        if region_of(log.stem, regions) == region:
            found.append(log)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("region")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="the config naming the project's regions (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    args = parser.parse_args(argv)
    if Path(args.config).exists():
        try:
            regions = list(read_yaml(args.config).get("regions") or {})
        except MapperError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:  # a project folder without its config: only the region's own names are known
        print(f"{args.config}: not found; the other regions' names are unknown, so a log "
              f"named {args.region}_<name> is taken as {args.region}'s", file=sys.stderr)
        regions = []
    paths = region_files(Path.cwd(), args.region, regions)
    for path in paths:
        print(path.relative_to(Path.cwd()))
        if not args.dry_run:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    done = "to delete" if args.dry_run else "deleted"
    print(f"{len(paths)} path(s) of region {args.region} {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
