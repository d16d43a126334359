"""Downloading one file over HTTP(S) (or FTP: :mod:`mapper.sources.ftp`): bounded retries, resume
with Range, size and sha256 checks.

A source file is written to ``<dest>.part`` and renamed onto ``dest`` only once its size and
sha256 match what the region file declares, so ``dest`` either holds the verified file or does not
exist. What is retried, and how:

- timeouts, refused or reset connections, HTTP 5xx, 408 and 429: up to ``retries`` more attempts
  after the first, waiting ``backoff * 2**attempt`` seconds (plus up to 25 % jitter, so that
  many jobs that failed together do not return together), or what the server's ``Retry-After``
  asks (capped at :data:`mapper.sources.transfer.MAX_RETRY_AFTER`);
- a connection cut mid-body (or a server that stalls longer than ``timeout`` between two reads):
  the bytes already received stay in ``.part`` and the next attempt asks for the rest with
  ``Range: bytes=<n>-`` and ``If-Range: <etag>`` (so a file that changed upstream is fetched whole
  again). A ``206`` answer must carry a ``Content-Range`` starting at ``n``; a ``200`` answer means
  the server ignored the range and the file is written again from its start. A server that sends
  neither an ETag nor a Last-Modified gives nothing to resume against: the file is then fetched
  whole again, unless its sha256 is known (given, or pinned by a lock file), which catches a mix;
  a ``.part`` that already holds the stated size is checked, not fetched again;
- a ``.part`` left by an earlier job (one killed at its time limit) is resumed the same way,
  against the validator recorded beside it (:mod:`mapper.sources.part_record`): a file changed
  upstream since comes whole (``200``); a ``206`` or ``416`` naming another validator than the
  one sent (a server that ignores ``If-Range``) drops the kept bytes; without a record the
  ``.part`` is resumed only when the sha256 is known, as above;
- other 4xx answers (404, 403, ...) are not retried.

A sha256 mismatch is final (the region file or the URL is wrong), except when the file was put
together from several responses: then it is fetched once more from scratch. When the retries
run out (an outage longer than they last), the bytes received stay in ``.part`` with their
record, and the next run resumes from them, as after a killed job, provided that the record
vouches for them or the sha256 is known; otherwise, and after any other final failure, the
``.part`` file is deleted. We ask for ``Accept-Encoding: identity`` so that byte
offsets, sizes and checksums all refer to the file as stored on the server.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import urllib3

from mapper import __version__
from mapper.errors import ChangedError, NotFoundError, SourceError
from mapper.files import file_sha256
from mapper.sources.part_record import (
    forget_validator,
    recalled_validator,
    remember_validator,
)
from mapper.sources.transfer import (
    CHUNK_BYTES,
    FIX_URL,
    FatalError,
    RetryableError,
    backoff_wait,
    retry_after_seconds,
    write_body,
)

logger = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")  # a 416's Content-Range: the length

MAX_ATTEMPTS_PER_RETRY = 10
"""All attempts of one download, attempts that got further included, are at most this many times
``retries + 1``."""

_FIX_CHECKSUM = (
    "check the sha256/size in the region file (or the URL, if the file changed upstream)"
)


def new_session() -> requests.Session:
    """A requests session with our User-Agent; retries are ours, not urllib3's."""
    session = requests.Session()
    session.headers["User-Agent"] = f"mapper/{__version__} (+python-requests)"
    return session


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``"bytes 100-199/1000"`` -> ``(100, 199, 1000)``; ``None`` if absent or malformed."""
    if not value:
        return None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)), total


def _entry(url: str, dest: Path, size: int, sha256: str, headers: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": url, "path": str(dest), "size": size, "sha256": sha256}
    if headers is not None:
        if headers.get("ETag"):
            entry["etag"] = headers["ETag"]
        if headers.get("Last-Modified"):
            entry["last_modified"] = headers["Last-Modified"]
    return entry


def _strong_validator(headers: Any) -> str | None:
    """The ETag, unless weak (``W/"..."``, which If-Range may not use), else Last-Modified."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _attempt(
    session: requests.Session,
    url: str,
    part: Path,
    size: int | None,
    timeout: float,
    state: dict[str, Any],
    origin: tuple[str, str] = ("the region file", _FIX_CHECKSUM),
) -> tuple[str, int, Any, bool]:
    """One GET; returns (sha256, bytes, response headers, resumed) once the body is complete.

    ``state["validator"]`` carries the ETag (or Last-Modified) of the response that wrote the
    bytes already in ``part`` to the next attempt's ``If-Range``.
    """
    validator = state.get("validator")
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    if offset and not validator and not state.get("checked"):
        # Neither an ETag/Last-Modified for If-Range nor a checksum to check the whole with:
        # the rest could come from another version of the file, and nothing would tell.
        logger.info("%s: no ETag or Last-Modified to resume against; downloading it whole", url)
        part.unlink()
        offset = 0
    if offset and offset == size and state.get("checked"):  # complete already: check it
        return file_sha256(part), offset, {}, True
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=(timeout, timeout))
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise RetryableError(f"connection failed ({exc.__class__.__name__}: {exc})") from None
    except requests.RequestException as exc:  # invalid URL, unsupported scheme, ...
        raise FatalError(f"request refused ({exc})", FIX_URL) from None

    with resp:
        status = resp.status_code
        if status in (408, 429) or status >= 500:
            wait = retry_after_seconds(resp.headers.get("Retry-After"))
            raise RetryableError(f"HTTP {status} {resp.reason}", wait=wait)
        if status == 416 and offset:
            length = _UNSATISFIED_RANGE.fullmatch(resp.headers.get("Content-Range") or "")
            # complete already: a checksum checks it; else an If-Range that matched (a server
            # answers a changed file whole, not 416) says it is the version the record names
            other = _strong_validator(resp.headers)  # a 416 that names another version
            trusted = state.get("checked") or (
                validator and state.get("vouched") and other in (None, validator))
            if trusted and length and int(length.group(1)) == offset:
                return file_sha256(part), offset, resp.headers, True  # complete: check it
            part.unlink(missing_ok=True)
            raise RetryableError(
                f"HTTP 416 for bytes {offset}- (the file shrank?); restarting", wait=0.0
            )
        if status not in (200, 206):
            missing = status in (404, 410)
            raise FatalError(f"HTTP {status} {resp.reason}", FIX_URL, missing=missing)

        total: int | None
        sent = _strong_validator(resp.headers)
        if status == 206 and validator and sent is not None and sent != validator:
            # a server (some S3 clones, proxies) that honours Range but not If-Range: the rest
            # of another version of the file; start again rather than join the two
            part.unlink(missing_ok=True)
            state["validator"] = None
            raise RetryableError(
                f"HTTP 206 under {sent}, not the {validator} of the bytes kept (the server "
                "ignored If-Range and the file changed); restarting from byte 0",
                wait=0.0,
            )
        if status == 200 or not validator:
            state["validator"] = sent
        if status == 206:
            crange = parse_content_range(resp.headers.get("Content-Range"))
            if not offset or crange is None or crange[0] != offset:
                part.unlink(missing_ok=True)
                raise RetryableError(
                    f"HTTP 206 with Content-Range {resp.headers.get('Content-Range')!r} "
                    f"for a request from byte {offset}; restarting from byte 0",
                    wait=0.0,
                )
            total = crange[2]
        else:
            if offset:
                logger.info("%s: server ignored the Range request; downloading it whole", url)
                part.unlink(missing_ok=True)  # before the new validator is recorded
                offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if size is not None and total is not None and total != size:
            raise FatalError(f"the server reports {total} bytes, {origin[0]} {size}", origin[1],
                              changed=True)

        # The record vouches for the bytes in ``part``: only for bytes this job writes from byte
        # 0, or that were vouched for and resumed under If-Range with their validator (never a
        # part resumed on a checksum alone, or without If-Range: the rest may be another version)
        state["vouched"] = offset == 0 or bool(state.get("vouched") and validator is not None)
        remember_validator(part, url, state.get("validator") if state["vouched"] else None)
        # read1 hands over whatever has arrived, so a cut loses no received byte (iter_content
        # would drop the partly filled chunk with the exception).
        digest, received = write_body(
            url, part, offset, total, size, origin,
            lambda: resp.raw.read1(CHUNK_BYTES, decode_content=False),
            (requests.RequestException, urllib3.exceptions.HTTPError),
        )
        return digest, received, resp.headers, offset > 0


