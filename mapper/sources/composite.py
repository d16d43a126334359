"""A tile's cloud-masked median composite of Sentinel-2 L2A items, read over HTTP range requests.

For each item, the scene classification (SCL, 20 m) and the 9 bands of the stack are warped onto
the tile's 10 m lattice grid in EPSG:3338 with :func:`mapper.raster.warp_to_grid` (nearest for SCL,
bilinear for reflectance; exact and independent of the tile cut, so neighbouring composites meet
without seams). GDAL reads only the COG blocks a tile needs (``/vsicurl`` inside a
``rasterio.Env`` with :data:`mapper.raster.GDAL_HTTP_ENV`).

Per item, a pixel is kept only where SCL is not one of :data:`SCL_MASKED` (no data, saturated,
cloud shadow, cloud medium/high probability, thin cirrus, snow/ice) and not outside the scene.
Digital numbers become surface reflectance as ``(DN + offset) / 10000`` where ``offset`` is -1000
for processing baseline 04.00 and later (from 25 January 2022) and 0 before. The baseline is read
per item from ``s2:processing_baseline`` (the acquisition date decides only when it is missing):
the ``earthsearch:boa_offset_applied`` flag is wrong on some items and is ignored. DN 0 is nodata;
reflectance below 0 (dark pixels after the offset) is clipped to 0. The composite is the
per-pixel median over the items that kept the pixel (NaN where none did).

Output: a 9-band float32 GeoTIFF on the tile's grid, bands in the stack's order with the
descriptions of :data:`mapper.bands.S2_BANDS` (``s2_red`` ... ``s2_b12``), nodata NaN, tags naming
the items. Memory: items are streamed; the largest buffer is one band of all kept items,
``n_items * H * W * 4`` bytes, plus the 9-band result ``9 * H * W * 4``, one bit per pixel and
item for the SCL masks, and the median's working copy of ``MEDIAN_ROWS`` rows. For a 4096 px tile
and 24 items: 1.6 GB + 0.6 GB + 0.05 GB + 0.2 GB, about 2.5 GB; for a 512 px tile, about 40 MB.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from rasterio.enums import Resampling

from mapper.bands import S2_BANDS
from mapper.errors import InputError, SourceError
from mapper.grid import Lattice
from mapper.raster import GDAL_HTTP_ENV, warp_to_grid, write_geotiff

logger = logging.getLogger(__name__)

SCL_MASKED: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
"""SCL classes removed: no data, saturated/defective, cloud shadow, cloud medium and high
probability, thin cirrus, snow/ice."""

BASELINE_WITH_OFFSET = 4.0
OFFSET_START = datetime(2022, 1, 25, tzinfo=UTC)
"""Processing baseline 04.00 went live on 25 January 2022: from then on L2A DNs carry +1000."""
BOA_OFFSET = -1000.0
DN_SCALE = 10000.0
MEDIAN_ROWS = 256

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


def dn_offset(item: pystac.Item) -> float:
    """The value added to an item's DNs before dividing by 10000: -1000 from baseline 04.00."""
    baseline = processing_baseline(item)
    if baseline is not None:
        return BOA_OFFSET if baseline >= BASELINE_WITH_OFFSET else 0.0
    when = item.datetime
    if when is None:
        return 0.0
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    logger.warning("item %s has no s2:processing_baseline; deciding the offset by date", item.id)
    return BOA_OFFSET if when >= OFFSET_START else 0.0


def _read(
    item: pystac.Item, band: str, lattice: Lattice, tile: str, resampling: Resampling
) -> np.ndarray:
    href = asset_href(item, band)
    try:
        return warp_to_grid(
            href,
            lattice.crs,
            lattice.tile_transform(tile),
            lattice.tile_shape,
            resampling=resampling,
            indexes=[1],
            src_nodata=0,
        )[0]
    except InputError as exc:
        raise SourceError(
            f"STAC item {item.id} {band} ({href}): {exc}; retry later (HTTP reads failed after "
            "GDAL's retries) or lower max_items to skip the item"
        ) from None


