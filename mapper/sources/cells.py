"""Elevation by 1 x 1 degree cells: naming, the cells each tile reads, and fetching one cell.

A source of kind ``cells`` is a public service that serves one file per 1 x 1 degree cell of
latitude and longitude at a URL made from a template (``url_template`` in the region file), e.g.

- USGS 3DEP 1 arc-second seamless DEM (bare earth; in Alaska made from the IfSAR survey),
  named by the cell's NORTH-WEST corner in lowercase; 3612 x 3612 px of 1/3600 degree, 6 px of
  overlap on each side, EPSG:4269, float32, nodata -999999::

      https://prd-tnm.s3.amazonaws.com/StagedProducts/Elevation/1/TIFF/current/{n}{w}/USGS_1_{n}{w}.tif

- Copernicus GLO-30 (a surface model), named by the SOUTH-WEST corner in uppercase; 3600 rows,
  3600 columns below 50 N, 2400 at 50-60 N, 1800 at 60-70 N, 1200 at 70-80 N (pixel centres on
  the cell's edges: the file reaches half a pixel past its north and west edges), EPSG:4326;
  no file at all (HTTP 404) over open sea::

      https://copernicus-dem-30m.s3.amazonaws.com/Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM/Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM.tif

- USGS 3DEP 2 arc-second (Alaska only), published as dated files only: ``{date}`` is the newest
  date in the cell's folder at the first download, then the one the lock file records
  (:mod:`mapper.sources.tnm`)::

      https://prd-tnm.s3.amazonaws.com/StagedProducts/Elevation/2/TIFF/historical/{n}{w}/USGS_2_{n}{w}_{date}.tif

Template fields (:data:`TEMPLATE_FIELDS`, and ``{date}``): ``{n}``/``{N}`` the north edge's
latitude and ``{s}``/``{S}`` the south edge's, as a hemisphere letter and 2 digits
(``n65``/``N65``, ``s05``); ``{w}``/``{W}`` the west edge's longitude as a letter and 3 digits
(``w148``/``W148``, and east of 180 W ``e172``/``E172``). Lowercase fields give lowercase
letters, uppercase fields uppercase.

A cell is named here, whatever the service, by its south-west corner like SRTM: ``N64W148``
covers 64-65 N and 148-147 W; ``N52E172`` covers 52-53 N and 172-173 E (the Near Islands, west of
180 W). Longitudes of west edges are in [-180, 180): the cell west of 180 degrees is ``N51E179``,
the one east of it ``N51W180``.

The cells a tile reads are those that meet the DEM window its stack reads
(:func:`mapper.dem.dem_window`: the tile grown by the terrain and hydrology halos) grown by
:data:`MARGIN_M`, in the lattice CRS, with the window's edges densified before they are taken to
NAD83 longitude/latitude and unwrapped around the window's first corner (so a window across 180
degrees gives one continuous interval of longitudes). It is a pure function of the lattice and the
region's stack settings, computed for all tiles at once at DAG-building time
(:func:`region_cells`, cached).

Each cell is fetched once for all tiles that read it (:func:`fetch_cell`): the file goes to
``<out>/<source>/<cell>.tif``, checked against the region's lock file
(:mod:`mapper.sources.lock`), and a record ``<out>/<source>/<cell>.json`` (a source manifest) says
which URL it came from and whether the server had it. A cell the server does not have (HTTP 404)
is sea: the record says ``"absent": true`` and the stack reads no file for it. Only where the
cell holds no land of the region's boundary (:data:`LAND_KM2`): a land cell without a file (a
product that does not cover it, a moved folder, a wrong template) is one error naming the URL,
not sea pinned in the lock file.
"""

from __future__ import annotations

import logging
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from mapper.config import Region
from mapper.errors import ChangedError, ConfigError, InputError, NotFoundError, SourceError
from mapper.files import file_sha256
from mapper.grid import Lattice

if TYPE_CHECKING:
    from mapper.dem import CellProducts
    from mapper.sources.lock import LockFile

logger = logging.getLogger(__name__)

TEMPLATE_FIELDS = ("n", "N", "s", "S", "w", "W")
"""The fields a ``url_template`` may use (see the module docstring)."""

