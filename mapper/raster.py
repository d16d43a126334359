"""The one place that talks to rasterio/GDAL for reading and writing rasters: opening with one
clear error, checks of a source's CRS and extent, mapper's true/false tags, GDAL's HTTP settings,
and atomic GeoTIFF writes. Warps onto the lattice: :mod:`mapper.warp`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError

from mapper.errors import InputError
from mapper.files import atomic_path

logger = logging.getLogger(__name__)

# GDAL settings for reading over HTTP: bounded retries, no directory listing per open, and no
# wait without end: a connection must open within 30 s, and a transfer that stalls (under 1 byte/s
# for 60 s) is aborted as a failed read (libcurl's own defaults wait forever).
GDAL_HTTP_ENV = {
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_CONNECTTIMEOUT": "30",
    "GDAL_HTTP_LOW_SPEED_TIME": "60",
    "GDAL_HTTP_LOW_SPEED_LIMIT": "1",
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff,.vrt,.jp2",
    # s3:// asset hrefs (/vsis3/) of public buckets are read unsigned: without credentials GDAL
    # refuses them otherwise; a private bucket's reader sets AWS_NO_SIGN_REQUEST=NO and its keys
    "AWS_NO_SIGN_REQUEST": os.environ.get("AWS_NO_SIGN_REQUEST", "YES"),
}


def gdal_reason(exc: BaseException, limit: int = 160) -> str:
    """GDAL's own words for a failure, on one line: rasterio's "Read failed. See previous
    exception for details." hides them in the chained exception."""
    cause = exc.__cause__ or exc.__context__
    text = str(cause) if cause is not None and str(cause) else str(exc)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a raster for reading; a missing, truncated or non-raster file is one InputError."""
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        local = not str(path).startswith("/vsi") and "://" not in str(path)
        if local and not Path(path).exists():
            raise InputError(
                f"{path}: not found; check the path, or make the file first (the workflow's "
                "target that writes it)"
            ) from None
        raise InputError(
            f"{path}: cannot be read as a raster ({gdal_reason(exc)}); the file is damaged or "
            "truncated, or not a raster: re-fetch it if it is a source, rebuild it if a stage "
            "made it"
        ) from None


def tag_is_true(tags: dict[str, str], key: str) -> bool:
    """Whether a raster's ``key`` tag (mapper's MAPPER_SYNTHETIC, MAPPER_EMPTY) says true."""
    return str(tags.get(key, "")).lower() == "true"


def any_synthetic(paths: list[Path]) -> bool:
    """True when any of the rasters says it is synthetic (tag MAPPER_SYNTHETIC=true)."""
    for p in paths:
        with open_raster(p) as src:
            if tag_is_true(src.tags(), "MAPPER_SYNTHETIC"):
                return True
    return False


@contextmanager
def reading(name: object, fix: str, files: list[Path] | tuple[()] = ()) -> Iterator[None]:
    """Reads of a raster opened before (its header was fine) whose blocks turn out damaged or
    truncated: one InputError with GDAL's reason and ``fix``, naming the file of ``files`` (those
    behind a VRT) whose name GDAL's reason gives, else ``name``."""
    try:
        yield
    except RasterioIOError as exc:
        reason = gdal_reason(exc, 240)
        named = files_named(reason, files)
        if len(named) > 1:  # tiles of one id from several models or resolutions
            named = [f"{name}, one of {' and '.join(named)}"]
        raise InputError(f"{named[0] if named else name}: damaged or truncated, read failed "
                         f"({reason}); {fix}") from None


def files_named(reason: str, files: Sequence[str | Path]) -> list[str]:
    """The ``files`` that GDAL's ``reason`` names: it gives a file behind a VRT by its base name
    ("<name>, band ...")."""
    return [str(f) for f in files if f"{Path(f).name}, band" in reason]


