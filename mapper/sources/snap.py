"""Climate normals from SNAP's downscaled CRU TS monthly archives: download, then derive.

SNAP (Scenarios Network for Alaska and Arctic Planning, University of Alaska Fairbanks)
distributes the CRU TS 4.0 monthly series, delta-downscaled onto the PRISM 1961-1990
climatology, as one zip archive per variable of monthly GeoTIFFs (EPSG:3338, float32, nodata
-9999; a few SNAP products mark nodata as -3.4e38 instead). Inside an archive each month is a
member ``[<folder>/]<prefix>_<MM>_<YYYY>.tif``, e.g.
``pr/pr_total_mm_CRU_TS40_historical_01_1981.tif`` (``prefix`` is set per variable in the region
file; any folder is accepted). Variables:
``pr`` (monthly total precipitation, mm), ``tas`` (monthly mean air temperature, deg C) and
``tasmin`` (monthly mean of the daily minimum temperature, deg C).

The three bands the stack reads (:data:`mapper.bands.CLIMATE_BANDS`), over the normal period
``first_year..last_year`` (N years, each a calendar year):

- ``precip_annual`` (mm/year) = (1/N) * sum over years y of sum over months m of pr[y, m];
- ``summer_warmth`` (degree-days above 0 C) = (1/N) * sum over y of sum over m of
  max(tas[y, m], 0) * days(y, m), with days(y, m) the length of month m in year y (February 29
  days in leap years): the warmth of a month taken as its mean temperature on each of its days;
- ``jan_tmin`` (deg C) = (1/N) * sum over y of tasmin[y, January].

A pixel that is nodata in any month a band uses is nodata in that band (no gap filling: the
stack's bilinear warp leaves it nodata rather than inventing a value). Every monthly file must
be on the grid of the first one read (CRS, transform, size); the derived raster is on that grid.

Members are read from the zip with :mod:`zipfile` into memory, one at a time, and decoded by GDAL
from there: nothing is unpacked to disk (SNAP's archives hold several GB of GeoTIFFs), only the
members of the period are read, and reading a member whole through zipfile checks its CRC-32, so
a damaged archive is an error instead of silently wrong numbers (a GDAL /vsizip/ read decodes only
the blocks it needs and gives no such guarantee). Memory: one monthly grid, one year's partial
sums and three float64 accumulators (a few hundred MB for a grid of 3000 x 2000 px), whatever
the period's length.
"""

from __future__ import annotations

import calendar
import logging
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mapper.bands import CLIMATE_BANDS
from mapper.config import Region
from mapper.errors import ConfigError, InputError, SourceError
from mapper.files import file_sha256
from mapper.raster import GridSpec, decode_single_band, write_geotiff
from mapper.sources.http import check_stated_size, download, download_target
from mapper.sources.lock import LockFile, fetch_entry
from mapper.sources.manifest import make_manifest, read_manifest, write_manifest

logger = logging.getLogger(__name__)

VARIABLES: tuple[str, ...] = ("pr", "tas", "tasmin")
"""SNAP's variable names, one archive each."""
NODATA = -9999.0
"""Nodata of the derived raster (SNAP's own)."""
NODATA_BELOW = -1.0e30
"""Values below this are nodata whatever the file's nodata tag says (-3.4e38, float32 minimum)."""
JANUARY = 1

def archive_path(out_dir: str | Path, source: str, variable: str) -> Path:
    """Where the archive of ``variable`` goes: ``<out_dir>/<source>/snap_<variable>.zip``."""
    return Path(out_dir) / source / f"snap_{variable}.zip"


def period_years(settings: dict[str, Any]) -> list[int]:
    """The normal period's years, ``first_year..last_year`` inclusive."""
    first, last = int(settings["first_year"]), int(settings["last_year"])
    if last < first:
        raise ConfigError(
            f"climate normal period {first}-{last}: last_year precedes first_year; set last_year "
            "to first_year or later"
        )
    return list(range(first, last + 1))


