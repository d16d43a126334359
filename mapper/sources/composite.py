"""A tile's cloud-masked median composite of Sentinel-2 L2A items, read over HTTP range requests.

A tile is composited block by block: the fixed lattice blocks of ``block_px`` (the source's
``block_px``, a divisor of ``tile_px``) each have their own items (chosen per block by
:func:`mapper.sources.stac.items_by_block`) and are warped whole on their own grid, so a pixel's
value depends only on where it lies, identical, bit for bit, at every tile size.

For each item, the scene classification (SCL, 20 m) and the 9 bands of the stack are warped onto
the tile's 10 m lattice grid in EPSG:3338 with :func:`mapper.warp.warp_to_grid` (nearest for SCL,
bilinear for reflectance; exact and independent of the tile cut, so neighbouring composites meet
without seams). GDAL reads only the COG blocks a tile needs (``/vsicurl`` inside a
``rasterio.Env`` with :data:`mapper.raster.GDAL_HTTP_ENV`).

Per item, a pixel is kept only where SCL is not one of :data:`SCL_MASKED` (no data, saturated,
cloud shadow, cloud medium/high probability, thin cirrus, snow/ice) and not outside the scene.
Digital numbers become surface reflectance as ``(DN + offset) / 10000``. As ESA delivers them
(Copernicus, Planetary Computer, Earth Search's ``sentinel-2-c1-l2a``), ``offset`` is -1000 for
processing baseline 04.00 and later (from 25 January 2022) and 0 before; the baseline is read per
item from ``s2:processing_baseline`` (the acquisition date decides only when it is missing). A
``harmonized`` collection has had that offset removed already: Earth Search's ``sentinel-2-l2a``
COGs (``s3://sentinel-cogs``) were converted with it subtracted, so their DNs read as
reflectance x 10000 whatever the baseline, and the ``earthsearch:boa_offset_applied`` flag, wrong
on many items, is ignored either way (the source's ``harmonized`` setting decides). DN 0 is nodata;
reflectance below 0 (dark pixels after the offset) is clipped to 0. The offset per item, and
the check of a harmonised collection's items on their own data: :mod:`mapper.sources.s2_items`.

Items are MGRS granules, and one acquisition (:func:`mapper.sources.stac.acquisition`) can have
several that cover a pixel: neighbouring granules of a pass overlap by about 10 km, and a granule
can be listed again after a reprocessing. An acquisition's granules are first mosaicked, each
pixel and band taken from the first of them (in the search's rank: cloud cover, date, id) that
kept it, so that each acquisition counts once. The composite is the per-pixel median over the
acquisitions that kept the pixel (NaN where none did).

Output: a 9-band float32 GeoTIFF on the tile's grid, bands in the stack's order with the
descriptions of :data:`mapper.bands.S2_BANDS` (``s2_red`` ... ``s2_b12``), nodata NaN, tags naming
the items.

Cost and memory. An exact warp costs about 1 microsecond per destination pixel (the exact
transformer of :mod:`mapper.raster`), so the bands of an item that share a source grid (the four
10 m bands; the five 20 m ones) are stacked in a VRT and warped together: 3 warps per item (SCL,
10 m, 20 m) instead of 10. Items are streamed; SCL masks are kept as one bit per pixel and item.
The reflectance of all kept items is held for a strip of rows at a time, ``[items, 9, rows, W]``
float32 within ``max_buffer_bytes`` (default 2 GiB); a strip's warp equals the same rows of the
whole tile's warp, so the strip size does not change the result. /vsicurl's byte cache is raised
to 1 GiB so that strips find the COG blocks they share already downloaded. The strips are of
one block: at ``alaska``'s 1024 px blocks and 24 items, a row of the buffer is 0.88 MB, so a block
is one strip of 0.9 GB. Peak for a 4096 px tile: that buffer + 0.6 GB result (``9 * H * W * 4``,
the whole tile) + the block's masks and warp outputs (under 0.1 GB) + up to 1 GiB of cached bytes,
about 2.6 GB; the 2 GiB budget splits a block into strips only from 57 items at 1024 px (15 at
2048 px).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from mapper.bands import S2_BANDS
from mapper.errors import ConfigError, InputError
from mapper.grid import Lattice
from mapper.raster import GDAL_HTTP_ENV, write_geotiff
from mapper.sources.s2_items import (
    DN_SCALE,
    SCL_MASKED,
    asset_href,
    gdal_path,
    item_offsets,
    source_error,
)
from mapper.sources.stac import acquisition, cloud_cover
from mapper.vrt import GDAL_TYPES, VrtBand, VrtSource, write_vrt_file
from mapper.warp import warp_to_grid

logger = logging.getLogger(__name__)

MEDIAN_ROWS = 256
MAX_BUFFER_BYTES = 2 << 30
"""Budget (bytes) of the [items, 9, rows, W] float32 buffer; the tile is cut into row strips."""

GDAL_CACHE_ENV = {"CPL_VSIL_CURL_CACHE_SIZE": str(1 << 30)}
"""/vsicurl's cache of downloaded bytes (1 GiB, default 16 MiB), so that the strips of a tile
find the compressed COG blocks they share already fetched."""


def _warp(
    item: pystac.Item,
    what: str,
    source: tuple[str, str],
    lattice: Lattice,
    window: tuple[str, int, int],
    resampling: Resampling,
) -> np.ndarray:
    """Warp every band of ``source`` (GDAL path, href for messages) onto rows ``r0:r1`` of the
    tile; float32 [bands, rows, W], NaN outside the scene and where DN is 0."""
    tile, r0, r1 = window
    tw = lattice.tile_window(tile)
    rows = Window(tw.col_off, tw.row_off + r0, tw.width, r1 - r0)
    path, href = source
    try:
        return warp_to_grid(
            path,
            lattice.crs,
            lattice.window_transform(rows),
            (r1 - r0, lattice.tile_px),
            resampling=resampling,
            src_nodata=0,
        )
    except InputError as exc:
        raise source_error(item, what, href, exc) from None


def _band_groups(item: pystac.Item, vrt_dir: Path) -> list[tuple[list[int], tuple[str, str]]]:
    """The item's 9 bands grouped by source grid: ``(indices in S2_BANDS order, (path, href))``.

    Bands on one grid (the four 10 m bands; the five 20 m ones) are stacked in a VRT and warped
    together: GDAL then computes each destination pixel's source position once per group
    instead of once per band, which is most of the cost of an exact warp.
    """
    groups: dict[tuple, list[tuple[int, str]]] = {}
    for b, (_, code) in enumerate(S2_BANDS):
        href = asset_href(item, code)
        path = gdal_path(href)
        try:
            with rasterio.open(path) as src:
                key = (
                    src.width,
                    src.height,
                    tuple(src.transform)[:6],
                    src.crs.to_wkt(),
                    src.dtypes[0],
                    src.count,
                )
        except (rasterio.errors.RasterioIOError, AttributeError) as exc:
            raise source_error(item, code, href, exc) from None
        groups.setdefault(key, []).append((b, path, href))
    out = []
    for n, (key, members) in enumerate(groups.items()):
        indices = [b for b, _, _ in members]
        if len(members) == 1 or key[4] not in GDAL_TYPES or key[5] != 1:
            out.extend(([b], (p, h)) for b, p, h in members)
            continue
        vrt = _stack_vrt(vrt_dir / f"{n}_{item.id}.vrt", [p for _, p, _ in members], key)
        label = f"{members[0][2]} and {len(members) - 1} more on its grid"
        out.append((indices, (str(vrt), label)))
    return out


def _stack_vrt(path: Path, sources: list[str], key: tuple) -> Path:
    """A VRT stacking single-band rasters (GDAL names) that share one grid (``key`` from
    :func:`_band_groups`), DN 0 as nodata."""
    width, height, transform, crs_wkt, dtype, _ = key
    return write_vrt_file(
        path,
        width=width,
        height=height,
        crs=CRS.from_wkt(crs_wkt),
        transform=Affine(*transform),
        dtype=dtype,
        bands=[VrtBand([VrtSource(p, 1, width, height)], nodata=0) for p in sources],
    )


def nanmedian_rows(stack: np.ndarray, rows: int = MEDIAN_ROWS) -> np.ndarray:
    """Median over axis 0 ignoring NaN (NaN where all are NaN), ``rows`` rows at a time.

    Equal to ``np.nanmedian(stack, axis=0)`` (mean of the two middle values for an even count)
    but several times faster for the few items of a composite: NaN sorts last, so the median of
    the ``k`` valid values of a pixel sits at positions ``(k - 1) // 2`` and ``k // 2``.
    """
    n = stack.shape[0]
    out = np.full(stack.shape[1:], np.nan, dtype="float32")
    for r0 in range(0, stack.shape[1], rows):
        part = np.sort(stack[:, r0 : r0 + rows], axis=0)
        k = n - np.isnan(part).sum(axis=0)
        lo = np.take_along_axis(part, np.maximum((k - 1) // 2, 0)[None], axis=0)[0]
        hi = np.take_along_axis(part, (k // 2)[None], axis=0)[0]
        med = (lo + hi) * np.float32(0.5)
        out[r0 : r0 + rows] = np.where(k > 0, med, np.float32(np.nan))
    return out


def strip_rows(n_items: int, width: int, height: int, max_buffer_bytes: int) -> int:
    """Rows per strip so that the [items, 9, rows, width] float32 buffer fits the budget."""
    per_row = max(n_items, 1) * len(S2_BANDS) * width * 4
    return int(min(height, max(1, max_buffer_bytes // per_row)))


def _clear_masks(
    items: Sequence[pystac.Item], lattice: Lattice, tile: str,
    offsets: Mapping[str, tuple[float, dict[str, Any] | None]],
) -> tuple[list[tuple[pystac.Item, np.ndarray]], list[dict[str, Any]]]:
    """Each item's clear pixels on the tile (SCL not masked): the items with at least one, each
    with its mask packed one bit per pixel along rows, and a summary of every item."""
    height = lattice.tile_shape[0]
    kept: list[tuple[pystac.Item, np.ndarray]] = []
    summary_items: list[dict[str, Any]] = []
    for item in items:
        scl_href = asset_href(item, "SCL")
        scl = _warp(
            item,
            "SCL",
            (gdal_path(scl_href), scl_href),
            lattice,
            (tile, 0, height),
            Resampling.nearest,
        )[0]
        valid = np.isfinite(scl) & ~np.isin(scl, SCL_MASKED)
        fraction = float(valid.mean())
        summary_items.append(
            {
                "id": item.id,
                "acquisition": acquisition(item),
                "datetime": item.datetime.isoformat() if item.datetime else None,
                "cloud_cover": item.properties.get("eo:cloud_cover"),
                "processing_baseline": item.properties.get("s2:processing_baseline"),
                "offset": offsets[item.id][0],
                "offset_check": offsets[item.id][1],
                "clear_fraction": round(fraction, 6),
            }
        )
        if fraction > 0:
            kept.append((item, np.packbits(valid, axis=1)))
        logger.info("%s %s: %.1f %% clear", tile, item.id, 100 * fraction)
    return kept, summary_items


def acquisition_groups(items: Sequence[pystac.Item]) -> list[list[int]]:
    """Indices of ``items`` grouped by acquisition, each group in the items' order, the groups in
    the order of their first item."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(acquisition(item), []).append(i)
    return list(groups.values())