WRITE_ERRORS = (RasterioIOError, CPLE_BaseError)
"""What a failed GDAL write raises (a full disk: "TIFFAppendToStrip:Write error"; a folder not
writable): rasterio's RasterioIOError around GDAL's error, or GDAL's own ``CPLE_*`` error
(``rasterio.shutil.copy``), which is no RasterioIOError."""


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Writes of the raster ``path`` (or of the files that become it): a GDAL write failure is one
    InputError naming ``path`` and the fix, not a traceback, nor a read failure of the inputs
    (:func:`reading` around the writes would blame an input file)."""
    try:
        yield
    except WRITE_ERRORS as exc:
        raise InputError(
            f"{path}: write failed ({gdal_reason(exc)}); free disk space in {Path(path).parent} "
            "(or make that folder writable) and run the same target again"
        ) from None


def check_written(path: str | Path, name: str | Path | None = None) -> None:
    """Open the raster ``path`` just written: rasterio does not report a write that GDAL fails
    when it closes the file (it writes the last cached blocks and the header then), so a full
    disk may leave a file whose header does not read. Such a file is deleted, and is one
    InputError as :func:`writing` words it, naming ``name`` (default ``path``)."""
    try:
        with writing(name or path):
            rasterio.open(path).close()
    except InputError:
        Path(path).unlink(missing_ok=True)
        raise


def check_crs(src: rasterio.DatasetReader, path: str | Path) -> None:
    if src.crs is None:
        raise InputError(
            f"{path}: has no coordinate reference system; assign one "
            "(e.g. gdal_edit.py -a_srs EPSG:xxxx)"
        )


def extent_in(src: rasterio.DatasetReader, crs: str | CRS) -> tuple[float, ...] | None:
    """The raster's extent (left, bottom, right, top) in ``crs`` (densified edges); None where
    PROJ cannot transform it (e.g. "latitudes" of a million degrees: metres under a geographic
    label)."""
    from rasterio.warp import transform_bounds

    try:
        with rasterio.Env(CPL_LOG_ERRORS="OFF"):
            bounds = transform_bounds(src.crs, CRS.from_user_input(crs), *src.bounds,
                                      densify_pts=21)
    except Exception:  # noqa: BLE001 - PROJ/GDAL raise several types for impossible coordinates
        return None
    return bounds if all(np.isfinite(bounds)) else None


def check_overlap(
    src: rasterio.DatasetReader,
    path: str | Path,
    bounds: tuple[float, float, float, float],
    crs: str,
    where: str,
) -> None:
    """InputError unless the raster's extent meets ``bounds`` (left, bottom, right, top in ``crs``).

    A source that lies nowhere near the area it is used for is almost always a wrong CRS label
    (a DEM in metres labelled EPSG:4326) or a file of another place; either way warping it would
    quietly give nodata, so it is refused with the extents and the likely fix.
    """
    dst = CRS.from_user_input(crs)
    found = extent_in(src, dst)
    left, bottom, right, top = bounds
    if found is not None and not (
        found[2] <= left or found[0] >= right or found[3] <= bottom or found[1] >= top
    ):
        return
    sl, sb, sr, st = src.bounds
    label = src.crs.to_string() if src.crs.to_epsg() is None else f"EPSG:{src.crs.to_epsg()}"

    def fmt(*values: float) -> str:
        return ", ".join(f"{v:.0f}" if abs(v) >= 1000 else f"{v:.6g}" for v in values)

    extent = f"extent ({fmt(sl, sb, sr, st)} in {label})"
    target = f"{where} ({fmt(left, bottom, right, top)} in {crs})"
    if src.crs.is_geographic and not (-540 <= sl <= sr <= 540 and -90 <= sb <= st <= 90):
        hint = (f"its coordinates are not degrees although {label} is geographic, so the CRS "
                "label is wrong; assign the right one (gdal_edit.py -a_srs EPSG:xxxx)")
    else:
        hint = (f"check that the file is for this area and that its CRS {label} is right "
                "(a wrong label is fixed with gdal_edit.py -a_srs EPSG:xxxx)")
    raise InputError(f"{path}: its {extent} does not overlap {target}; {hint}")


@contextmanager
def geotiff_writer(
    path: str | Path,
    *,
    height: int,
    width: int,
    count: int,
    dtype: str | np.dtype,
    transform: Affine,
    crs: str,
    nodata: float | None = None,
    blocksize: int = 256,
    predictor: int | None = None,
) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a new tiled, DEFLATE-compressed GeoTIFF to be written piece by piece (bands, windows).

    The file appears at ``path`` only when the ``with`` block ends without an error (atomic rename),
    so a stage can stream a large output in bounded memory and still never leave a partial file.
    Tiles are ``blocksize`` square when the raster is at least that large (and a multiple of 16);
    more than 4 bands are stored band-interleaved, so writing one band touches only its blocks.
    """
    dtype = np.dtype(dtype)
    if predictor is None:
        predictor = 3 if np.issubdtype(dtype, np.floating) else 2
    tiled = height >= blocksize and width >= blocksize and blocksize % 16 == 0
    profile = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": count,
        "dtype": dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": predictor,
        "interleave": "pixel" if count <= 4 else "band",
    }
    if tiled:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    with atomic_path(path) as tmp:
        with writing(path):
            dst = rasterio.open(tmp, "w", **profile)
        with dst:
            yield dst
        check_written(tmp, path)  # GDAL writes the header at close and does not say if it failed


