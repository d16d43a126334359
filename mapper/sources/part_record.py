"""The record beside a partial download (``<dest>.part.validator``): the URL and the validator
(ETag, Last-Modified date or FTP MDTM time) of the response its bytes came from, written before
its first byte, so that the next job resumes the part only while the file is unchanged upstream
(:func:`mapper.sources.http.download`: ``If-Range``; :mod:`mapper.sources.ftp`: MDTM, then
``REST``).

The record vouches only for bytes written from byte 0, or resumed under ``If-Range`` with the
validator they were recorded with: a part resumed on a checksum alone, or without ``If-Range``,
gets none, so a later job without the checksum cannot finish a mix of two versions.
"""

from __future__ import annotations

import json
from pathlib import Path

from mapper.files import atomic_path

VALIDATOR_SUFFIX = ".validator"
"""Beside ``<dest>.part``: the URL and the validator its bytes were sent under (JSON)."""


def _validator_file(part: Path) -> Path:
    return part.with_name(part.name + VALIDATOR_SUFFIX)


def forget_validator(part: Path) -> None:
    """Delete the record beside ``part`` (the part was renamed onto its file, or given up)."""
    _validator_file(part).unlink(missing_ok=True)


def remember_validator(part: Path, url: str, validator: str | None) -> None:
    """Record (atomically) that the bytes about to go into ``part`` come from ``url`` under
    ``validator`` (an ETag, a Last-Modified date, an FTP MDTM time), so that a later job can
    resume ``part`` against it; with no validator, forget any record (nothing to resume
    against)."""
    if validator is None:
        forget_validator(part)
        return
    record = _validator_file(part)
    text = json.dumps({"url": url, "validator": validator})
    if not (record.is_file() and record.read_text() == text):
        with atomic_path(record) as tmp:
            tmp.write_text(text)


def recalled_validator(part: Path, url: str) -> str | None:
    """The validator recorded beside ``part`` for ``url`` (:func:`remember_validator`), or None
    (no record, an unreadable one, or one for another URL)."""
    try:
        record = json.loads(_validator_file(part).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("url") != url:
        return None
    validator = record.get("validator")
    return validator if isinstance(validator, str) and validator else None