def _median_reflectance(
    kept: list[tuple[pystac.Item, np.ndarray]],
    lattice: Lattice,
    tile: str,
    vrt_dir: Path,
    max_buffer_bytes: int,
    offsets: Mapping[str, tuple[float, dict[str, Any] | None]],
) -> tuple[np.ndarray, int]:
    """The per-pixel median reflectance of the items' clear pixels, [9, H, W] float32 (NaN where
    no item is clear), each acquisition's granules mosaicked first so that it counts once;
    computed in strips of rows within ``max_buffer_bytes``; and the number of strips."""
    height, width = lattice.tile_shape
    result = np.full((len(S2_BANDS), height, width), np.nan, dtype="float32")
    rows = strip_rows(len(kept), width, height, max_buffer_bytes)
    strips = [(r0, min(r0 + rows, height)) for r0 in range(0, height, rows)] if kept else []
    groups = [_band_groups(item, vrt_dir) for item, _ in kept]
    passes = acquisition_groups([item for item, _ in kept])
    leaders = [members[0] for members in passes]
    merged = len(passes) < len(kept)
    buf = np.empty((len(kept), len(S2_BANDS), rows, width), dtype="float32") if kept else None
    for r0, r1 in strips:
        h = r1 - r0
        for i, (item, bits) in enumerate(kept):
            valid = np.unpackbits(bits[r0:r1], axis=1, count=width).astype(bool)
            offset = np.float32(offsets[item.id][0])
            for indices, source in groups[i]:
                what = "/".join(S2_BANDS[b][1] for b in indices)
                dn = _warp(item, what, source, lattice, (tile, r0, r1), Resampling.bilinear)
                refl = np.maximum((dn + offset) / np.float32(DN_SCALE), np.float32(0))
                buf[i, indices, :h] = np.where(valid, refl, np.float32(np.nan))
        for first, *others in passes:  # the acquisition's first granule holds its mosaic
            for j in others:
                np.copyto(buf[first, :, :h], buf[j, :, :h], where=np.isnan(buf[first, :, :h]))
        for b in range(len(S2_BANDS)):
            result[b, r0:r1] = nanmedian_rows(buf[leaders, b, :h] if merged else buf[:, b, :h])
        logger.debug("%s: rows %d-%d done", tile, r0, r1)
    return result, len(strips)