def write_geotiff(
    path: str | Path,
    data: np.ndarray,
    transform: Affine,
    crs: str,
    *,
    nodata: float | None = None,
    descriptions: list[str] | None = None,
    tags: dict[str, str] | None = None,
    blocksize: int = 256,
    predictor: int | None = None,
) -> None:
    """Write a tiled, DEFLATE-compressed GeoTIFF atomically. ``data`` is [bands, rows, cols]. A
    failed write (a full disk) is one InputError naming ``path`` and leaves no file there."""
    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    with geotiff_writer(
        path,
        height=height,
        width=width,
        count=count,
        dtype=data.dtype,
        transform=transform,
        crs=crs,
        nodata=nodata,
        blocksize=blocksize,
        predictor=predictor,
    ) as dst, writing(path):  # a full disk: one error naming the file, not a traceback
        dst.write(data)
        if descriptions:
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
        if tags:
            dst.update_tags(**tags)
    logger.debug("wrote %s (%d bands, %dx%d)", path, count, height, width)


# -- single-band rasters held in memory (members of zip archives) -------------------------------
class GridSpec:
    """A raster's grid: CRS (WKT), affine transform and size; equal when all three are."""

    def __init__(self, crs: str, transform: Affine, width: int, height: int) -> None:
        self.crs, self.transform, self.width, self.height = crs, transform, width, height

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GridSpec) and (
            (self.width, self.height) == (other.width, other.height)
            and self.transform.almost_equals(other.transform, precision=1e-6)
            and CRS.from_wkt(self.crs) == CRS.from_wkt(other.crs)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value object: compare only

    def describe(self) -> str:
        t = self.transform
        return (f"{self.width}x{self.height} px of {t.a:g} x {-t.e:g} from ({t.c:g}, {t.f:g}) in "
                f"{CRS.from_wkt(self.crs).to_string()}")  # fmt: skip


def decode_single_band(data: bytes, name: str) -> tuple[np.ndarray, GridSpec, float | None]:
    """Band 1 of a raster file held in memory (e.g. a GeoTIFF read from a zip member): its values
    (the file's dtype), grid and nodata. ``name`` is what an InputError names."""
    from rasterio.io import MemoryFile

    try:
        with MemoryFile(data) as mem, mem.open() as src:
            if src.crs is None:
                raise InputError(f"{name}: the raster has no CRS; use the archive as published")
            grid = GridSpec(src.crs.to_wkt(), src.transform, src.width, src.height)
            return src.read(1), grid, src.nodata
    except RasterioIOError as exc:
        raise InputError(
            f"{name}: cannot be read as a raster ({gdal_reason(exc)}); the archive is damaged: "
            "delete it and fetch it again"
        ) from None
