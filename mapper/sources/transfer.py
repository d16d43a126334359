"""What one download attempt shares over HTTP(S) and FTP: how it ends (:class:`RetryableError`,
:class:`FatalError`), how long to wait before the next
(:func:`backoff_wait`, :func:`retry_after_seconds`), and writing its body to ``<dest>.part``
(:func:`write_body`).

:func:`mapper.sources.http.download` runs the attempts; :mod:`mapper.sources.http` and
:mod:`mapper.sources.ftp` make one each.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mapper.progress import bar as progress_bar

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
LOW_SPEED_BYTES_PER_S = 1024
LOW_SPEED_SECONDS = 60.0
"""A body that goes on arriving slower than ``LOW_SPEED_BYTES_PER_S`` on average over
``LOW_SPEED_SECONDS`` is a cut transfer (its bytes kept for the next attempt where the file can be
resumed), as GDAL's ``GDAL_HTTP_LOW_SPEED_*`` cuts the scene reads (1 byte/s there, for range
reads of a few blocks): a server that sends a few bytes within every ``timeout`` would otherwise
hold one attempt for ever. Such a cut counts as a failed attempt even though it added bytes
(:class:`RetryableError` ``slow``), so a trickling server ends the download after its retries."""
FIX_URL = "check the URL in the region file (or retry later if the server is down)"
"""The fix a failed transfer's message gives (HTTP or FTP)."""
MAX_RETRY_AFTER = 300.0
"""Longest wait (s) we accept from a ``Retry-After`` header."""


class RetryableError(Exception):
    """A failed attempt worth repeating; ``wait`` (s) overrides the backoff when set; ``slow``:
    cut at the low-speed limit, a failure even when it added bytes."""

    def __init__(self, cause: str, wait: float | None = None, slow: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.wait = wait
        self.slow = slow


class FatalError(Exception):
    """A failure that repeating will not fix; ``fix`` is the advice for the message;
    ``missing`` when the server has no file at the URL (HTTP 404 or 410), ``changed`` when it
    reports another size than the one pinned."""

    def __init__(self, cause: str, fix: str, missing: bool = False, changed: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix
        self.missing = missing
        self.changed = changed


def backoff_wait(backoff: float, attempt: int) -> float:
    """Seconds to wait before retry ``attempt + 1``: ``backoff * 2**attempt`` plus up to 25 %
    jitter, so that many jobs that failed together do not return together."""
    return backoff * 2**attempt * (1.0 + 0.25 * random.random())


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(delta, 0.0), MAX_RETRY_AFTER)


def write_body(
    url: str,
    part: Path,
    offset: int,
    total: int | None,
    size: int | None,
    origin: tuple[str, str],
    read: Callable[[], bytes],
    cut: tuple[type[BaseException], ...],
) -> tuple[str, int]:
    """Write what ``read()`` returns (until it returns no bytes) to ``part``, appended after its
    first ``offset`` bytes (0: from the start), with a progress bar of ``total`` bytes; returns
    the sha256 of the whole file and its length. ``cut`` errors of ``read``, an end before
    ``total`` bytes, and a body slower than :data:`LOW_SPEED_BYTES_PER_S` over
    :data:`LOW_SPEED_SECONDS` are a cut transfer (retried); more than ``size`` bytes and a local
    write error are final. Shared by HTTP and FTP (:mod:`mapper.sources.ftp`)."""
    hasher = hashlib.sha256()
    if offset:
        logger.info("%s: resuming at byte %d", url, offset)
        with open(part, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                hasher.update(chunk)
    received = offset
    since, since_bytes = time.monotonic(), received  # the low-speed window
    slow = ""  # set when a window fell below the limit: a cut if the body goes on
    try:
        with open(part, "ab" if offset else "wb") as f, progress_bar(
            total, part.name.removesuffix(".part"), "B", initial=offset, unit_scale=True
        ) as bar:
            while True:
                try:
                    chunk = read()
                except cut as exc:
                    raise RetryableError(
                        f"transfer cut after {received} bytes ({exc.__class__.__name__})"
                    ) from None
                if not chunk:
                    break
                if slow:  # more is coming, too slowly (a body that ended is not cut)
                    raise RetryableError(slow, slow=True)
                f.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                now = time.monotonic()
                if now - since >= LOW_SPEED_SECONDS:
                    if received - since_bytes < LOW_SPEED_BYTES_PER_S * (now - since):
                        slow = (f"transfer slower than {LOW_SPEED_BYTES_PER_S} B/s for "
                                f"{LOW_SPEED_SECONDS:g} s, after {received} bytes")
                    since, since_bytes = now, received
                if size is not None and received > size:
                    raise FatalError(
                        f"received more than the {size} bytes {origin[0]} states", origin[1],
                        changed=True,
                    )
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # local disk: full, read-only, ...
        raise FatalError(
            f"cannot write {part} ({exc})", "free disk space or fix permissions"
        ) from None
    if total is not None and received < total:
        raise RetryableError(f"connection closed after {received} of {total} bytes")
    return hasher.hexdigest(), received
