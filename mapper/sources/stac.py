"""Finding Sentinel-2 L2A items for a tile with a STAC API search (pystac-client).

A tile's EPSG:3338 bounds become a lon/lat bbox (edges densified, so the curved edges of the
projected square are covered). Most Sentinel-2 scenes that cross 180 degrees are left out of
Earth Search, and a bbox with west > east is not understood by every API, so a tile that crosses
the antimeridian (western Aleutians) is searched as two boxes, one each side of it.

The search asks for one collection, the tile's boxes, and one datetime interval per year and per
run of consecutive ``months`` (so winter scenes are never paged through), with
``eo:cloud_cover < max_cloud`` when the API offers the query extension, and no sort (every page
is read and the items are ranked here; a sorted search once lost its paging on Earth Search). A
collection the API does not hold is an error before any search (an API with the collections
endpoint is asked for it), not a search that finds nothing. The same filters are applied again
to what comes back (not every API honours them), duplicates (an item found by both boxes) are
dropped, and the ``max_items`` least cloudy items are kept, ties broken by date and id so the
choice is reproducible.

The workflow searches once per tile and then chooses scenes per fixed block of the lattice
(:func:`items_by_block`): of the acquisitions whose granules meet the block, the ``max_items``
least cloudy, with every granule of each. A pixel's scenes therefore depend on its block alone,
not on the tile size (a per-tile cap would pick other scenes for the same pixel when ``tile_px``
changes).

An item is one MGRS granule (110 km square) of one acquisition: neighbouring granules of a pass
overlap by about 10 km, and a granule may be listed again after ESA reprocessed it (another
processing baseline, Earth Search's ``_1_`` ids). :func:`acquisition` names the acquisition an
item belongs to (its ``s2:datatake_id`` without the baseline), so that the cap counts
acquisitions and the composite gives each one vote (:mod:`mapper.sources.composite` mosaics an
acquisition's granules before the median).
"""

from __future__ import annotations

import calendar
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pystac
import shapely
import shapely.geometry
from pyproj import Transformer

from mapper.errors import ConfigError, SourceError
from mapper.grid import reproject

logger = logging.getLogger(__name__)

BBox = tuple[float, float, float, float]  # (west, south, east, north) in degrees
PAGE_LIMIT = 100
MAX_PAGES = 10_000
"""Pages of one item search past which it stops with an error (a million items at PAGE_LIMIT,
far more than a tile's search finds): with :func:`every_item`'s check for a repeated page, no
catalog's paging can keep a job looping until its time limit."""


def split_antimeridian(bbox: Sequence[float]) -> list[BBox]:
    """Split a lon/lat bbox that crosses 180 degrees into two boxes inside [-180, 180].

    Crossing is recognised in either usual form: RFC 7946's ``west > east`` (e.g. 172, .., -175),
    or an unwrapped box reaching past 180 (e.g. 172, .., 185) or below -180. A box that does not
    cross is returned unchanged (as the only element).
    """
    west, south, east, north = (float(v) for v in bbox)
    if east > 180.0:
        return [(west, south, 180.0, north), (-180.0, south, east - 360.0, north)]
    if west < -180.0:
        return [(west + 360.0, south, 180.0, north), (-180.0, south, east, north)]
    if west > east:
        return [(west, south, 180.0, north), (-180.0, south, east, north)]
    return [(west, south, east, north)]