def reflectance_tag(used: list[str], offsets: Mapping[str, tuple[float, Any]]) -> str:
    """``MAPPER_REFLECTANCE``: the formula and how many of the used items took each offset (a
    harmonized collection's take 0 whatever their baseline, unless their own data says not)."""
    counts = Counter(float(offsets[item_id][0]) for item_id in used)
    took = ", ".join(f"{n} item{'s' if n > 1 else ''} with offset {offset:g}"
                     for offset, n in sorted(counts.items()))
    return "(DN + offset) / 10000" + (f": {took}" if took else "")


def _write_composite(
    dest: str | Path, result: np.ndarray, lattice: Lattice, tile: str, used: list[str],
    acquisitions: int, block_px: int, reflectance: str,
) -> None:
    write_geotiff(
        dest,
        result,
        lattice.tile_transform(tile),
        lattice.crs,
        nodata=float("nan"),
        descriptions=[name for name, _ in S2_BANDS],
        tags={
            "MAPPER_TILE": tile,
            "MAPPER_SOURCE": "Sentinel-2 L2A cloud-masked per-pixel median",
            "MAPPER_ITEMS": ",".join(used),
            "MAPPER_ITEM_COUNT": str(len(used)),
            "MAPPER_ACQUISITION_COUNT": str(acquisitions),
            "MAPPER_SCENE_BLOCK_PX": str(block_px),
            "MAPPER_SCL_MASKED": ",".join(str(c) for c in SCL_MASKED),
            "MAPPER_REFLECTANCE": reflectance,
            "MAPPER_SYNTHETIC": "false",
        },
    )