# -- download -----------------------------------------------------------------------------------
def check_archive(path: str | Path, url: str | None = None) -> int:
    """Check that ``path`` is a readable zip archive (its central directory); return its member
    count. Otherwise SourceError naming the URL (or the file) and the fix, and ``path`` deleted:
    a truncated download or a server's error page must not be kept as an archive."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return len(zf.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        path.unlink(missing_ok=True)
        where = f"{url} -> {download_target(path)}" if url else str(path)
        raise SourceError(
            f"{where}: not a readable zip archive ({exc}): the download is truncated or the URL "
            "serves something else; check the URL in the region file and fetch again"
        ) from None


def fetch_snap(
    region: Region,
    name: str,
    settings: dict[str, Any],
    out_dir: str | Path,
    variable: str | None,
    lock: LockFile | None = None,
) -> Path:
    """Download the archive of ``variable`` (``pr``, ``tas`` or ``tasmin``); return its manifest.

    An archive with a ``sha256`` in the region file is verified against it (and its ``size``).
    Without one, ``lock`` (the region's lock file, as ``python -m mapper fetch`` passes it)
    verifies the download against the checksum it recorded at the first download, or records
    it there (:func:`mapper.sources.lock.fetch_locked`) once the archive passed
    :func:`check_archive`, so a truncated or non-zip download is never recorded; with ``lock``
    None the archive is only checked to be a zip. Every archive passes :func:`check_archive`.
    The manifest beside the archive (``snap_<variable>.zip.json``) records the sha256, and a
    call whose archive is still there and matches downloads nothing: it is compared with the
    region file's sha256, else the lock's, else (``lock`` None) the previous manifest's (the
    workflow's job deletes its archive before running, as Snakemake does every job's outputs).
    Every failure is one SourceError naming the URL and the fix, with no partial download left.
    """
    from mapper.sources.fetch import manifest_path

    if variable not in VARIABLES:
        raise ConfigError(
            f"source '{name}' of region '{region.name}' (snap) has archives {', '.join(VARIABLES)}:"
            f" give one of them with --file (got {variable!r})"
        )
    entry = settings["archives"][variable]
    url = entry["url"]
    dest = archive_path(out_dir, name, variable)
    per_file = manifest_path(out_dir, name, file=dest.name)
    counts: list[int] = []

    def archive(path: Path) -> None:
        counts.append(check_archive(path, url))

    def check(path: Path) -> None:
        check_stated_size(path, url, entry.get("size"))
        archive(path)

    if entry.get("sha256") or lock is not None:
        # pinned by the region file, else by the lock's checksum; download() reuses a matching
        # archive
        item = fetch_entry(entry, dest, lock, vet=archive)
    elif (prior := _reuse(dest, url, per_file)) is not None:
        item = prior
        check(dest)
    else:
        item = download(url, dest, size=entry.get("size"), vet=check)
    item["path"] = str(dest)
    logger.info("%s: zip archive of %d members", dest, counts[-1])
    return write_manifest(
        per_file,
        make_manifest(region.name, name, "snap", [item], synthetic=region.synthetic,
                      variable=variable),
    )  # fmt: skip


def _reuse(dest: Path, url: str, per_file: Path) -> dict[str, Any] | None:
    """Without a checksum from the region file or a lock: the previous manifest's item when
    ``dest`` still has its size and sha256; else None (the archive is to be fetched)."""
    try:
        prior = next(i for i in read_manifest(per_file)["items"] if i.get("url") == url)
    except (InputError, StopIteration):
        return None
    if not dest.exists() or dest.stat().st_size != prior.get("size"):
        return None
    if file_sha256(dest) != prior.get("sha256"):
        return None
    logger.info("%s: unchanged since its last download (sha256 %s...)", dest, prior["sha256"][:12])
    return dict(prior)


# -- derivation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MonthlyArchive:
    """One variable's zip archive and the member of each (year, month) the derivation reads."""

    variable: str
    path: Path
    members: dict[tuple[int, int], str]


def _member_pattern(prefix: str) -> re.Pattern[str]:
    """``[<folder>/]<prefix>_MM_YYYY.tif``, case-insensitive, ``-`` and ``_`` alike in the prefix
    (SNAP spells the same series ``CRU_TS40`` in some products and ``CRU-TS40`` in others)."""
    body = "[-_]".join(re.escape(part) for part in re.split(r"[-_]", prefix))
    return re.compile(rf"(?:^|/){body}_(\d{{2}})_(\d{{4}})\.tif$", re.IGNORECASE)


def list_members(
    path: str | Path, variable: str, prefix: str, wanted: Iterable[tuple[int, int]]
) -> MonthlyArchive:
    """Find the member of each wanted (year, month) in the archive; InputError if one is missing.

    Reads only the zip's central directory. Members of other years (or other files) are ignored.
    """
    path = Path(path)
    wanted = sorted(wanted)
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except FileNotFoundError:
        raise InputError(
            f"{path}: archive not found; fetch it first (python -m mapper fetch)"
        ) from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(
            f"{path}: not a readable zip archive ({exc}); the download is truncated or damaged: "
            "delete it and fetch it again"
        ) from None
    pattern = _member_pattern(prefix)
    found: dict[tuple[int, int], str] = {}
    for member in names:
        if m := pattern.search(member):
            found.setdefault((int(m.group(2)), int(m.group(1))), member)
    missing = [key for key in wanted if key not in found]
    if missing:
        year, month = missing[0]
        raise InputError(
            f"{path}: no member {prefix}_{month:02d}_{year}.tif ({len(missing)} of the "
            f"{len(wanted)} {variable} months of the period missing); check the archive's URL, "
            "its 'prefix' and the period (first_year, last_year) in the region file"
        )
    return MonthlyArchive(variable, path, {key: found[key] for key in wanted})


