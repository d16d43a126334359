"""A Sentinel-2 L2A item's files and how its digital numbers become reflectance.

- Assets: the href of each band (Earth Search v1 common names, else band codes) and its GDAL name
  (``/vsicurl/`` over HTTP, ``/vsis3/`` for S3); the SCL classes masked.
- The processing-baseline offset: ESA's DNs carry +1000 from baseline 04.00 (25 January 2022),
  so reflectance is ``(DN + offset) / 10000`` with ``offset`` -1000 then and 0 before, read per
  item from ``s2:processing_baseline`` (the acquisition date decides only when it is missing). A
  ``harmonized`` collection (Earth Search's ``sentinel-2-l2a``) had it removed from its files, and
  its ``earthsearch:boa_offset_applied`` flag, wrong on many items, is ignored.

Not every COG of a harmonised collection had the offset removed (Earth Search names "some" items;
earth-search#66 shows one of 26 January 2022 with it still in). With ``check_offset`` (on by
default), each item of baseline 04.00 or later in a ``harmonized`` collection is tested on its own
data (:func:`check_offset`), read at low resolution over its whole granule. The lower of blue
and SWIR 2.2 um (the darkest bands of vegetation and of water) is taken over the granule's water
(SCL 6: open water reflects almost no SWIR, whatever else the granule holds), its median; or,
with fewer than :data:`OFFSET_CHECK_MIN_PIXELS` water pixels, over its clear pixels, its darkest
1 % (water, shadow, forest). Either lies near DN 0 once the offset is out (reflectance
0.00-0.03), but at DN 1000 or more while it is in (reflectance 0 plus the offset). Below
:data:`RAW_DARK_DN` (500, midway) the item is harmonised; at or above it the offset is applied to
that item, with a warning; with fewer than :data:`OFFSET_CHECK_MIN_PIXELS` clear pixels the
collection's setting stands. The verdict depends only on the item's files, never on the tile,
so it is the same in every tile and block.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pystac
import rasterio
from rasterio.enums import Resampling

from mapper.bands import DARK_PERCENTILE, OFFSET_CHECK_BANDS, OFFSET_CHECK_MIN_PIXELS
from mapper.errors import SourceError

logger = logging.getLogger(__name__)

SCL_MASKED: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
"""SCL classes removed: no data, saturated/defective, cloud shadow, cloud medium and high
probability, thin cirrus, snow/ice."""

BASELINE_WITH_OFFSET = 4.0
OFFSET_START = datetime(2022, 1, 25, tzinfo=UTC)
"""Processing baseline 04.00 went live on 25 January 2022: from then on L2A DNs carry +1000."""
BOA_OFFSET = -1000.0
DN_SCALE = 10000.0
OFFSET_CHECK_PX = 256
"""Side of the low-resolution read of a granule for :func:`check_offset` (at most; its 20 m grid
if smaller). A COG's overviews serve it in a few range requests."""
SCL_WATER = 6
WATER_PERCENTILE = 50.0
"""Over water (SCL 6), the median; over clear pixels, :data:`mapper.bands.DARK_PERCENTILE`."""
RAW_DARK_DN = 500.0
"""Darkest-percentile DN at and above which a harmonised collection's item still holds the
offset: midway between harmonised (about 0-300) and raw (1000 and up)."""

# Asset keys per band: Earth Search v1 common names first, then the band codes other catalogs use.
ASSET_KEYS: dict[str, tuple[str, ...]] = {
    "B02": ("blue", "B02"),
    "B03": ("green", "B03"),
    "B04": ("red", "B04"),
    "B05": ("rededge1", "B05"),
    "B06": ("rededge2", "B06"),
    "B07": ("rededge3", "B07"),
    "B08": ("nir", "B08"),
    "B11": ("swir16", "B11"),
    "B12": ("swir22", "B12"),
    "SCL": ("scl", "SCL"),
}


def asset_href(item: pystac.Item, band: str) -> str:
    """The href of ``band`` (e.g. ``"B04"``, ``"SCL"``) in ``item``; SourceError if it has none."""
    keys = ASSET_KEYS[band]
    for key in (*keys, *(k.lower() for k in keys)):
        asset = item.assets.get(key)
        if asset is not None:
            return asset.get_absolute_href() or asset.href
    raise SourceError(
        f"STAC item {item.id}: no asset for {band} (looked for {', '.join(keys)}); "
        "use a Sentinel-2 L2A collection (e.g. Earth Search 'sentinel-2-l2a')"
    )


def processing_baseline(item: pystac.Item) -> float | None:
    """``s2:processing_baseline`` as a number (``"04.00"`` -> 4.0), or None if absent/unreadable."""
    value = item.properties.get("s2:processing_baseline")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def dn_offset(item: pystac.Item, harmonized: bool = False) -> float:
    """The value added to an item's DNs before dividing by 10000: -1000 from baseline 04.00, 0 for
    a ``harmonized`` collection (the offset already removed from its files)."""
    if harmonized:
        return 0.0
    if processing_baseline(item) is None and item.datetime is not None:
        logger.warning("item %s has no s2:processing_baseline; deciding the offset by date",
                       item.id)
    return _baseline_offset(item)


def _baseline_offset(item: pystac.Item) -> float:
    """The offset of ESA's DNs for ``item``: by its baseline, else by its date (0 without one)."""
    baseline = processing_baseline(item)
    if baseline is not None:
        return BOA_OFFSET if baseline >= BASELINE_WITH_OFFSET else 0.0
    when = item.datetime
    if when is None:
        return 0.0
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return BOA_OFFSET if when >= OFFSET_START else 0.0


