"""Cloud-Optimized GeoTIFFs of the map products, written through GDAL's COG driver.

A product is made in two steps, both streaming in bounded memory:

1. :func:`raster_writer`: a tiled, DEFLATE-compressed BigTIFF (the "raw" raster) written window
   by window, carrying everything the product declares (nodata, band descriptions, scale/offset,
   units, colour table, metadata tags);
2. :func:`to_cog`: GDAL's COG driver copies it into the final layout (512 px blocks, overviews
   with the product's resampling, main IFD first), and that copy keeps every declaration.

Overview resampling is the product's business, never GDAL's default (CUBIC, or NEAREST for a
palette): AVERAGE for probabilities, MODE for classes; both skip nodata. A product is a
BigTIFF where it might pass 4 GB (``BIGTIFF=IF_SAFER``, which GDAL decides on the uncompressed
size; ``IF_NEEDED`` is ignored with compression): the statewide products are, and a smaller
region's are classic TIFF, which every reader opens. The raw raster a product is made from is
always a BigTIFF (a work file, never handed out).

A product is one file: class names are band metadata inside it (``CLASS_NAMES`` and
``CLASS_<i>``, shown by ``gdalinfo`` and rasterio's ``tags(1)``), not GDAL category names, which a
GeoTIFF can hold only in a ``<file>.aux.xml`` sidecar. QGIS shows the names from the product's
style (``<name>.qml`` beside it, loaded as the layer's default style), STAC readers from the Item.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rasterio
import rasterio.shutil
from affine import Affine

from mapper.errors import InputError
from mapper.files import atomic_path
from mapper.raster import WRITE_ERRORS, check_written, gdal_reason, writing
from mapper.threads import job_threads

logger = logging.getLogger(__name__)

BLOCKSIZE = 512
COMPRESS = "DEFLATE"
MIN_OVERVIEW_PX = 256
"""Overviews are made down to this size (in the larger dimension) at least one level deep."""
PERCENT_NODATA = 255
"""Nodata of the UInt8-percent probability products (values 0..100, scale 0.01)."""


@contextmanager
def raster_writer(
    path: str | Path,
    *,
    width: int,
    height: int,
    count: int,
    dtype: str,
    transform: Affine,
    crs: str,
    nodata: float | None,
    blocksize: int = BLOCKSIZE,
    name: str | Path | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:
    """A new tiled DEFLATE BigTIFF written piece by piece; appears at ``path`` only when complete.

    Tiles are ``blocksize`` square, so writing whole blocks of rows never rewrites a block.
    Integer data use horizontal differencing (predictor 2), floats predictor 3. A failure to
    create or close the file (a full disk) is one InputError naming ``name`` (default ``path``;
    :func:`mapper.raster.writing`); the caller puts its ``dst.write`` calls in ``writing(name)``.
    """
    predictor = 3 if dtype.startswith("float") else 2
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "compress": COMPRESS.lower(),
        "predictor": predictor,
        "bigtiff": "YES",
        "interleave": "band",
    }
    with atomic_path(path) as tmp:
        with writing(name or path):
            dst = rasterio.open(tmp, "w", **profile)
        with dst:
            yield dst
        check_written(tmp, name or path)


def overview_count(width: int, height: int, min_px: int = MIN_OVERVIEW_PX) -> int:
    """Number of 2x overview levels until the larger side is at most ``min_px`` (at least 1)."""
    largest = max(width, height, 1)
    return max(1, math.ceil(math.log2(largest / min_px))) if largest > min_px else 1


def gdal_threads() -> str:
    """GDAL's ``NUM_THREADS`` for compressing a COG: the job's threads (``OMP_NUM_THREADS``, which
    Snakemake sets to the rule's threads, so that a mosaic job uses the CPUs it was scheduled
    with), else every CPU (a command run by hand)."""
    threads = job_threads()
    return str(threads) if threads else "ALL_CPUS"


def to_cog(
    src: str | Path,
    dst: str | Path,
    *,
    resampling: str,
    blocksize: int = BLOCKSIZE,
    compress: str = COMPRESS,
    name: str | Path | None = None,
) -> Path:
    """Copy ``src`` into a Cloud-Optimized GeoTIFF at ``dst`` (atomically) with overviews.

    ``resampling`` is the overview resampling ("AVERAGE" for probabilities, "MODE" or "NEAREST"
    for classes). A ``dst.aux.xml`` left by other software is removed: GDAL would lay its
    statistics or categories over the new file. ``name``: the product that messages name when
    ``src`` and ``dst`` are staged files the user never sees (default ``dst``).
    """
    dst = Path(dst)
    name = Path(name) if name is not None else dst
    with rasterio.open(src) as ds:
        levels = overview_count(ds.width, ds.height)
        size = f"{ds.width} x {ds.height} px, {ds.count} band{'s' if ds.count > 1 else ''}"
    options = {
        "BLOCKSIZE": blocksize,
        "COMPRESS": compress,
        "PREDICTOR": "YES",
        "LEVEL": 6 if compress == "DEFLATE" else 9,
        "BIGTIFF": "IF_SAFER",
        "OVERVIEW_RESAMPLING": resampling,
        "OVERVIEW_COUNT": levels,
        "NUM_THREADS": gdal_threads(),
    }
    # GDAL reports no progress through rasterio: the job's console shows this line meanwhile
    logger.info("writing COG %s (%s, %d overviews)", name, size, levels)
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            rasterio.shutil.copy(str(src), str(tmp), driver="COG", **options)
        except WRITE_ERRORS as exc:  # GDAL's CPLE_* errors (a full disk) are no RasterioIOError
            raise InputError(
                f"{name}: writing the Cloud-Optimized GeoTIFF failed ({gdal_reason(exc)}); "
                f"check the free space on the disk holding {name.parent.resolve()} (and that the "
                "folder is writable) and run again"
            ) from None
        finally:
            # GDAL may write PAM statistics beside the temporary file: the product is one file
            remove_aux(tmp)
        remove_aux(dst)
    logger.info("wrote COG %s (%s overviews x%d, %s)", name, resampling, levels, compress)
    return dst


def remove_aux(*rasters: str | Path | None) -> None:
    """Delete the ``<raster>.aux.xml`` that other software may have left beside each raster
    about to be replaced: GDAL would lay its statistics or categories over the new file."""
    for raster in rasters:
        if raster is not None:
            Path(f"{raster}.aux.xml").unlink(missing_ok=True)


def class_name_tags(names: list[str]) -> dict[str, str]:
    """Band metadata carrying class names inside the GeoTIFF (readable with rasterio's tags)."""
    tags = {"CLASS_NAMES": json.dumps(names)}
    tags.update({f"CLASS_{i}": name for i, name in enumerate(names)})
    return tags
