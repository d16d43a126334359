"""The one place that talks to rasterio/GDAL for reading, warping and writing rasters.

Warps are made so that a pixel's value does not depend on how the lattice is cut into tiles:
GDAL's default approximate transformer (0.125 px error) and its per-chunk kernel scaling both make a
tile's pixels depend on the tile's extent. We warp through ``WarpedVRT`` with ``tolerance=1e-9``
(exact transformer) and the warper options ``XSCALE``/``YSCALE`` fixed at the nominal ratio of
destination to source resolution (never per window: per source in :func:`warp_to_grid`, per
fixed lattice block in :func:`warp_lattice_window`). ``gdalwarp -et 0 -wo XSCALE=.. -wo YSCALE=..``
does the same. What remains depends on the extent only in GDAL's arithmetic (about 1e-12,
relative); :func:`warp_lattice_window` removes that too by warping fixed blocks of the lattice.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

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
        named = [str(f) for f in files if f"{Path(f).name}, band" in reason]  # GDAL: base name
        if len(named) > 1:  # tiles of one id from several models or resolutions
            named = [f"{name}, one of {' and '.join(named)}"]
        raise InputError(f"{named[0] if named else name}: damaged or truncated, read failed "
                         f"({reason}); {fix}") from None


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


NOMINAL_SCALE_SNAP = 0.02
"""Measured resolution ratios within this fraction of 1 count as equal resolution (scale 1)."""


def nominal_scale(src_res: float, dst_res: float) -> float:
    """GDAL's XSCALE/YSCALE for a warp from ``src_res`` to ``dst_res`` (same units).

    GDAL's factor is destination pixels per source pixel: 0.5 for a 5 m DEM onto 10 m (the kernel
    widens to cover the source pixels), capped at 1 for equal resolution and for upsampling.
    ``src_res`` is measured in the destination CRS, so a 10 m UTM pixel measures 9.99-10.01 m in
    Alaska Albers (map scale factors): ratios within :data:`NOMINAL_SCALE_SNAP` of 1 are snapped to
    1, so that a 10 m source onto the 10 m lattice warps exactly as ``gdalwarp -wo XSCALE=1``.
    """
    if dst_res <= 0:
        return 1.0
    ratio = src_res / dst_res
    if ratio >= 1.0 - NOMINAL_SCALE_SNAP:
        return 1.0
    return round(ratio, 3)


def _source_res_in_dst_units(src: rasterio.DatasetReader, dst_crs: CRS,
                             at: tuple[float, float] | None = None) -> float:
    """Approximate size of one source pixel in the destination CRS: at the destination point
    ``at`` (x, y in ``dst_crs``), else at the source's centre."""
    from rasterio.warp import transform as transform_xy

    left, bottom, right, top = src.bounds
    cx, cy = (left + right) / 2, (bottom + top) / 2
    if at is not None:
        (sx,), (sy,) = transform_xy(dst_crs, src.crs, [at[0]], [at[1]])
        if math.isfinite(sx) and math.isfinite(sy):
            cx, cy = sx, sy
    rx, ry = abs(src.transform.a), abs(src.transform.e)
    xs, ys = transform_xy(src.crs, dst_crs, [cx, cx + rx, cx], [cy, cy, cy + ry])
    dx = float(np.hypot(xs[1] - xs[0], ys[1] - ys[0]))
    dy = float(np.hypot(xs[2] - xs[0], ys[2] - ys[0]))
    return float(np.sqrt(dx * dy))


def check_crs(src: rasterio.DatasetReader, path: str | Path) -> None:
    if src.crs is None:
        raise InputError(
            f"{path}: has no coordinate reference system; assign one "
            "(e.g. gdal_edit.py -a_srs EPSG:xxxx)"
        )


def _bounds_in(src: rasterio.DatasetReader, crs: CRS) -> tuple[float, ...] | None:
    """The raster's extent in ``crs`` (densified edges); None where PROJ cannot transform it
    (e.g. "latitudes" of a million degrees: metres under a geographic label)."""
    from rasterio.warp import transform_bounds

    try:
        with rasterio.Env(CPL_LOG_ERRORS="OFF"):
            bounds = transform_bounds(src.crs, crs, *src.bounds, densify_pts=21)
    except Exception:  # noqa: BLE001 - PROJ/GDAL raise several types for impossible coordinates
        return None
    return bounds if all(np.isfinite(bounds)) else None


def extent_in(src: rasterio.DatasetReader, crs: str | CRS) -> tuple[float, ...] | None:
    """The raster's extent (left, bottom, right, top) in ``crs``; None where PROJ cannot
    transform it."""
    return _bounds_in(src, CRS.from_user_input(crs))


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
    found = _bounds_in(src, dst)
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


def warp_to_grid(
    path: str | Path,
    dst_crs: str,
    dst_transform: Affine,
    dst_shape: tuple[int, int],
    resampling: Resampling = Resampling.bilinear,
    indexes: list[int] | None = None,
    src_nodata: float | None = None,
) -> np.ndarray:
    """Warp ``path`` to the grid ``(dst_transform, dst_shape)`` in ``dst_crs``; float32, NaN nodata.

    A pixel's value agrees with a warp of any other extent to about 1e-12 (relative), not always
    to the last float32 bit: see :func:`warp_lattice_window` for values that are exact.
    """
    with _open_for_warp(path) as src:
        crs, scale = _warp_grid_settings(src, dst_crs, abs(dst_transform.a))
        return _warp_open(src, path, crs, scale, dst_transform, dst_shape, resampling, indexes,
                          src_nodata)