def check_offset(item: pystac.Item) -> dict[str, Any]:
    """Whether ``item``'s DNs still hold the baseline 04.00 offset, judged from its data.

    SCL, blue (B02) and SWIR 2.2 um (B12) are read over the SCL's extent at most
    :data:`OFFSET_CHECK_PX` pixels a side (nearest; a COG's overviews answer it). ``dark_dn`` is
    the median of the lower of the two DNs over the water pixels (SCL 6, both DNs above 0) if
    there are :data:`OFFSET_CHECK_MIN_PIXELS`, else its :data:`DARK_PERCENTILE` percentile over
    the clear pixels (SCL not in :data:`SCL_MASKED`, both DNs above 0). Returns ``{"verdict":
    "raw" | "harmonised" | "inconclusive", "dark_dn": float | None, "over": "water" | "clear",
    "pixels": int}`` (``pixels``: those the DN was taken over).
    """
    scl_href = asset_href(item, "SCL")
    try:
        with rasterio.open(gdal_path(scl_href)) as src:
            bounds = src.bounds
            shape = (min(OFFSET_CHECK_PX, src.height), min(OFFSET_CHECK_PX, src.width))
            scl = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    except rasterio.errors.RasterioIOError as exc:
        raise source_error(item, "SCL", scl_href, exc) from None
    darkest = np.full(shape, np.inf)
    for code in OFFSET_CHECK_BANDS:
        href = asset_href(item, code)
        try:
            with rasterio.open(gdal_path(href)) as src:
                dn = src.read(1, out_shape=shape, resampling=Resampling.nearest,
                              **_window_args(src, bounds))
        except rasterio.errors.RasterioIOError as exc:
            raise source_error(item, code, href, exc) from None
        darkest = np.where(dn > 0, np.minimum(darkest, dn), np.nan)
    clear = np.isfinite(darkest) & ~np.isin(scl, SCL_MASKED)
    water = clear & (scl == SCL_WATER)
    over, pixels, percentile = "water", water, WATER_PERCENTILE
    if water.sum() < OFFSET_CHECK_MIN_PIXELS:
        over, pixels, percentile = "clear", clear, DARK_PERCENTILE
    n = int(pixels.sum())
    if n < OFFSET_CHECK_MIN_PIXELS:
        return {"verdict": "inconclusive", "dark_dn": None, "over": over, "pixels": n}
    dark = float(np.percentile(darkest[pixels], percentile))
    return {"verdict": "raw" if dark >= RAW_DARK_DN else "harmonised", "dark_dn": round(dark, 1),
            "over": over, "pixels": n}


def _window_args(src: rasterio.io.DatasetReader, bounds: rasterio.coords.BoundingBox
                 ) -> dict[str, Any]:
    """Read arguments for ``src`` over ``bounds`` (same CRS, north up; a granule's bands share
    it): none for the same extent, a window inside the file, a boundless one (0 beyond) only
    where ``bounds`` reach past the file (a boundless read samples a little differently)."""
    if np.allclose(tuple(src.bounds), tuple(bounds), atol=1.0):
        return {}
    have = src.bounds
    margins = (bounds.left - have.left, have.right - bounds.right,
               bounds.bottom - have.bottom, have.top - bounds.top)
    window = src.window(*bounds)
    if min(margins) >= -1.0:  # within the file (to 1 m)
        return {"window": window}
    return {"window": window, "boundless": True, "fill_value": 0}


def item_offsets(
    items: Sequence[pystac.Item], harmonized: bool, check: bool = True
) -> dict[str, tuple[float, dict[str, Any] | None]]:
    """Per item id: the offset its DNs are read with and the record of :func:`check_offset`
    (None where no check is made: a collection as ESA delivers it, a baseline before 04.00, or
    ``check`` off). An item of a ``harmonized`` collection found ``raw`` is read with the offset."""
    out: dict[str, tuple[float, dict[str, Any] | None]] = {}
    for item in items:
        if item.id in out:
            continue
        offset, record = dn_offset(item, harmonized), None
        if harmonized and check and _baseline_offset(item) != 0.0:
            record = check_offset(item)
            if record["verdict"] == "raw":
                offset = BOA_OFFSET
                what = (f"the median of {record['pixels']} water pixels"
                        if record["over"] == "water" else
                        f"the darkest {DARK_PERCENTILE:g} % of {record['pixels']} clear pixels")
                logger.warning(
                    "item %s: its DNs still hold the baseline 04.00 offset although the "
                    "collection is harmonized (%s at DN %.0f, not near 0); read with offset %g",
                    item.id, what, record["dark_dn"], BOA_OFFSET)
            elif record["verdict"] == "inconclusive":
                logger.info("item %s: %d clear pixels, too few to check its offset; read as the "
                            "collection says (harmonized)", item.id, record["pixels"])
        out[item.id] = (offset, record)
    return out


def gdal_path(href: str) -> str:
    """The GDAL name of an asset href: ``/vsicurl/`` for http(s), ``/vsis3/`` for s3, else as is."""
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    if href.startswith("s3://"):
        return "/vsis3/" + href[len("s3://") :]
    return href


def source_error(item: pystac.Item, what: str, href: str, exc: Exception) -> SourceError:
    return SourceError(
        f"STAC item {item.id} {what} ({href}): {exc}; retry later (HTTP reads failed after "
        "GDAL's retries), or if the asset stays unreadable leave the item out: an entry "
        f"'{item.id}: [<tile>, ...]' (or 'all') under the stac source's 'exclude' in the region "
        "file"
    )