def scene_blocks(lattice: Lattice, tile: str, block_px: int) -> list[tuple[str, Window]]:
    """The scene-selection blocks of ``tile``: ``(block id, window of the block in the tile)``.

    Blocks are the tiles of the lattice cut at ``block_px`` (same origin and resolution), so a
    pixel's block, and with it the scenes of its composite, depend only on where the pixel lies,
    never on ``tile_px``. ``tile_px`` must be a multiple of ``block_px``.
    """
    if block_px <= 0 or lattice.tile_px % block_px:
        raise ConfigError(
            f"tile_px {lattice.tile_px} is not a multiple of the Sentinel-2 source's block_px "
            f"{block_px}; set sources.sentinel2.block_px to a divisor of tile_px in the region file"
        )
    blocks = block_lattice(lattice, block_px)
    tw = lattice.tile_window(tile)
    out = []
    for block in blocks.tiles_in_window(tw):
        bw = blocks.tile_window(block)
        out.append((block, Window(bw.col_off - tw.col_off, bw.row_off - tw.row_off, block_px,
                                  block_px)))
    return out


def block_lattice(lattice: Lattice, block_px: int) -> Lattice:
    """The lattice cut into scene-selection blocks of ``block_px`` (ids like tile ids)."""
    return replace(lattice, tile_px=block_px)