def lonlat_bbox(
    bounds: Sequence[float], crs: str = "EPSG:3338", densify: int = 16, pad_deg: float = 1e-3
) -> BBox:
    """The lon/lat (EPSG:4326) box of projected ``bounds`` (left, bottom, right, top).

    Each edge is sampled at ``densify`` points, and the box is padded by ``pad_deg`` (about 100 m)
    for the curvature between samples. A box crossing 180 degrees comes back in RFC 7946 form
    (west > east); pass it to :func:`split_antimeridian`.
    """
    left, bottom, right, top = bounds
    t = np.linspace(0.0, 1.0, densify + 1)
    xs = np.concatenate(
        [
            left + (right - left) * t,
            np.full_like(t, right),
            right - (right - left) * t,
            np.full_like(t, left),
        ]
    )
    ys = np.concatenate(
        [
            np.full_like(t, bottom),
            bottom + (top - bottom) * t,
            np.full_like(t, top),
            top - (top - bottom) * t,
        ]
    )
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    lon = np.asarray(lon, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    south = max(float(lat.min()) - pad_deg, -90.0)
    north = min(float(lat.max()) + pad_deg, 90.0)
    if lon.max() - lon.min() > 180.0:  # the ring jumps from +180 to -180: it crosses
        east_side = lon < 0
        west = float(lon[~east_side].min()) - pad_deg
        east = float(lon[east_side].max()) + pad_deg
        return (west, south, east, north)
    west = float(lon.min()) - pad_deg
    east = float(lon.max()) + pad_deg
    return _rfc7946(west, south, east, north)


def _rfc7946(west: float, south: float, east: float, north: float) -> BBox:
    """A box whose padding reaches past +-180, written with west > east (else unchanged)."""
    if east > 180.0:
        east -= 360.0
    if west < -180.0:
        west += 360.0
    return (west, south, east, north)


def parse_interval(interval: str) -> tuple[datetime, datetime]:
    """``"2019-06-01/2023-08-31"`` -> (start, end) in UTC; a date-only end takes its whole day."""
    parts = interval.split("/")
    if len(parts) != 2 or ".." in parts or not all(parts):
        raise ConfigError(
            f"datetime {interval!r}: expected a closed ISO interval 'start/end', "
            "e.g. 2019-06-01/2023-08-31; fix the source's 'datetime' in the region file"
        )
    try:
        start, end = (datetime.fromisoformat(p) for p in parts)
    except ValueError as exc:
        raise ConfigError(f"datetime {interval!r}: {exc}; fix the region file") from None
    if "T" not in parts[1]:
        end = end + timedelta(days=1) - timedelta(microseconds=1)
    start, end = (d if d.tzinfo else d.replace(tzinfo=UTC) for d in (start, end))
    if end < start:
        raise ConfigError(
            f"datetime {interval!r}: the end is before the start; fix the region file"
        )
    return start, end


def month_intervals(interval: str, months: Iterable[int]) -> list[str]:
    """One ISO interval per year and per run of consecutive months, clipped to ``interval``.

    ``("2020-07-15/2021-08-31", [6, 7, 8])`` ->
    ``["2020-07-15T00:00:00Z/2020-08-31T23:59:59Z", "2021-06-01T00:00:00Z/2021-08-31T23:59:59Z"]``.
    """
    start, end = parse_interval(interval)
    wanted = sorted(set(int(m) for m in months))
    runs: list[tuple[int, int]] = []
    for m in wanted:
        if runs and runs[-1][1] == m - 1:
            runs[-1] = (runs[-1][0], m)
        else:
            runs.append((m, m))
    out = []
    for year in range(start.year, end.year + 1):
        for m0, m1 in runs:
            lo = datetime(year, m0, 1, tzinfo=UTC)
            last = calendar.monthrange(year, m1)[1]
            hi = datetime(year, m1, last, 23, 59, 59, tzinfo=UTC)
            lo, hi = max(lo, start), min(hi, end)
            if lo <= hi:
                out.append(f"{_iso(lo)}/{_iso(hi)}")
    return out


def _iso(d: datetime) -> str:
    return d.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def cloud_cover(item: pystac.Item) -> float:
    """The item's ``eo:cloud_cover`` (percent); 100 when absent, so such items sort last."""
    value = item.properties.get("eo:cloud_cover")
    return float(value) if value is not None else 100.0


def select_items(
    items: Iterable[pystac.Item],
    *,
    months: Iterable[int],
    max_cloud: float,
    max_items: int | None,
    interval: str | None = None,
) -> list[pystac.Item]:
    """Filter (months, cloud cover, interval), drop duplicate ids, keep the least cloudy
    (all of them with ``max_items=None``), in order of cloud cover, date and id."""
    wanted = set(int(m) for m in months)
    start, end = parse_interval(interval) if interval else (None, None)
    unique: dict[str, pystac.Item] = {}
    for item in items:
        when = item.datetime
        if when is None:
            continue
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if when.month not in wanted or cloud_cover(item) >= max_cloud:
            continue
        if start is not None and not (start <= when <= end):
            continue
        unique.setdefault(item.id, item)
    ranked = sorted(unique.values(), key=lambda it: (cloud_cover(it), it.datetime, it.id))
    return ranked[:max_items]


def open_client(api: str, timeout: float = 60.0) -> Any:
    """A pystac-client Client for ``api`` with bounded retries on 429/5xx (GET and POST)."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3 import Retry

    retry = Retry(
        total=5,
        backoff_factor=1.0,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # also POST: a search is safe to repeat
        respect_retry_after_header=True,
    )
    stac_io = StacApiIO(timeout=timeout, max_retries=retry)
    return Client.open(api, stac_io=stac_io)


def search_items(
    api: str,
    bounds: Sequence[float],
    *,
    datetime_interval: str,
    collection: str = "sentinel-2-l2a",
    months: Iterable[int] = (6, 7, 8),
    max_cloud: float = 40.0,
    max_items: int | None = 24,
    crs: str = "EPSG:3338",
    timeout: float = 60.0,
) -> list[pystac.Item]:
    """The ``max_items`` least cloudy items of ``collection`` over ``bounds`` (see module doc;
    every item that passes the filters with ``max_items=None``)."""
    from pystac_client.conformance import ConformanceClasses

    months = list(months)
    bboxes = split_antimeridian(lonlat_bbox(bounds, crs))
    intervals = month_intervals(datetime_interval, months)
    found: list[pystac.Item] = []
    try:
        client = open_client(api, timeout)
        # a collection the API does not hold is searched as an empty one (stac-server answers
        # 200 with no items), which would leave every tile without imagery: asked for first
        if (client.conforms_to(ConformanceClasses.COLLECTIONS)
                and client.get_collection(collection) is None):
            listing = f"{api.rstrip('/')}/collections"
            raise ConfigError(
                f"{api}: no collection {collection!r} (HTTP 404 at {listing}/{collection}); set "
                f"the source's 'collection' in the region file to one the API lists at {listing} "
                "(Earth Search v1: sentinel-2-l2a or sentinel-2-c1-l2a)"
            )
        use_query = client.conforms_to(ConformanceClasses.QUERY)
        # no sortby: every page is read and select_items ranks the items itself (Earth Search
        # once lost the next token of a sorted POST search: Element84/earth-search#27)
        method = _search_method(client)
        for bbox in bboxes:
            for interval in intervals:
                kwargs: dict[str, Any] = {
                    "collections": [collection],
                    "bbox": list(bbox),
                    "datetime": interval,
                    "limit": PAGE_LIMIT,
                    "method": method,
                }
                if use_query:
                    kwargs["query"] = {"eo:cloud_cover": {"lt": max_cloud}}
                before = len(found)
                found.extend(every_item(client.search(**kwargs), api))
                logger.debug("search %s %s: %d items", bbox, interval, len(found) - before)
    except (ConfigError, SourceError):
        raise
    except Exception as exc:  # pystac-client's APIError, requests errors, bad JSON, ...
        raise SourceError(
            f"{api}: STAC search failed ({exc.__class__.__name__}: {str(exc)[:200]}); check the "
            "source's 'api' and 'collection' in the region file, or retry later"
        ) from None
    items = select_items(
        found, months=months, max_cloud=max_cloud, max_items=max_items, interval=datetime_interval
    )
    logger.info(
        "%s: %d items over %d bbox(es) x %d interval(s); kept %d (max_cloud %s, max_items %s)",
        api,
        len(found),
        len(bboxes),
        len(intervals),
        len(items),
        max_cloud,
        max_items,
    )
    return items


def every_item(search: Any, api: str) -> list[pystac.Item]:
    """Every item of a pystac-client item search, page by page (it follows the ``next`` links):
    a page that only repeats items of an earlier one (a ``next`` link that does not advance) or
    more than MAX_PAGES pages is one SourceError naming the catalog, not a loop."""
    items: list[pystac.Item] = []
    seen: set[str] = set()
    for number, page in enumerate(search.pages(), start=1):
        ids = [item.id for item in page.items]
        if ids and seen.issuperset(ids):
            raise SourceError(
                f"{api}: STAC search: page {number} repeats the items of an earlier page (the "
                "catalog's next link does not advance); retry later, or report it to the "
                "catalog's operator"
            )
        if number > MAX_PAGES:
            raise SourceError(
                f"{api}: STAC search: more than {MAX_PAGES} pages of {PAGE_LIMIT} items; narrow "
                "the source's datetime or months, or retry later"
            )
        seen.update(ids)
        items.extend(page.items)
    return items


def _search_method(client: Any) -> str:
    """POST where the catalog's search link offers it (or names no method), else GET."""
    methods = {(link.extra_fields.get("method") or "GET").upper()
               for link in client.get_links("search")}
    return "POST" if "POST" in methods or not methods else "GET"


def items_by_id(api: str, collection: str, ids: Iterable[str],
                timeout: float = 60.0) -> list[pystac.Item]:
    """The items of ``collection`` with these ids that the catalog has (one item search by
    ``ids``): what an ``exclude`` entry names but a tile's search did not find, whose
    acquisition the tile must still leave out (another granule of the pass may reach it)."""
    ids = sorted(set(ids))
    if not ids:
        return []
    try:
        client = open_client(api, timeout)
        return every_item(client.search(collections=[collection], ids=ids, limit=PAGE_LIMIT,
                                        method=_search_method(client)), api)
    except (ConfigError, SourceError):
        raise
    except Exception as exc:  # pystac-client's APIError, requests errors, bad JSON, ...
        raise SourceError(
            f"{api}: STAC search for the excluded items {', '.join(ids[:5])} failed "
            f"({exc.__class__.__name__}: {str(exc)[:200]}); retry later"
        ) from None


DATATAKE_ID = re.compile(r"^(GS2[A-D]_\d{8}T\d{6}_\d{6})_N\d{2}\.\d{2}$")
"""``s2:datatake_id`` (``GS2B_20230912T133839_034041_N05.09``): platform, datatake sensing start,
absolute orbit, then the processing baseline, the one part a reprocessing changes."""
PRODUCT_URI = re.compile(r"^(S2[A-D])_MSI(?:L2A|L1C)_(\d{8}T\d{6})_N\d{4}_(R\d{3})_")
"""``s2:product_uri`` (``S2B_MSIL2A_20230912T133839_N0509_R124_T22MHD_...``): platform, datatake
sensing start, processing baseline, relative orbit, granule."""


def acquisition(item: pystac.Item) -> str:
    """The acquisition (one satellite's pass: one datatake) that ``item``'s granule belongs to.

    From ``s2:datatake_id`` without its processing baseline (Earth Search, Planetary Computer,
    Copernicus), else from ``s2:product_uri`` (platform, datatake start, relative orbit); an item
    with neither is an acquisition of its own. Granules of one pass, and reprocessed copies of a
    granule, share it.
    """
    match = DATATAKE_ID.match(str(item.properties.get("s2:datatake_id") or ""))
    if match:
        return match.group(1)
    match = PRODUCT_URI.match(str(item.properties.get("s2:product_uri") or ""))
    if match:
        return "G{}_{}_{}".format(*match.groups())
    return item.id


def footprint(item: pystac.Item) -> shapely.Geometry:
    """The item's footprint in lon/lat: its geometry, else its bbox."""
    if item.geometry:
        return shapely.geometry.shape(item.geometry)
    return shapely.box(*item.bbox)


FOOTPRINT_STEP_DEG = 0.01
"""Longest footprint edge (degrees) projected as a straight line by :func:`projected_footprint`
(about 1 km: a granule edge, straight in UTM, bends by well under a metre over it)."""


def projected_footprint(shape: shapely.Geometry, crs: str) -> shapely.Geometry:
    """A lon/lat footprint in ``crs``, its edges densified; parts on both sides of 180 degrees
    (RFC 7946 splits them) project side by side."""
    out = reproject(shapely.segmentize(shape, FOOTPRINT_STEP_DEG), "EPSG:4326", crs)
    return out if out.is_valid else shapely.make_valid(out)


def items_by_block(
    items: Sequence[pystac.Item],
    blocks: dict[str, Sequence[float]],
    *,
    max_items: int,
    crs: str = "EPSG:3338",
) -> dict[str, list[pystac.Item]]:
    """Per block id (``blocks`` maps it to its projected bounds in ``crs``), the items of the
    first ``max_items`` acquisitions (:func:`acquisition`) among ``items`` (already filtered and
    ranked by :func:`select_items`) whose footprint meets the block: every granule of a chosen
    acquisition that meets the block, in the items' order. An acquisition ranks as its least
    cloudy granule. A footprint is tested against the block itself, in ``crs`` (its edges
    densified), not against the block's lon/lat box: away from the projection's central meridian
    that box is up to 1.6 times the block (Aleutians), and a granule meeting only the box's
    corners would spend one of the ``max_items`` places and add no pixel."""
    shapes = [footprint(item) for item in items]
    projected: dict[int, shapely.Geometry] = {}
    out = {}
    for block, bounds in blocks.items():
        boxes = [shapely.box(*b) for b in split_antimeridian(lonlat_bbox(bounds, crs))]
        area = shapely.box(*bounds)
        chosen: list[pystac.Item] = []
        passes: set[str] = set()
        for k, (it, shp) in enumerate(zip(items, shapes, strict=True)):
            if not any(shp.intersects(b) for b in boxes):
                continue
            if k not in projected:
                projected[k] = projected_footprint(shp, crs)
            if not projected[k].intersects(area):
                continue
            key = acquisition(it)
            if key not in passes:
                if len(passes) == max_items:
                    continue
                passes.add(key)
            chosen.append(it)
        out[block] = chosen
    return out
