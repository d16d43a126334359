"""How a benchmark ends on bad input: a MapperError (a missing config, region file or workflow
output) becomes one line on stderr and exit status 1, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from mapper.errors import MapperError


def run_main(main: Callable[[], int | None]) -> None:
    """Run a benchmark's ``main`` and exit with its status; a MapperError is one error line, which
    adds where to run from when the current folder is not a project's root."""
    try:
        sys.exit(main())
    except MapperError as err:
        where = "" if Path("config/config.yaml").is_file() else " (run from the project's root)"
        sys.exit(f"error: {err}{where}")