def _vetted(path: Path, vet: Callable[[Path], None] | None) -> None:
    """Run ``vet`` on ``path``; delete the file when it refuses it (and re-raise)."""
    if vet is None:
        return
    try:
        vet(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def download_target(path: str | Path) -> Path:
    """The file a download is for: ``dest`` for the ``<dest>.part`` that :func:`download` vets a
    new download as (deleted when refused), so that messages name the file the user asked for."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".part"))


def check_stated_size(path: str | Path, url: str, size: int | None) -> None:
    """SourceError naming ``url`` when the file at ``path`` is not the ``size`` bytes the region
    file states (None: nothing to check); for a download the region file gives no sha256 for."""
    got = Path(path).stat().st_size
    if size is not None and got != size:
        raise SourceError(
            f"{url} -> {download_target(path)}: got {got} bytes, the region file states {size}; "
            f"{_FIX_CHECKSUM}"
        )


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    retries: int = 4,
    backoff: float = 0.5,
    timeout: float = 30,
    session: requests.Session | None = None,
    origin: tuple[str, str] | None = None,
    vet: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Download ``url`` to ``dest``, verified; return its manifest entry.

    ``timeout`` (s) bounds the connection and every wait between two reads of the body, so a
    server that stalls mid-body counts as a cut connection. ``retries`` is the number of attempts
    after the first that may fail without getting further: an attempt cut after new bytes (kept
    and resumed from) does not count, up to :data:`MAX_ATTEMPTS_PER_RETRY` ``* (retries + 1)``
    attempts in all. If ``dest`` already exists and matches ``sha256`` (and ``size``), nothing is
    downloaded. The entry has ``url``, ``path``, ``size`` (bytes), ``sha256`` and, when the
    server sent them, ``etag`` and ``last_modified``.

    A ``<dest>.part`` left by an interrupted earlier run is resumed against the validator
    recorded beside it (``If-Range``: the server sends the whole file if it changed in between),
    or when ``sha256`` is given (the checksum catches a file that changed in between); else it is
    discarded.

    ``origin`` says where ``sha256``/``size`` come from and what to do when the file differs,
    for the messages: ``("the lock file x.lock.json", "to accept ...")``; by default the region
    file and its fix.

    ``vet(path)`` checks what the file holds (that it is a raster of the right place, a zip
    archive, ...) and raises to refuse it. A new download is vetted as ``<dest>.part``, before
    it takes ``dest``'s name, so a refused or half-vetted file never stands at ``dest`` (a job
    killed meanwhile leaves only the ``.part``, which the next run resumes, checks or discards as
    above); a present
    ``dest`` that matches ``sha256`` is vetted in place. A refused file is deleted and the error
    propagates.

    Raises SourceError (naming the URL, ``dest``, the cause and the fix) on final failure, with
    no ``dest`` left behind (a stale ``dest`` whose sha256 differed is deleted before the
    download), and no ``<dest>.part`` either, except after retries run out with bytes the next
    run can resume from (module doc), which the message names; NotFoundError (a SourceError)
    when the server has no file at the URL (HTTP 404 or 410), which some callers expect (a DEM
    cell over sea);
    ChangedError (a SourceError) when it gives another size or sha256 than ``sha256``/``size``.
    """
    origin = origin or ("the region file", _FIX_CHECKSUM)
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 else None

    if expected and dest.exists():
        if (size is None or dest.stat().st_size == size) and file_sha256(dest) == expected:
            logger.info("%s: present and verified (sha256 %s...)", dest, expected[:12])
            _vetted(dest, vet)
            part.unlink(missing_ok=True)  # left by an earlier run: not needed
            forget_validator(part)
            return _entry(url, dest, dest.stat().st_size, expected, None)
        logger.warning("%s: present but not the file %s states (size or sha256); deleted, "
                       "downloading it again", dest, origin[0])
        dest.unlink()

    state: dict[str, Any] = {"checked": expected is not None}
    recalled = recalled_validator(part, url) if part.exists() else None
    if recalled:  # left by an earlier run: the server is asked whether the file is unchanged
        state["mdtm" if url.startswith("ftp://") else "validator"] = recalled
        state["vouched"] = True
        logger.info("%s: %d bytes left by an earlier run; resuming if the file is unchanged "
                    "since (%s)", part, part.stat().st_size, recalled)
    elif part.exists() and not expected:
        # Left by an earlier run: without a validator or a checksum nothing would reveal bytes of
        # an older version of the file mixed with newer ones, so start again.
        logger.info("%s: discarding a partial download without a validator or sha256 to "
                    "check it", part)
        part.unlink()
    own_session = session is None
    session = session or new_session()
    cause = ""
    # Retries are counted in attempts that got no further: one cut after new bytes (kept in
    # ``part`` and resumed) starts the count again, so a long file on a link that drops now and
    # then still arrives; a cut at the low-speed limit counts, and a cap on all attempts bounds
    # a server that sends a little each time.
    furthest = part.stat().st_size if part.exists() else 0
    attempt = failures = 0
    try:
        for _ in range(MAX_ATTEMPTS_PER_RETRY * (retries + 1)):
            if attempt:
                logger.info("%s: attempt %d (retry %d of %d)", url, attempt + 1, failures,
                            retries)  # fmt: skip
            attempt += 1
            try:
                if url.startswith("ftp://"):
                    from mapper.sources import ftp

                    digest, nbytes, headers, resumed = ftp.attempt(
                        url, part, size, timeout, state, origin
                    )
                else:
                    digest, nbytes, headers, resumed = _attempt(
                        session, url, part, size, timeout, state, origin
                    )
            except RetryableError as exc:
                cause = exc.cause
                reached = part.stat().st_size if part.exists() else 0
                if reached > furthest:
                    logger.info("%s: %d bytes kept to resume from", url, reached)
                if reached > furthest and not exc.slow:
                    furthest, failures = reached, 0
                else:  # no further, or cut at the low-speed limit
                    furthest, failures = max(furthest, reached), failures + 1
                if failures > retries:
                    break
                wait = (backoff_wait(backoff, max(failures - 1, 0)) if exc.wait is None
                        else exc.wait)  # fmt: skip
                logger.warning("%s: %s; retrying in %.2f s", url, cause, wait)
                time.sleep(wait)
                continue
            except FatalError as exc:
                part.unlink(missing_ok=True)
                error = (NotFoundError if exc.missing else ChangedError if exc.changed
                         else SourceError)
                raise error(f"{url} -> {dest}: {exc.cause}; {exc.fix}") from None

            problem = None
            if size is not None and nbytes != size:
                problem = f"got {nbytes} bytes, {origin[0]} states {size}"
            elif expected and digest != expected:
                problem = f"sha256 {digest} differs from {origin[0]}'s {expected}"
            if problem is None:
                _vetted(part, vet)
                os.replace(part, dest)
                if not expected:
                    # a file pinned by a lock file is recorded there by the caller
                    log = logger.warning if origin[0] == "the region file" else logger.info
                    log("%s: no sha256 in %s; recorded %s", dest, origin[0], digest)
                logger.info("%s -> %s (%d bytes)", url, dest, nbytes)
                return _entry(url, dest, nbytes, digest, headers)
            part.unlink(missing_ok=True)
            if resumed and failures < retries:
                cause = problem
                failures += 1
                furthest = 0
                logger.warning("%s: %s after a resumed transfer; fetching it whole", url, problem)
                state = {"checked": expected is not None}
                continue
            raise ChangedError(f"{url} -> {dest}: {problem}; {origin[1]}")
    finally:
        if own_session:
            session.close()
        if not part.exists():  # renamed onto dest, or given up: nothing left to resume
            forget_validator(part)
    kept = part.stat().st_size if part.exists() else 0
    if kept and (expected or recalled_validator(part, url)):
        # what the next run resumes from: a record vouches for the bytes (If-Range), or the
        # checksum checks the whole; a long file is not fetched from byte 0 after an outage
        raise SourceError(
            f"{url} -> {dest}: {cause} (gave up after {attempt} attempts; the {kept} bytes "
            f"received are kept in {part} and the next run resumes from them); {FIX_URL}"
        )
    part.unlink(missing_ok=True)
    forget_validator(part)
    raise SourceError(
        f"{url} -> {dest}: {cause} (gave up after {attempt} attempts); {FIX_URL}"
    )
