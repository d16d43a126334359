"""How a benchmark ends on bad input: a MapperError (a missing config, region file or workflow
output) becomes one line on stderr and exit status 1, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from mapper.errors import MapperError


def run_main(main: Callable[[], int | None], *, from_root: bool = True) -> None:
    """Run a benchmark's ``main`` and exit with its status; a MapperError is one error line. For a
    benchmark that reads the project's files from the current folder (``from_root``), the line
    adds where to run from when that folder is not a project's root; one that finds them beside
    its own file runs from anywhere, and the hint would send the reader to the wrong place."""
    try:
        sys.exit(main())
    except MapperError as err:
        lost = (from_root and not Path("config/config.yaml").is_file()
                and "project's" not in str(err))  # said already
        where = " (run from the project's root)" if lost else ""
        sys.exit(f"error: {err}{where}")
