"""The one exception family of mapper.

Every message names the file (or config key) at fault and says what to do about it, because the
person reading it is usually looking at a failed cluster job's log, not at the code.
"""

from __future__ import annotations


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


class CheckpointError(MapperError):
    """A model checkpoint is unreadable or belongs to another model size, band list or task."""