def nanmedian_rows(stack: np.ndarray, rows: int = MEDIAN_ROWS) -> np.ndarray:
    """Median over axis 0 ignoring NaN, ``rows`` rows at a time (NaN where all are NaN)."""
    out = np.full(stack.shape[1:], np.nan, dtype="float32")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice encountered", RuntimeWarning)
        for r0 in range(0, stack.shape[1], rows):
            out[r0 : r0 + rows] = np.nanmedian(stack[:, r0 : r0 + rows], axis=0)
    return out


def composite_tile(
    items: Sequence[pystac.Item], lattice: Lattice, tile: str, dest: str | Path
) -> dict[str, Any]:
    """Write the median composite of ``items`` for ``tile`` to ``dest``; return a summary.

    The summary has ``items`` (per item: id, datetime, cloud cover, baseline, offset, fraction of
    the tile kept by the SCL mask), ``used`` (ids that contributed at least one pixel) and
    ``valid_fraction`` (pixels of the composite with a value). With no usable item the composite
    is written all NaN (an ocean tile or a permanently cloudy one) and a warning is logged.
    """
    height, width = lattice.tile_shape
    s2_names = [name for name, _ in S2_BANDS]
    kept: list[tuple[pystac.Item, np.ndarray]] = []  # (item, packed bits of the SCL mask)
    summary_items: list[dict[str, Any]] = []
    with rasterio.Env(**GDAL_HTTP_ENV):
        for item in items:
            scl = _read(item, "SCL", lattice, tile, Resampling.nearest)
            valid = np.isfinite(scl) & ~np.isin(scl, SCL_MASKED)
            fraction = float(valid.mean())
            summary_items.append(
                {
                    "id": item.id,
                    "datetime": item.datetime.isoformat() if item.datetime else None,
                    "cloud_cover": item.properties.get("eo:cloud_cover"),
                    "processing_baseline": item.properties.get("s2:processing_baseline"),
                    "offset": dn_offset(item),
                    "clear_fraction": round(fraction, 6),
                }
            )
            if fraction > 0:
                kept.append((item, np.packbits(valid, axis=None)))
            logger.info("%s %s: %.1f %% of the tile clear", tile, item.id, 100 * fraction)

        result = np.full((len(S2_BANDS), height, width), np.nan, dtype="float32")
        if kept:
            buf = np.empty((len(kept), height, width), dtype="float32")
            for b, (_, code) in enumerate(S2_BANDS):
                for i, (item, bits) in enumerate(kept):
                    valid = np.unpackbits(bits, count=height * width).reshape(height, width)
                    dn = _read(item, code, lattice, tile, Resampling.bilinear)
                    refl = np.maximum((dn + np.float32(dn_offset(item))) / np.float32(DN_SCALE), 0)
                    buf[i] = np.where(valid.astype(bool), refl, np.float32(np.nan))
                result[b] = nanmedian_rows(buf)
            del buf
        else:
            logger.warning(
                "%s: no clear Sentinel-2 pixel in %d items; composite is empty", tile, len(items)
            )

    valid_fraction = float(np.isfinite(result).all(axis=0).mean())
    used = [item.id for item, _ in kept]
    write_geotiff(
        dest,
        result,
        lattice.tile_transform(tile),
        lattice.crs,
        nodata=float("nan"),
        descriptions=s2_names,
        tags={
            "MAPPER_TILE": tile,
            "MAPPER_SOURCE": "Sentinel-2 L2A cloud-masked per-pixel median",
            "MAPPER_ITEMS": ",".join(used),
            "MAPPER_ITEM_COUNT": str(len(used)),
            "MAPPER_SCL_MASKED": ",".join(str(c) for c in SCL_MASKED),
            "MAPPER_REFLECTANCE": "(DN + offset) / 10000; offset -1000 from baseline 04.00",
            "MAPPER_SYNTHETIC": "false",
        },
    )
    logger.info(
        "%s: composite of %d items, %.1f %% of pixels valid -> %s",
        tile,
        len(used),
        100 * valid_fraction,
        dest,
    )
    return {"items": summary_items, "used": used, "valid_fraction": valid_fraction}