MARGIN_M = 300.0
"""Metres added around a tile's DEM window before finding its cells: covers the cubic kernel
(two source pixels: at most 6 arc-seconds of longitude, about 60 m, in any supported product) and
the error of the densified edges, several times over."""

LAND_KM2 = 1.0
"""A cell that shares at least this much (km^2) with the region's boundary (before its buffer)
holds land: the server must have its file, and HTTP 404 there is an error, not sea."""

EDGE_POINTS = 32
"""Points per edge of a window when it is taken to longitude/latitude (every ~1.6 km for a
statewide tile with its halos; the curvature of an edge between two points is a few metres)."""

DATE = "{date}"
"""A ``{date}`` field left in a cell's URL: resolved at download (:mod:`mapper.sources.tnm`)."""

_CELL = re.compile(r"^([NS])(\d{2})([EW])(\d{3})$")
CELL_PATTERN = r"[NS]\d{2}[EW]\d{3}"
"""A regular expression matching every cell name (the workflow's wildcard constraint)."""


@dataclass(frozen=True, order=True)
class Cell:
    """A 1 x 1 degree cell by its south-west corner: ``south`` in [-90, 89], ``west`` in
    [-180, 179] (integer degrees)."""

    south: int
    west: int

    @property
    def name(self) -> str:
        return f"{_lat('N', self.south)}{_lon('E', self.west)}"

    @classmethod
    def parse(cls, name: str) -> Cell:
        """``"N64W148"`` -> ``Cell(64, -148)``."""
        m = _CELL.match(name)
        if not m:
            raise ConfigError(f"{name!r} is not a cell name (expected like 'N64W148')")
        south = int(m.group(2)) * (1 if m.group(1) == "N" else -1)
        west = int(m.group(4)) * (1 if m.group(3) == "E" else -1)
        if not (-90 <= south < 90 and -180 <= west < 180):
            raise ConfigError(f"{name!r} is not a cell (south edge in -90..89, west in -180..179)")
        return cls(south, west)

    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees; east may be 180."""
        return (float(self.west), float(self.south), float(self.west + 1), float(self.south + 1))

    def fields(self) -> dict[str, str]:
        """The template fields of this cell (see :data:`TEMPLATE_FIELDS`)."""
        values = {"N": _lat("N", self.south + 1), "S": _lat("N", self.south),
                  "W": _lon("E", self.west)}  # fmt: skip
        return {**values, **{k.lower(): v.lower() for k, v in values.items()}}


def _lat(letter: str, degrees: int) -> str:
    return f"{'N' if degrees >= 0 else 'S'}{abs(degrees):02d}"


def _lon(letter: str, degrees: int) -> str:
    return f"{'E' if degrees >= 0 else 'W'}{abs(degrees):03d}"


def check_template(template: str, where: str) -> str:
    """``template`` if it uses only :data:`TEMPLATE_FIELDS` and names a cell (a latitude field and
    a longitude field); else ConfigError naming ``where`` (the file and key)."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(
            f"{where}: bad url_template {template!r} ({exc}); fix the braces"
        ) from None
    unknown = sorted(names - set(TEMPLATE_FIELDS) - {"date"})
    if unknown:
        raise ConfigError(
            f"{where}: url_template field(s) {', '.join('{' + u + '}' for u in unknown)} unknown; "
            f"use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)} (and {{date}}: a 3DEP "
            "file's date, from its folder's listing)"
        )
    if not names & set("nNsS") or not names & set("wW"):
        raise ConfigError(
            f"{where}: url_template {template!r} must name the cell: a latitude field ({{n}} or "
            "{S}, ...) and a longitude field ({w} or {W}); fix it"
        )
    if "date" in names:
        from mapper.sources.tnm import dated

        try:
            dated(template)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return template


def cell_url(settings: dict[str, Any], cell: Cell, where: str = "region file") -> str:
    """The URL of ``cell`` from a ``cells`` source's settings (its ``url_template``)."""
    return check_template(settings["url_template"], where).format(**cell.fields(), date=DATE)