class _Reader:
    """Reads members of one archive, checking that every grid matches the first grid read."""

    def __init__(self, archive: MonthlyArchive, reference: dict[str, Any]) -> None:
        self.archive = archive
        self.reference = reference  # shared by every reader: {"grid": GridSpec, "where": str}
        self.zf = zipfile.ZipFile(archive.path)

    def close(self) -> None:
        self.zf.close()

    def read(self, year: int, month: int) -> np.ndarray:
        """The month's values as float64 with NaN where nodata."""
        member = self.archive.members[(year, month)]
        where = f"{self.archive.path}!{member}"
        try:
            with self.zf.open(member) as f:
                data = f.read()
        except NotImplementedError as exc:  # zipfile: a method it cannot read (Deflate64...)
            raise InputError(
                f"{where}: cannot be unpacked ({exc}); re-pack {self.archive.path} with Deflate "
                "(e.g. unzip, then zip -r) and point the source at the copy"
            ) from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise InputError(
                f"{where}: cannot be unpacked ({exc}); the archive is damaged: delete "
                f"{self.archive.path} and fetch it again"
            ) from None
        values, grid, nodata = decode_single_band(data, where)
        ref = self.reference
        if "grid" not in ref:
            ref["grid"], ref["where"] = grid, where
        elif grid != ref["grid"]:
            raise InputError(
                f"{where}: grid {grid.describe()} differs from {ref['where']}'s "
                f"{ref['grid'].describe()}; all monthly files must share one grid: use archives "
                "of one SNAP product (same resolution and extent)"
            )
        out = values.astype(np.float64)
        bad = ~np.isfinite(out) | (out < NODATA_BELOW)
        if nodata is not None and np.isfinite(nodata):
            bad |= values == np.asarray(nodata, dtype=values.dtype)
        out[bad] = np.nan
        return out


def days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def derive_normals(
    archives: dict[str, str | Path],
    prefixes: dict[str, str],
    years: list[int],
    out: str | Path,
    *,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write the 3-band float32 normals raster (module docstring: formulas, nodata, grid).

    ``archives`` and ``prefixes`` map each of ``pr``, ``tas``, ``tasmin`` to its zip archive and
    member prefix. Every member is located before any is read, so a missing month fails fast; the
    output is written atomically (nothing at ``out`` after any error).
    """
    if not years:
        raise ConfigError("climate normal period is empty")
    months = range(1, 13)
    wanted = {
        "pr": [(y, m) for y in years for m in months],
        "tas": [(y, m) for y in years for m in months],
        "tasmin": [(y, JANUARY) for y in years],
    }
    listed = {v: list_members(archives[v], v, prefixes[v], wanted[v]) for v in VARIABLES}
    reference: dict[str, Any] = {}
    readers = {v: _Reader(listed[v], reference) for v in VARIABLES}
    try:
        precip = warmth = tmin = None
        for year in years:
            logger.info("climate normals: year %d", year)
            p_year = sum(readers["pr"].read(year, m) for m in months)
            w_year = sum(
                np.maximum(readers["tas"].read(year, m), 0.0) * days_in_month(year, m)
                for m in months
            )  # NaN stays NaN through np.maximum
            t_year = readers["tasmin"].read(year, JANUARY)
            precip = p_year if precip is None else precip + p_year
            warmth = w_year if warmth is None else warmth + w_year
            tmin = t_year if tmin is None else tmin + t_year
    finally:
        for reader in readers.values():
            reader.close()
    data = np.stack([precip, warmth, tmin]) / len(years)
    data = np.where(np.isnan(data), NODATA, data).astype(np.float32)
    grid: GridSpec = reference["grid"]
    all_tags = {
        "MAPPER_PERIOD": f"{years[0]}-{years[-1]}",
        "MAPPER_FORMULAS": (
            "precip_annual = mean over years of the sum of the 12 monthly pr (mm/year); "
            "summer_warmth = mean over years of sum over months of max(tas, 0) x days in the "
            "month (degree-days above 0 C, leap years counted); "
            "jan_tmin = mean over years of January tasmin (deg C)"
        ),
        **(tags or {}),
    }
    write_geotiff(out, data, grid.transform, grid.crs, nodata=NODATA,
                  descriptions=list(CLIMATE_BANDS), tags=all_tags)  # fmt: skip
    valid = np.all(data != NODATA, axis=0)
    logger.info("climate normals %d-%d -> %s (%d x %d px, %.1f %% valid)", years[0], years[-1],
                out, grid.width, grid.height, 100.0 * valid.mean())  # fmt: skip
    return Path(out)


def derive_region_normals(
    region: Region, name: str, archives: dict[str, str | Path], out: str | Path
) -> Path:
    """:func:`derive_normals` with the period and prefixes of the region's source ``name``."""
    if name not in region.settings["sources"]:
        raise ConfigError(f"{region.path}: no source '{name}' (sources: "
                          f"{', '.join(region.settings['sources'])}); give --source one of them")
    settings = region.settings["sources"][name]
    if settings["kind"] != "snap":
        raise ConfigError(f"{region.path}: source '{name}' is of kind {settings['kind']}, not snap")
    prefixes = {v: settings["archives"][v]["prefix"] for v in VARIABLES}
    urls = {v: settings["archives"][v]["url"] for v in VARIABLES}
    tags = {"MAPPER_SOURCE": "SNAP downscaled CRU TS monthly: " + ", ".join(
        f"{v} {u}" for v, u in urls.items())}  # fmt: skip
    if region.synthetic:
        tags["MAPPER_SYNTHETIC"] = "true"
    return derive_normals(archives, prefixes, period_years(settings), out, tags=tags)
