"""The one exception family of mapper.

Every message names the file (or config key) at fault and says what to do about it, because the
person reading it is usually looking at a failed cluster job's log, not at the code.
"""

from __future__ import annotations

from collections.abc import Iterable


def first_few(items: Iterable[object], n: int = 5) -> str:
    """``"a, b, c and 4 more"``: the first ``n`` of ``items`` for a message, and how many more."""
    items = [str(i) for i in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


class MapperError(Exception):
    """Base of every error mapper raises on purpose; the CLI prints it on one line and exits 1."""


class ConfigError(MapperError):
    """A config or region file is invalid: unknown key, wrong type, missing file."""


class InputError(MapperError):
    """An input file (raster, table, vector) is unreadable or not what the stage expects."""


class SourceError(MapperError):
    """A source could not be fetched or verified (HTTP, STAC, checksum)."""


class NotFoundError(SourceError):
    """The server has no file at a source's URL (HTTP 404 or 410): sea, for a DEM cell."""


class ChangedError(SourceError):
    """The server no longer gives the bytes pinned for a URL (another size or sha256, a file where
    a lock file records none, or none where it records one): an elevation cell of 3DEP is then
    looked for among its dated versions (:mod:`mapper.sources.tnm`)."""


class CheckpointError(MapperError):
    """A model checkpoint is unreadable or belongs to another model size, band list or task."""


class TrainingError(MapperError):
    """Training gave a model that cannot be used (non-finite outputs: the optimisation diverged)."""