def cell_urls(settings: dict[str, Any], cell: Cell, where: str = "region file") -> list[str]:
    """The URLs of ``cell`` to try in order: its ``url_template``'s, then each of its
    ``fallback_templates``' (a product that covers what the first lacks)."""
    templates = [(settings["url_template"], f"{where}.url_template")] + [
        (t, f"{where}.fallback_templates[{i}]")
        for i, t in enumerate(settings.get("fallback_templates") or [])
    ]
    return [check_template(t, key).format(**cell.fields(), date=DATE) for t, key in templates]


# -- the cells of each tile ---------------------------------------------------------------------


def _ring(bounds: tuple[float, float, float, float], n: int) -> np.ndarray:
    """``4n`` points around a rectangle (counter-clockwise from the lower-left corner)."""
    left, bottom, right, top = bounds
    t = np.arange(n) / n
    xs = np.concatenate([left + t * (right - left), np.full(n, right),
                         right - t * (right - left), np.full(n, left)])  # fmt: skip
    ys = np.concatenate([np.full(n, bottom), bottom + t * (top - bottom),
                         np.full(n, top), top - t * (top - bottom)])  # fmt: skip
    return np.stack([xs, ys], axis=-1)


def cells_of_windows(
    lattice: Lattice, windows: list[tuple[float, float, float, float]]
) -> list[list[Cell]]:
    """The cells each window (bounds in the lattice CRS, metres) meets, sorted; vectorised.

    Each window's ring of :data:`EDGE_POINTS` points per edge goes to NAD83 longitude/latitude in
    one transform for all windows; longitudes are unwrapped around each ring's first point, so a
    window across 180 degrees is one polygon from e.g. 179.6 to 180.4. Cells are those whose box
    intersects the polygon (not merely its bounding box), their west edges brought back to
    [-180, 180).
    """
    from pyproj import Transformer

    if not windows:
        return []
    rings = np.stack([_ring(b, EDGE_POINTS) for b in windows])  # (w, 4n, 2)
    to_lonlat = Transformer.from_crs(lattice.crs, "EPSG:4269", always_xy=True)
    lon, lat = to_lonlat.transform(rings[..., 0], rings[..., 1])
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lon = lon[:, :1] + (lon - lon[:, :1] + 180.0) % 360.0 - 180.0  # unwrap around point 0
    polygons = shapely.polygons(np.stack([lon, lat], axis=-1))
    shapely.prepare(polygons)
    out: list[list[Cell]] = []
    for i, poly in enumerate(polygons):
        w0, w1 = math.floor(lon[i].min()), math.floor(lon[i].max())
        s0, s1 = math.floor(lat[i].min()), math.floor(lat[i].max())
        west, south = np.meshgrid(np.arange(w0, w1 + 1), np.arange(s0, s1 + 1))
        west, south = west.ravel(), south.ravel()
        boxes = shapely.box(west, south, west + 1, south + 1)
        hit = shapely.intersects(poly, boxes)
        cells = {Cell(int(s), int((w + 180) % 360 - 180)) for s, w in
                 zip(south[hit], west[hit], strict=True)}  # fmt: skip
        out.append(sorted(cells))
    return out


def tile_dem_bounds(region: Region, tiles: list[str]) -> list[tuple[float, float, float, float]]:
    """Each tile's DEM window (what its stack reads) grown by :data:`MARGIN_M`, in metres."""
    from mapper.dem import dem_window
    from mapper.stack import stack_settings

    s = stack_settings(region)
    lattice = region.lattice
    out = []
    for tile in tiles:
        window = dem_window(lattice, tile, s.halo_px, s.hydro_block_px, s.hydro_halo_px)
        left, bottom, right, top = lattice.window_bounds(window)
        out.append((left - MARGIN_M, bottom - MARGIN_M, right + MARGIN_M, top + MARGIN_M))
    return out