def composite_tile(
    blocks: Mapping[str, Sequence[pystac.Item]],
    lattice: Lattice,
    tile: str,
    dest: str | Path,
    *,
    block_px: int,
    harmonized: bool = False,
    check: bool = True,
    max_buffer_bytes: int = MAX_BUFFER_BYTES,
) -> dict[str, Any]:
    """Write the median composite of ``tile`` to ``dest``, each of its scene-selection blocks
    (:func:`scene_blocks`) from the items ``blocks[block id]``; return a summary.

    Each block is composited as a whole on its own grid, so a tile's composite is exactly the
    blocks' composites side by side: equal, bit for bit, at any ``tile_px`` that is a multiple of
    ``block_px``. ``harmonized``: the items' DNs carry no baseline offset, each item of
    baseline 04.00 or later checked on its data unless ``check`` is off
    (:func:`mapper.sources.s2_items.item_offsets`). The summary has ``blocks`` (per block id:
    per item its id, acquisition, datetime, cloud cover, baseline, offset, the offset check's
    record and the fraction of the block kept by the SCL mask), ``used`` (ids
    that contributed at least one pixel anywhere), ``valid_fraction`` (pixels of the composite
    with a value in every band) and ``strips`` (summed over blocks). With no usable item a block
    is left NaN (ocean, or permanently cloudy) and a warning is logged. The result does not depend
    on ``max_buffer_bytes`` (warps of a strip equal the same rows of a warp of the whole block).
    """
    cut = scene_blocks(lattice, tile, block_px)
    missing = [b for b, _ in cut if b not in blocks]
    if missing:
        raise ValueError(f"{tile}: no item list for block(s) {', '.join(missing)}")
    grid = block_lattice(lattice, block_px)
    result = np.full((len(S2_BANDS), *lattice.tile_shape), np.nan, dtype="float32")
    summary: dict[str, list[dict[str, Any]]] = {}
    used: list[str] = []
    strips = 0
    with rasterio.Env(**GDAL_HTTP_ENV, **GDAL_CACHE_ENV), TemporaryDirectory() as vrt_dir:
        offsets = item_offsets([it for b, _ in cut for it in blocks[b]], harmonized, check)
        for block, win in cut:
            items = blocks[block]
            kept, summary[block] = _clear_masks(items, grid, block, offsets)
            part, n = _median_reflectance(kept, grid, block, Path(vrt_dir), max_buffer_bytes,
                                          offsets)
            rows = slice(win.row_off, win.row_off + block_px)
            result[:, rows, win.col_off : win.col_off + block_px] = part
            strips += n
            used.extend(item.id for item, _ in kept if item.id not in used)
            if not kept:
                logger.warning("%s block %s: no clear Sentinel-2 pixel in %d items; left empty",
                               tile, block, len(items))
    rank = {it.id: (cloud_cover(it), it.datetime, it.id) for b, _ in cut for it in blocks[b]}
    used.sort(key=rank.__getitem__)  # as the search ranks them: cloud cover, date, id
    acquisitions = len({i["acquisition"] for items in summary.values() for i in items
                        if i["id"] in used})
    valid_fraction = float(np.isfinite(result).all(axis=0).mean())
    _write_composite(dest, result, lattice, tile, used, acquisitions, block_px,
                     reflectance_tag(used, offsets))
    logger.info(
        "%s: composite of %d items (%d acquisitions) over %d block(s) in %d strip(s), %.1f %% of "
        "pixels valid -> %s",
        tile,
        len(used),
        acquisitions,
        len(cut),
        strips,
        100 * valid_fraction,
        dest,
    )
    return {"blocks": summary, "used": used, "valid_fraction": valid_fraction, "strips": strips}
