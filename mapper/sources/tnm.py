"""The dated versions of a 3DEP cell: ``{date}`` in a template, and a locked ``current/`` file
that changed fetched as it was.

USGS's National Map stages 3DEP's seamless DEMs in the public S3 bucket ``prd-tnm``. A cell's
file in ``current/`` is replaced whenever new data arrive, and every version, the current one
too, stays in ``historical/`` with its date in the name::

    .../StagedProducts/Elevation/1/TIFF/current/n65w148/USGS_1_n65w148.tif
    .../StagedProducts/Elevation/1/TIFF/historical/n65w148/USGS_1_n65w148_20181107.tif

The lock file pins the bytes of each cell's ``current/`` URL at its first download. When the
server later gives other bytes there (or none), :func:`fetch_version` lists the cell's
``historical/`` folder (:func:`mapper.sources.s3.list_objects`) and fetches the dated version
that has the pinned size and sha256, newest first: a run on another machine, years later, reads
the very elevation of the first run, and says which dated file it took.

Some products have no ``current/`` folder at all: the National Map's file lists of 3DEP 2
arc-second (Alaska) name only dated files. A ``cells`` template may therefore hold ``{date}``
in its file name (:data:`mapper.sources.cells.DATE`)::

    .../StagedProducts/Elevation/2/TIFF/historical/{n}{w}/USGS_2_{n}{w}_{date}.tif

At a cell's first download the folder is listed and the newest dated file taken
(:func:`newest_version`); the lock file records that file's URL, and every later fetch takes the
URL it records (:func:`pinned_version`), without listing: a dated file is never replaced, so with
that lock file the cell is the same wherever and whenever it is fetched. A folder without a dated
file of the cell is a cell the product lacks, as HTTP 404 is for a plain URL; a listing that
fails is an error (:class:`mapper.errors.SourceError`). The bucket's endpoint is what
precedes ``/StagedProducts/`` in the URL (any host laid out as the bucket is).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mapper.errors import ChangedError, ConfigError, NotFoundError, SourceError
from mapper.sources.cells import DATE  # the template field of a dated file's date (YYYYMMDD)
from mapper.sources.http import download
from mapper.sources.s3 import list_objects

logger = logging.getLogger(__name__)

_CURRENT = re.compile(
    r"^(?P<endpoint>https?://.+?)/(?P<folder>StagedProducts/Elevation/(?P<product>\w+)/TIFF)/"
    r"current/(?P<cell>[ns]\d{2}[ew]\d{3})/USGS_(?P=product)_(?P=cell)\.tif$"
)


def history_of(url: str) -> tuple[str, str, re.Pattern[str]] | None:
    """For a 3DEP ``current/`` cell URL (any product: ``1``, ``13``, ``2``, on any host laid out
    as the bucket is): the bucket's endpoint, the prefix of the cell's ``historical/`` folder, and
    the pattern of its dated file names (group ``date``); None for any other URL."""
    m = _CURRENT.match(url)
    if m is None:
        return None
    product, cell = m["product"], m["cell"]
    prefix = f"{m['folder']}/historical/{cell}/"
    name = re.compile(rf"^{re.escape(prefix)}USGS_{product}_{cell}_(?P<date>\d{{8}})\.tif$")
    return m["endpoint"], prefix, name




def dated(url: str) -> tuple[str, str, re.Pattern[str]]:
    """For a URL holding ``{date}`` (a cell's fields filled in): the bucket's endpoint, the
    prefix of the folder to list, and the pattern of the dated files' keys (group ``date``);
    ConfigError when the URL is not laid out as 3DEP's bucket."""
    endpoint, sep, key = url.partition("/StagedProducts/")
    folder, _, name = key.rpartition("/")
    if not sep or DATE not in name or DATE in folder or name.count(DATE) > 1:
        raise ConfigError(
            f"{url}: {DATE} is the date of a 3DEP file, read from the listing of its folder in "
            "the prd-tnm bucket: use it once, in the file name of a .../StagedProducts/... URL"
        )
    prefix = f"StagedProducts/{folder}/"
    head, _, tail = name.partition(DATE)
    pattern = re.compile(rf"^{re.escape(prefix + head)}(?P<date>\d{{8}}){re.escape(tail)}$")
    return endpoint, prefix, pattern


def pinned_version(entries: dict[str, dict[str, Any]], url: str) -> str | None:
    """The dated file the lock file's ``entries`` record for the ``{date}`` URL ``url`` (the
    newest, should several be there), or None."""
    endpoint, _, pattern = dated(url)
    found = [(m["date"], key) for key, entry in entries.items() if "sha256" in entry
             and key.startswith(endpoint + "/")
             and (m := pattern.match(key[len(endpoint) + 1:]))]  # fmt: skip
    return max(found)[1] if found else None


def newest_version(url: str, **kwargs: Any) -> str:
    """The URL of the newest dated file matching the ``{date}`` URL ``url`` in its bucket's
    listing; NotFoundError when there is none (the product lacks the cell). ``kwargs`` go to
    :func:`mapper.sources.s3.list_objects`."""
    endpoint, prefix, pattern = dated(url)
    found = [(m["date"], o.key) for o in list_objects(endpoint, prefix, **kwargs)
             if (m := pattern.match(o.key))]  # fmt: skip
    if not found:
        raise NotFoundError(
            f"{url}: no dated file in {endpoint}/{prefix} (the listing holds none of the cell)"
        )
    return f"{endpoint}/{max(found)[1]}"


def fetch_version(
    url: str, dest: Path, pinned: dict[str, Any], changed: ChangedError, **kwargs: Any
) -> dict[str, Any]:
    """Fetch the dated version of the 3DEP cell at ``url`` whose size and sha256 are ``pinned``
    (the lock file's entry) to ``dest``; return its manifest entry (its ``url`` the dated file's).

    ``changed`` is the error met at ``url``; it is raised again, with what the listing showed,
    when ``url`` is not a 3DEP cell or no dated version has those bytes. ``kwargs`` go to
    :func:`mapper.sources.http.download` and the listing (``session``, ``retries``, ...).
    """
    history = history_of(url)
    if history is None:
        raise changed
    endpoint, prefix, name = history
    listing = {k: v for k, v in kwargs.items() if k in ("session", "retries", "backoff", "timeout")}
    try:
        objects = list_objects(endpoint, prefix, **listing)
    except SourceError as exc:
        raise SourceError(f"{changed} (its dated versions could not be listed: {exc})") from None
    versions = sorted(((m["date"], o) for o in objects if (m := name.match(o.key))),
                      key=lambda d: d[0], reverse=True)  # fmt: skip
    candidates = [o for _, o in versions if o.size == pinned["size"]]
    where = f"{endpoint}/{prefix}"
    unserved = []
    for obj in candidates:
        version = f"{endpoint}/{obj.key}"
        try:
            entry = download(version, dest, sha256=pinned["sha256"], size=pinned["size"],
                             origin=("the lock file", "not the pinned version"), **kwargs)
        except ChangedError:
            logger.info("%s: same size as the pinned file, other bytes", version)
            continue
        except NotFoundError:  # listed, yet not served: never "the product lacks the cell"
            logger.warning("%s: listed, but HTTP 404", version)
            unserved.append(version)
            continue
        logger.warning("%s: not the file the lock file pins (3DEP replaced it); fetched the pinned "
                       "file's dated version, %s", url, version)  # fmt: skip
        return entry
    if unserved:  # the pinned version may be among them: a server fault, not a new version
        raise SourceError(
            f"{url}: no longer the file the lock file pins, and {len(unserved)} dated version(s) "
            f"of the pinned size in {where} are listed but answer HTTP 404 (e.g. {unserved[0]}); "
            "the server may be under repair: retry later, and keep the lock entry"
        )
    found = ", ".join(d for d, _ in versions) or "none"  # a failed listing raised SourceError above
    raise ChangedError(
        f"{changed} (no dated version in {where} has the pinned bytes either: dates {found}, "
        f"{len(candidates)} of the pinned size)"
    ) from None