def region_cells(region: Region) -> dict[str, list[str]]:
    """Tile id -> the names of the cells its stack reads, for every stacked tile of the region
    (the mapped tiles and the context tiles around them: :meth:`Region.stacked_tiles`).

    Memoised per boundary file (and its modification time), lattice, stack settings, buffer and
    crop reach: the workflow asks once per tile while it builds the DAG.
    """
    boundary = Path(region.settings["boundary"])
    key = (str(boundary.resolve()), boundary.stat().st_mtime_ns if boundary.exists() else 0,
           region.lattice, tuple(sorted(region.settings["stack"].items())),
           region.settings["buffer_m"], region.context_px)  # fmt: skip
    if key not in _REGION_CELLS:
        tiles = region.stacked_tiles()
        cells = cells_of_windows(region.lattice, tile_dem_bounds(region, tiles))
        _REGION_CELLS[key] = {t: [c.name for c in cs] for t, cs in zip(tiles, cells, strict=True)}
    return _REGION_CELLS[key]


_REGION_CELLS: dict[tuple, dict[str, list[str]]] = {}


# -- fetching one cell --------------------------------------------------------------------------


def check_cell_raster(path: Path, cell: Cell, url: str) -> None:
    """A downloaded cell must be a geographic raster that covers the cell (to within a pixel: a
    GLO-30 file stops half a pixel short of its south and east edges); else InputError naming the
    URL, which catches a template that names the wrong corner."""
    import rasterio
    from rasterio.errors import RasterioIOError

    from mapper.raster import gdal_reason

    try:  # the download (a .part the caller deletes when refused), not a file a user can open
        src = rasterio.open(path)
    except RasterioIOError as exc:
        reason = (gdal_reason(exc).replace(f"'{path}' not", "the download is not")
                  .replace(str(path), "the download"))
        raise InputError(
            f"{url}: what the server sent is not a raster ({reason}); check "
            "url_template, or fetch again if the server was failing (an error page)"
        ) from None
    with src:
        crs, (left, bottom, right, top) = src.crs, src.bounds
        rx, ry = src.res
    if crs is None or not crs.is_geographic:
        raise InputError(
            f"{url}: not a raster in longitude/latitude (CRS {crs}); a cells source must serve "
            "1 x 1 degree geographic cells: check url_template"
        )
    w, s, e, n = cell.bounds()
    if left > w + rx or right < e - rx or bottom > s + ry or top < n - ry:
        raise InputError(
            f"{url}: covers lon {left:.4f}..{right:.4f}, lat {bottom:.4f}..{top:.4f}, not cell "
            f"{cell.name} (lon {w:g}..{e:g}, lat {s:g}..{n:g}); check url_template: {{n}}/{{N}} "
            "is the north edge, {s}/{S} the south edge, {w}/{W} the west edge"
        )