WARP_BLOCK_PX = 128
"""Side of the fixed blocks of the lattice that :func:`warp_lattice_window` warps one by one."""


def warp_lattice_window(
    path: str | Path,
    dst_crs: str,
    grid_transform: Affine,
    window: Window,
    resampling: Resampling = Resampling.bilinear,
    indexes: list[int] | None = None,
    src_nodata: float | None = None,
    block_px: int = WARP_BLOCK_PX,
    band_nodata: bool = False,
) -> np.ndarray:
    """Warp ``path`` onto ``window`` of a grid (``grid_transform``: the transform of the grid's
    pixel (0, 0), e.g. the lattice's); float32, NaN nodata, shape (bands, height, width).

    GDAL's warp arithmetic depends on the extent it is asked for: one pixel warped as part of
    two different extents differs by about 1e-12 (relative), and that rounds to another float32
    at about one pixel in a million (seen on the demo's climate, upsampled from 1 km). So each
    pixel is always computed as part of the same fixed block of the grid (``block_px`` square,
    aligned to pixel (0, 0)): the blocks meeting ``window`` are warped one by one and cut to it.
    A pixel's value is then a function of the pixel alone, whatever the tile size, strip or
    halo; the cost is the blocks' overhang at the window's edges. The source is opened once.
    Each block's XSCALE/YSCALE is the nominal ratio measured at the block's centre, not at the
    file's: a geographic source's pixel narrows northward (3DEP 1/3": 6.8 m at 64.5 N, 6.7 m at
    65 N), so a file's centre, which depends on the files joined for a tile, would make a
    pixel's kernel depend on the tile.

    GDAL counts a source pixel as nodata where all its bands are (its default for files whose
    bands all declare nodata), so a band's own hole is warped in as its fill value (-9999 into
    its neighbours). ``band_nodata`` makes each band's nodata its own (``UNIFIED_SRC_NODATA=NO``)
    for files whose bands miss different pixels; where they miss the same ones the default is
    kept (as ``gdalwarp`` does it: the two differ by a few pixels at the edge of a hole).
    """
    b = block_px
    row0, col0 = int(window.row_off), int(window.col_off)
    height, width = int(window.height), int(window.width)
    out = None
    with _open_for_warp(path) as src:
        crs = CRS.from_user_input(dst_crs)
        res = abs(grid_transform.a)
        for br in range(math.floor(row0 / b), math.ceil((row0 + height) / b)):
            for bc in range(math.floor(col0 / b), math.ceil((col0 + width) / b)):
                at = grid_transform @ ((bc + 0.5) * b, (br + 0.5) * b)  # the block's centre
                scale = nominal_scale(_source_res_in_dst_units(src, crs, at), res)
                block = _warp_open(
                    src, path, crs, scale, grid_transform @ Affine.translation(bc * b, br * b),
                    (b, b), resampling, indexes, src_nodata, band_nodata,
                )  # fmt: skip
                if out is None:
                    out = np.full((block.shape[0], height, width), np.nan, dtype=np.float32)
                r_lo, r_hi = max(br * b, row0), min((br + 1) * b, row0 + height)
                c_lo, c_hi = max(bc * b, col0), min((bc + 1) * b, col0 + width)
                out[:, r_lo - row0:r_hi - row0, c_lo - col0:c_hi - col0] = block[
                    :, r_lo - br * b:r_hi - br * b, c_lo - bc * b:c_hi - bc * b
                ]
    return out


@contextmanager
def _open_for_warp(path: str | Path) -> Iterator[rasterio.DatasetReader]:
    src = open_raster(path)
    try:
        check_crs(src, path)
        yield src
    finally:
        src.close()


def _warp_grid_settings(
    src: rasterio.DatasetReader, dst_crs: str, dst_res: float
) -> tuple[CRS, float]:
    """The destination CRS and the XSCALE/YSCALE of warps of ``src`` at ``dst_res``."""
    crs = CRS.from_user_input(dst_crs)
    return crs, nominal_scale(_source_res_in_dst_units(src, crs), dst_res)


def _warp_open(
    src: rasterio.DatasetReader,
    path: str | Path,
    crs: CRS,
    scale: float,
    dst_transform: Affine,
    dst_shape: tuple[int, int],
    resampling: Resampling,
    indexes: list[int] | None,
    src_nodata: float | None,
    band_nodata: bool = False,
) -> np.ndarray:
    """One WarpedVRT of the open ``src`` onto one grid (see the module docstring)."""
    nodata = src_nodata if src_nodata is not None else src.nodata
    height, width = dst_shape
    vrt_opts: dict[str, object] = {"src_nodata": nodata} if nodata is not None else {}
    if band_nodata:
        vrt_opts["UNIFIED_SRC_NODATA"] = "NO"
    try:
        with WarpedVRT(
            src,
            crs=crs,
            transform=dst_transform,
            width=width,
            height=height,
            resampling=resampling,
            tolerance=1e-9,
            nodata=np.nan,
            dtype="float32",
            XSCALE=scale,
            YSCALE=scale,
            **vrt_opts,
        ) as vrt:
            data = vrt.read(indexes or list(range(1, src.count + 1)), masked=True)
    except RasterioIOError as exc:
        raise InputError(
            f"{path}: damaged or truncated raster, read failed while warping "
            f"({gdal_reason(exc)}); re-fetch the file"
        ) from None
    return np.ma.filled(data.astype("float32"), np.nan)


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
