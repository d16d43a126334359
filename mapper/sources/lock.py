"""Lock files: the checksums of downloads nobody can pin in advance, recorded at first download.

Some sources are files whose checksums no region file can state beforehand: the elevation cells
a region reads (hundreds, named by a URL template), the SatlasPretrain weights, and the climate
archives, zone layer files and files of ``http`` sources the region file gives no sha256 for. All
of them are downloaded by
:func:`fetch_locked`: the first download of such a file records what it got in the region's lock
file (once the file passed its caller's check, so a truncated file or an error page is never
recorded), and every later download must get the same bytes, so a file that changed upstream is
one clear error instead of a silent change of the maps.

The lock file lives beside the region file: ``config/regions/<region>.lock.json`` for
``config/regions/<region>.yaml`` (commit it with the region file). It is JSON with sorted keys::

    {
      "files": {
        "https://.../USGS_1_n65w148.tif": {"sha256": "9f2c...", "size": 27481223},
        "https://.../Copernicus_DSM_COG_10_N52_00_E173_00_DEM.tif": {"absent": true}
      },
      "what": "mapper lock file: sha256 and size (bytes) of each file at its first download"
    }

``{"absent": true}`` records that the server answered HTTP 404 at the first download (an
elevation cell over open sea): a 404 is then expected again, and a file appearing there later is
an error like a changed checksum. A 404 for a URL the lock records as a file is an error too (a
missing cell, not sea). To accept a new upstream version on purpose, delete its entry (or the
whole lock file) and run again: the entries are written anew at the next download.

Many jobs download at once (one per cell), so every change is made under an exclusive ``fcntl``
lock (POSIX record lock, which also holds on NFS) on a hidden companion file
``.<region>.lock.json.lck``, re-reading the lock file under the lock, and written atomically.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from mapper.errors import ChangedError, ConfigError, NotFoundError, SourceError
from mapper.files import atomic_path, file_sha256
from mapper.sources.http import check_stated_size, download

logger = logging.getLogger(__name__)

WHAT = "mapper lock file: sha256 and size (bytes) of each file at its first download"
SUFFIX = ".lock.json"


def lock_path(region_origin: str | Path) -> Path:
    """The lock file of a region read from ``region_origin`` (its region file, as
    :attr:`mapper.config.Region.path` names it, possibly followed by `` + region_overrides...``):
    ``<dir>/<name>.lock.json`` beside ``<dir>/<name>.yaml``."""
    first = str(region_origin).split(" + ", 1)[0]
    path = Path(first)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(
            f"{region_origin}: a lock file is kept beside the region file, and this region was "
            "not read from a .yaml file; read the region from its region file"
        )
    return path.with_name(path.stem + SUFFIX)


class LockFile:
    """The lock file at ``path`` (see the module docstring); reads are lock-free (atomic writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def entries(self) -> dict[str, dict[str, Any]]:
        """``url -> entry``; empty when there is no lock file yet."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise SourceError(
                f"{self.path}: unreadable lock file ({exc}); restore it from version control, "
                "or delete it to record every checksum again at the next download"
            ) from None
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, dict):
            raise SourceError(
                f"{self.path}: not a mapper lock file (no 'files'); restore or delete it"
            )
        for url, entry in files.items():
            if (damage := _entry_damage(entry)) is not None:
                raise SourceError(
                    f"{self.path}: the entry of {url} is damaged ({damage}); restore the file "
                    "from version control, or delete that entry to record it again at the next "
                    "download"
                )
        return files

    def get(self, url: str) -> dict[str, Any] | None:
        return self.entries().get(url)

    def origin(self, url: str) -> tuple[str, str]:
        """What :func:`mapper.sources.http.download` says of a checksum pinned here: where it
        comes from and what to do when the file differs (its ``origin``)."""
        return (
            f"the lock file {self.path}",
            f"the file changed upstream; {refresh_advice(url, self.path)}",
        )

    @contextmanager
    def _locked(self) -> Iterator[None]:
        guard = self.path.with_name(f".{self.path.name}.lck")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(guard, "a")  # noqa: SIM115 (closed below, after the lock is released)
        except OSError as exc:
            raise SourceError(
                f"{self.path}: cannot record checksums beside the region file ({exc.strerror}: "
                f"{guard}); make {self.path.parent} writable"
            ) from None
        with fh:
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX)
            except OSError as exc:  # NFS without lockd, Lustre mounted noflock: ENOLCK, ENOSYS
                raise SourceError(
                    f"{self.path}: cannot lock it to record a checksum ({exc.strerror}: the file "
                    f"system of {self.path.parent} takes no POSIX locks); keep the project on a "
                    "file system that does (local disk, NFS with lockd, Lustre mounted flock)"
                ) from None
            try:
                yield
            finally:
                fcntl.lockf(fh, fcntl.LOCK_UN)

    def record(self, url: str, entry: dict[str, Any]) -> None:
        """Add ``url -> entry`` unless present; an entry present and different is an error (the
        file changed upstream between two downloads of the same run)."""
        with self._locked():
            files = self.entries()
            known = files.get(url)
            if known == entry:
                return
            if known is not None:
                raise SourceError(changed_message(url, self.path, known, entry))
            files[url] = entry
            text = json.dumps({"files": files, "what": WHAT}, indent=1, sort_keys=True) + "\n"
            with atomic_path(self.path) as tmp:
                tmp.write_text(text)
        logger.info("%s: recorded %s", self.path, url)


def _entry_damage(entry: Any) -> str | None:
    """What is wrong with one lock entry, or None: an entry is ``{"absent": true, ...}`` or
    holds the file's ``sha256`` (64 hex digits) and ``size`` (bytes)."""
    if not isinstance(entry, dict):
        return f"{type(entry).__name__}, not an object"
    if entry.get("absent") is True:
        return None
    sha256, size = entry.get("sha256"), entry.get("size")
    if not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        return "no sha256 of 64 hex digits"
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "no size in bytes"
    return None


def describe_entry(entry: dict[str, Any]) -> str:
    """A lock entry in words: its sha256's first 16 digits and size, or 'no file (HTTP 404)'."""
    if entry.get("absent"):
        return "no file (HTTP 404)"
    return f"sha256 {entry['sha256'][:16]}..., {entry['size']} bytes"


def refresh_advice(url: str, lock: Path) -> str:
    return (
        f"if the change is expected, delete the entry of {url} in {lock} (or the whole file) "
        "and run again to record the new version"
    )


def changed_message(url: str, lock: Path, known: dict[str, Any], got: dict[str, Any]) -> str:
    return (
        f"{url}: the file changed upstream: {lock} records {describe_entry(known)}, the server now "
        f"gives {describe_entry(got)}; {refresh_advice(url, lock)}"
    )


def fetch_locked(
    url: str,
    dest: str | Path,
    lock: LockFile,
    *,
    absent_ok: bool = False,
    check: Callable[[Path], None] | None = None,
    session: requests.Session | None = None,
    retries: int = 4,
    backoff: float = 0.5,
    timeout: float = 30,
) -> dict[str, Any] | None:
    """Download ``url`` to ``dest`` (:func:`mapper.sources.http.download`: retries, resume,
    atomic), verified against ``lock`` or recorded in it; return the manifest entry, or None when
    the server has no file there (HTTP 404/410) and ``absent_ok`` (recorded as absent), or the lock
    already records it as absent.

    ``check(path)`` vets a download before it takes ``dest``'s name and its checksum is recorded
    (e.g. that a DEM cell is a raster of the right place; :func:`download`'s ``vet``): it raises
    a MapperError, and the file is then deleted. Every failure is one SourceError naming the URL
    and the fix, with no partial ``dest`` left: a ChangedError where the server no longer gives
    what the lock pins (other bytes, a file where it records none, or HTTP 404 where it records
    a file).
    """
    dest = Path(dest)
    known = lock.get(url)
    pinned = known if known and not known.get("absent") else None
    origin = lock.origin(url)

    def vet(path: Path) -> None:
        if known is not None and known.get("absent"):
            got = {"sha256": file_sha256(path), "size": path.stat().st_size}
            raise ChangedError(changed_message(url, lock.path, known, got))
        if check is not None:
            check(path)

    try:
        entry = download(
            url, dest, sha256=pinned and pinned["sha256"], size=pinned and pinned["size"],
            retries=retries, backoff=backoff, timeout=timeout, session=session, origin=origin,
            vet=vet,
        )  # fmt: skip
    except NotFoundError:
        if pinned:
            raise ChangedError(
                f"{url}: HTTP 404, but {lock.path} records a file here ({describe_entry(pinned)}): "
                "not sea but a missing file; retry later (the server may be under repair), or, if "
                f"the file was withdrawn on purpose, {refresh_advice(url, lock.path)}"
            ) from None
        if not (absent_ok or (known and known.get("absent"))):
            raise
        if known is None:
            lock.record(url, {"absent": True})
        logger.info("%s: no file on the server (HTTP 404): absent", url)
        dest.unlink(missing_ok=True)
        return None
    got = {"sha256": entry["sha256"], "size": entry["size"]}
    if pinned is None:
        try:
            lock.record(url, got)
        except SourceError:
            dest.unlink(missing_ok=True)
            raise
    return entry


def fetch_entry(
    entry: dict[str, Any],
    dest: str | Path,
    lock: LockFile | Path,
    vet: Callable[[Path], None] | None = None,
) -> dict[str, Any]:
    """Download one file a region file lists (``{url, sha256?, size?}``) to ``dest``; return its
    manifest entry. Pinned by its ``sha256`` when the region file gives one
    (:func:`mapper.sources.http.download`), else by the region's lock file ``lock`` (a
    :class:`LockFile` or its path) at its first download (:func:`fetch_locked`); either way
    checked against the ``size`` the entry states and by ``vet(path)`` before it takes
    ``dest``'s name."""
    url = entry["url"]

    def check(path: Path) -> None:
        check_stated_size(path, url, entry.get("size"))
        if vet is not None:
            vet(path)

    if entry.get("sha256"):
        return download(url, dest, sha256=entry["sha256"], size=entry.get("size"), vet=check)
    lock = lock if isinstance(lock, LockFile) else LockFile(lock)
    item = fetch_locked(url, dest, lock, check=check)
    if item is None:  # the lock records no file there (by hand: a cell's sea), and none came
        raise SourceError(
            f"{url}: {lock.path} records no file here (\"absent\": true), but the region file "
            f"lists it; delete that entry of {lock.path} if the file should exist, or the "
            "file from the region file"
        )
    return item