def fetch_cell(region: Region, name: str, cell_name: str, out_dir: Path) -> Path:
    """Fetch one cell of source ``name`` into ``out_dir/name/<cell>.tif`` (verified against, or
    recorded in, the region's lock file) and write its record ``<cell>.json``; return the
    record's path.

    The cell's URLs (:func:`cell_urls`) are tried in order; the first server that has the file
    gives it, and the URLs before it, which had none (HTTP 404), are recorded as absent in the
    lock file with the URL that served the cell (``served_by``): a later fetch does not ask them
    again, so the same product serves the cell (delete those entries to look again). A cell no
    server has is sea (recorded as absent), unless it holds land of the region
    (:data:`LAND_KM2`): then one error naming every URL tried, and nothing recorded; the lock
    file's word that one of its URLs has no file (without ``served_by``: a user's "sea") lets it
    be sea, though a product that has the cell still serves it.

    A ``{date}`` URL is the dated file the lock file records, else the newest its folder lists
    (then recorded; the record's ``url`` names it). A 3DEP cell whose ``current/`` file is no
    longer the one the lock file pins (3DEP replaced it) is fetched from its dated version of
    those bytes (:func:`mapper.sources.tnm.fetch_version`; the record's item names that URL); any
    other changed file is an error.
    """
    from mapper.sources.lock import LockFile, lock_path
    from mapper.sources.manifest import make_manifest, write_manifest

    settings = region.settings["sources"][name]
    cell = Cell.parse(cell_name)
    urls = cell_urls(settings, cell, f"{region.path}: sources.{name}")
    dest = out_dir / name / f"{cell.name}.tif"
    lock = LockFile(lock_path(region.path))
    land = land_km2(region, cell)
    said_sea = any(_said_sea(lock.get(url)) for url in urls)  # a user's word (or a sea cell's)
    entry, tried, skipped = None, [], []
    for i, url in enumerate(urls):
        known = lock.get(url) or {}
        if _served_later(known.get("served_by"), urls[i + 1:]):
            tried.append(url)  # the lock pins a later product for this cell: not asked
            skipped.append(url)
            continue
        # a URL the lock records as absent (sea) is asked again, a file there being an error
        # (fetch_locked), into a scratch name: it must not touch a copy of the cell kept at dest
        target = dest.with_name(dest.name + ".probe") if known.get("absent") else dest
        try:
            entry = _fetch_url(url, known, target, lock, cell)
        except NotFoundError:
            entry = None
        if entry is not None:
            break
        tried.append(url)
    if entry is None and land >= LAND_KM2 and not said_sea:
        asked = [u for u in tried if u not in skipped]
        missing = f"{asked[0]}: HTTP 404" if len(asked) == 1 else (
            f"{', '.join(asked)}: HTTP 404 at each")
        if any(DATE in u for u in asked):  # a {date} URL's miss is an empty listing
            missing = ", ".join(f"{u}: {'no dated file listed' if DATE in u else 'HTTP 404'}"
                                for u in asked)  # fmt: skip
        if skipped:
            missing += (f" (not asked: {', '.join(skipped)}, which {lock.path} records as served "
                        "by a later product; delete those entries to ask them again)")
        raise SourceError(
            f"{missing}, but cell {cell.name} holds {land:.0f} km^2 of region {region.name}'s "
            f"land: the source does not cover it; fix sources.{name}.url_template in "
            f"{region.path} or add a product that covers the cell to its fallback_templates, or, "
            f'if the cell truly has no land, record it as sea in {lock.path}: "{urls[0]}": '
            '{"absent": true}'
        )
    served = None
    if entry is not None:  # the URL the lock pins: a {date} template's, the dated file's
        served = entry["url"] if DATE in urls[len(tried)] else urls[len(tried)]
    for url in tried:
        if lock.get(url) is None:
            lock.record(url, {"absent": True, **({"served_by": served} if served else {})})
            logger.info("%s: no file on the server (HTTP 404): absent", url)
    if served and tried:
        logger.info("cell %s: from %s (no file at %s)", cell.name, served, ", ".join(tried))
    record = make_manifest(
        region.name, name, "cells", [entry] if entry else [], synthetic=region.synthetic,
        cell=cell.name, url=served or urls[0], absent=entry is None, lock=str(lock.path),
        rank=len(tried) if entry is not None else None, tried=tried,
    )  # fmt: skip
    return write_manifest(out_dir / name / f"{cell.name}.json", record)


def _fetch_url(url: str, known: dict[str, Any], dest: Path, lock: LockFile, cell: Cell
               ) -> dict[str, Any] | None:  # fmt: skip
    """One URL of a cell (:func:`fetch_cell`; ``known``: its lock entry, or empty): a ``{date}``
    URL as the dated file the lock pins, else the newest in the listing; a 3DEP ``current/`` file
    that changed as its pinned dated version (:mod:`mapper.sources.tnm`); any other URL as it is
    (:func:`fetch_locked`). NotFoundError where the product lacks the cell."""
    from mapper.sources.lock import fetch_locked, refresh_advice
    from mapper.sources.tnm import fetch_version, newest_version, pinned_version

    if DATE in url:
        version = pinned_version(lock.entries(), url) or newest_version(url)
        if known.get("absent"):  # the lock's word that no dated file was there
            raise ChangedError(
                f"{url}: {lock.path} records no dated file of the cell, and the listing now holds "
                f"{version}; {refresh_advice(url, lock.path)}"
            )
        try:
            return fetch_locked(version, dest, lock,
                                check=lambda p: check_cell_raster(p, cell, version))
        except NotFoundError:  # listed (or pinned: fetch_locked raised ChangedError), not served
            raise SourceError(
                f"{version}: HTTP 404, though {url.rsplit('/', 1)[0]}/ lists it; retry later "
                "(the server may be under repair)"
            ) from None
    try:
        return fetch_locked(url, dest, lock, check=lambda p: check_cell_raster(p, cell, url))
    except ChangedError as exc:  # a 3DEP cell replaced upstream: its pinned dated version
        if not known.get("sha256"):
            raise
        return fetch_version(url, dest, known, exc)


def _served_later(served_by: str | None, later: list[str]) -> bool:
    """Whether a lock entry's ``served_by`` (the URL, or a ``{date}`` template's dated file, that
    served the cell) is still one of the cell's ``later`` URLs: then the URL is not asked again.
    One no longer among them (a fallback removed from the region file) leaves the URL to be asked
    again, as the lock's word about which product serves the cell no longer holds."""
    from mapper.sources.tnm import dated

    def serves(url: str) -> bool:
        if DATE not in url:
            return served_by == url
        endpoint, _, pattern = dated(url)  # the dated files' keys in the template's folder
        key = served_by.removeprefix(endpoint + "/")
        return key != served_by and pattern.match(key) is not None

    return bool(served_by) and any(serves(u) for u in later)


def _said_sea(entry: dict[str, Any] | None) -> bool:
    """A lock entry that says a URL has no file and no fallback served its cell instead: sea (a
    sea cell's, or a user's word for a cell of the boundary that holds no land)."""
    return bool(entry and entry.get("absent") and "served_by" not in entry)


def land_km2(region: Region, cell: Cell) -> float:
    """km^2 of the region's boundary (before its buffer) inside ``cell``: its edges densified to
    0.01 degree and taken to the lattice CRS (a cell west of 180 degrees lands west of the
    state, where EPSG:3338 puts the Near Islands)."""
    from mapper.grid import reproject

    ring = shapely.segmentize(shapely.box(*cell.bounds()), 0.01)
    projected = reproject(ring, "EPSG:4269", region.lattice.crs)
    return float(shapely.intersection(projected, region.boundary()).area) / 1e6


def cell_products(records: list[Path]) -> CellProducts:
    """The local rasters of cell records (:func:`fetch_cell`), absent (sea) cells left out, by the
    product that served them (the source's ``url_template``, then each fallback), each with the
    cells it serves: :func:`mapper.dem.warp_dem` takes each pixel from its cell's product."""
    from mapper.dem import CellProducts
    from mapper.sources.manifest import read_manifest

    by_rank: dict[int, tuple[list[Path], set[tuple[int, int]]]] = {}
    for record in records:
        manifest = read_manifest(record)
        if manifest.get("absent"):
            continue
        paths, cells = by_rank.setdefault(int(manifest.get("rank") or 0), ([], set()))
        cell = Cell.parse(manifest["cell"])
        cells.add((cell.south, cell.west))
        for item in manifest["items"]:
            path = Path(item["path"])
            if not path.exists():
                raise InputError(
                    f"{record}: names {path}, which is missing; delete {record} and run again to "
                    "fetch the cell"
                )
            _check_cell_file(path, item, record)
            paths.append(path)
    return CellProducts(tuple((tuple(by_rank[k][0]), frozenset(by_rank[k][1]))
                              for k in sorted(by_rank)))  # fmt: skip


def _check_cell_file(path: Path, item: dict[str, Any], record: Path) -> None:
    """A cell file must hold the bytes its record (and the lock) pin: Snakemake tracks the
    record, not the file, so a file replaced or damaged since would be read unnoticed."""
    size, sha256 = item.get("size"), item.get("sha256")
    found = path.stat().st_size
    if size is not None and found != size:
        differs = f"{found} bytes, its record {size}"
    elif sha256 and (digest := file_sha256(path)) != sha256:
        differs = f"sha256 {digest[:12]}..., its record {sha256[:12]}..."
    else:
        return
    raise InputError(
        f"{path}: differs from the cell file its record {record} pins ({differs}); delete "
        f"{record} and run again to fetch the cell again"
    )


def cell_rasters(records: list[Path]) -> list[Path]:
    """The local rasters of cell records, absent (sea) cells left out, the source's first
    product's before its fallbacks' (in the order of the records within each): the files of
    :func:`cell_products`, as a list (what ``gdalbuildvrt`` is given in the tests)."""
    return cell_products(records).paths


def is_record(path: str | Path) -> bool:
    """True for a cell record (a .json file) given where rasters are expected."""
    return Path(path).suffix.lower() == ".json"
