"""GDAL VRTs: a mosaic over a region's stacks (:func:`write_vrt`) and the one VRT writer
(:func:`write_vrt_file`) every VRT of the package uses.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError

from mapper.errors import InputError
from mapper.files import atomic_path
from mapper.raster import check_crs, open_raster, tag_is_true

logger = logging.getLogger(__name__)


GDAL_TYPES = {"float32": "Float32", "float64": "Float64", "uint8": "Byte", "int8": "Int8",
              "uint16": "UInt16", "int16": "Int16", "int32": "Int32", "uint32": "UInt32"}
"""GDAL's name of each numpy data type a VRT band may have."""


@dataclass(frozen=True)
class VrtSource:
    """Band ``band`` of raster ``path``, whole (``width`` x ``height`` px), placed at pixel
    (``xoff``, ``yoff``) of the VRT. ``path`` is written as given: relative to the VRT's folder
    when ``relative``, else a full path or GDAL name (``/vsicurl/https://...``). ``block``, the
    file's (rows, cols) block shape, lets GDAL plan reads without opening the file."""

    path: str
    band: int
    width: int
    height: int
    xoff: int = 0
    yoff: int = 0
    relative: bool = False
    block: tuple[int, int] | None = None
    nodata: float | None = None
    """The file's nodata, when pixels of that value must not be drawn (a ComplexSource)."""


@dataclass(frozen=True)
class VrtBand:
    """One band of a VRT: its sources (later ones drawn over earlier ones) and what it says
    about itself. ``description`` None writes no description; a colour table goes with
    ``ColorInterp`` Palette."""

    sources: list[VrtSource]
    description: str | None = None
    nodata: float | None = None
    units: str | None = None
    colormap: dict[int, tuple[int, ...]] | None = None


def write_vrt_file(
    path: str | Path,
    *,
    width: int,
    height: int,
    crs: CRS,
    transform: Affine,
    dtype: str,
    bands: Sequence[VrtBand],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a GDAL VRT of ``bands`` on the grid ``width`` x ``height`` px, ``transform`` (north-up,
    GDAL's pixel-corner convention) in ``crs``; every band of numpy type ``dtype`` (a key of
    :data:`GDAL_TYPES`). The XML is built directly (no GDAL ``BuildVRT``) and written atomically.
    """
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    srs = ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping=_axis_mapping(crs))
    srs.text = crs.to_wkt()
    gt = ", ".join(repr(float(v)) for v in transform.to_gdal())
    ET.SubElement(root, "GeoTransform").text = gt
    if metadata:
        meta = ET.SubElement(root, "Metadata")
        for key, value in metadata.items():
            ET.SubElement(meta, "MDI", key=key).text = value
    gdal_type = GDAL_TYPES[dtype]
    for b, band in enumerate(bands, start=1):
        _band_element(root, b, band, gdal_type)
    ET.indent(root)
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=False)
    return Path(path)


def _axis_mapping(crs: CRS) -> str:
    """GDAL's ``dataAxisToSRSAxisMapping`` for a geotransform in x = east, y = north order (as
    rasterio's transforms are): "2,1" when the CRS names its northing or latitude axis first."""
    first = pyproj.CRS.from_wkt(crs.to_wkt()).axis_info[0].direction.lower()
    return "2,1" if first in ("north", "south") else "1,2"


def _band_element(root: ET.Element, b: int, band: VrtBand, gdal_type: str) -> None:
    """Band ``b`` (1-based) of a VRT: its properties, then its sources."""
    element = ET.SubElement(root, "VRTRasterBand", dataType=gdal_type, band=str(b))
    if band.description is not None:
        ET.SubElement(element, "Description").text = band.description
    if band.nodata is not None:
        ET.SubElement(element, "NoDataValue").text = _nodata_text(band.nodata)
    if band.units:
        ET.SubElement(element, "UnitType").text = band.units
    if band.colormap:
        ET.SubElement(element, "ColorInterp").text = "Palette"
        table = ET.SubElement(element, "ColorTable")
        for _, rgba in sorted(band.colormap.items()):
            ET.SubElement(table, "Entry", **{f"c{i + 1}": str(v) for i, v in enumerate(rgba)})
    for source in band.sources:
        src = ET.SubElement(element, "SimpleSource" if source.nodata is None else "ComplexSource")
        ET.SubElement(src, "SourceFilename",
                      relativeToVRT="1" if source.relative else "0").text = source.path
        ET.SubElement(src, "SourceBand").text = str(source.band)
        if source.block is not None:
            by, bx = source.block
            ET.SubElement(
                src, "SourceProperties", RasterXSize=str(source.width),
                RasterYSize=str(source.height), DataType=gdal_type,
                BlockXSize=str(bx), BlockYSize=str(by),
            )
        size = {"xSize": str(source.width), "ySize": str(source.height)}
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", **size)
        ET.SubElement(src, "DstRect", xOff=str(source.xoff), yOff=str(source.yoff), **size)
        if source.nodata is not None:
            ET.SubElement(src, "NODATA").text = _nodata_text(source.nodata)


def _nodata_text(value: float) -> str:
    if np.isnan(value):
        return "nan"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class _Tile:
    """What a VRT mosaic needs to know of one tile file."""

    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    descriptions: list[str | None]
    units: list[str | None]
    block: tuple[int, int]
    nodata: float | None
    colormap: dict[int, tuple[int, ...]] | None
    synthetic: bool


def _read_tile(path: Path) -> _Tile:
    with open_raster(path) as ds:
        check_crs(ds, path)
        return _Tile(
            path=path,
            crs=ds.crs,
            transform=ds.transform,
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            descriptions=list(ds.descriptions),
            units=list(ds.units),
            block=ds.block_shapes[0],
            nodata=ds.nodata,
            colormap=_colormap(ds),
            synthetic=tag_is_true(ds.tags(), "MAPPER_SYNTHETIC"),
        )


def _colormap(ds: rasterio.DatasetReader) -> dict[int, tuple[int, ...]] | None:
    try:
        return ds.colormap(1)
    except ValueError:  # no colour table
        return None


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (np.isnan(a) and np.isnan(b)) or a == b


def _check_tiles_agree(tiles: list[_Tile], fix: str) -> None:
    """InputError naming the first tile whose CRS, pixel size, bands, type or nodata differ
    from the first tile's, or whose data type a VRT cannot hold."""
    first = tiles[0]
    res = first.transform.a
    for tile in tiles:
        t = tile.transform
        same = (
            tile.crs == first.crs
            and abs(t.a - res) < 1e-9
            and abs(t.e + res) < 1e-9
            and t.b == 0
            and t.d == 0
            and tile.count == first.count
            and tile.descriptions == first.descriptions
            and tile.dtype == first.dtype
            and _same_nodata(tile.nodata, first.nodata)
        )
        if not same:
            raise InputError(
                f"{tile.path}: CRS, pixel size, bands, data type or nodata differ from "
                f"{first.path}; {fix}"
            )


def _mosaic_grid(tiles: list[_Tile],
                 fix: str) -> tuple[Affine, int, int, list[tuple[int, int]]]:
    """The grid of the tiles' bounding box (transform, width, height) and each tile's pixel
    offset (column, row) in it; InputError for a tile off the first tile's pixel lattice."""
    first = tiles[0]
    res = first.transform.a
    left = min(t.transform.c for t in tiles)
    top = max(t.transform.f for t in tiles)
    right = max(t.transform.c + t.width * res for t in tiles)
    bottom = min(t.transform.f - t.height * res for t in tiles)
    width = int(round((right - left) / res))
    height = int(round((top - bottom) / res))
    offsets = []
    for tile in tiles:
        xoff = (tile.transform.c - left) / res
        yoff = (top - tile.transform.f) / res
        if abs(xoff - round(xoff)) > 1e-6 or abs(yoff - round(yoff)) > 1e-6:
            raise InputError(
                f"{tile.path}: not aligned on the pixel lattice of {first.path}; {fix}"
            )
        offsets.append((int(round(xoff)), int(round(yoff))))
    return Affine(res, 0.0, left, 0.0, -res, top), width, height, offsets


def _vrt_name(path: Path, out_dir: Path) -> tuple[str, bool]:
    """How a VRT in ``out_dir`` names ``path``: relative when possible, and whether it is."""
    target = path.resolve()
    try:
        return os.path.relpath(target, out_dir), True
    except ValueError:  # another drive
        return str(target), False


def _mosaic_bands(
    tiles: list[_Tile], offsets: list[tuple[int, int]], out_dir: Path
) -> list[VrtBand]:
    """Every band of the mosaic: the first tile's band properties, one source per tile."""
    first = tiles[0]
    names = [_vrt_name(tile.path, out_dir) for tile in tiles]
    return [
        VrtBand(
            sources=[
                VrtSource(name, b, tile.width, tile.height, xoff, yoff, relative, tile.block)
                for tile, (name, relative), (xoff, yoff) in zip(tiles, names, offsets, strict=True)
            ],
            description=first.descriptions[b - 1] or "",
            nodata=first.nodata,
            units=first.units[b - 1],
            colormap=first.colormap if b == 1 else None,
        )
        for b in range(1, first.count + 1)
    ]


def _stack_paths(stacks: Mapping[str, str | Path] | Iterable[str | Path]) -> list[Path]:
    items = stacks.values() if isinstance(stacks, Mapping) else stacks
    return sorted({Path(p) for p in items})


STACKS_FIX = "a VRT needs stacks of one region and lattice"
"""What to do when the files of :func:`write_vrt` disagree, for stacks (its default)."""


def write_vrt(
    stacks: Mapping[str, str | Path] | Iterable[str | Path], out_path: str | Path,
    fix: str = STACKS_FIX,
) -> Path:
    """Write a GDAL VRT mosaic of stack files (any lattice-aligned tiles of one region).

    The VRT's grid is the bounding box of the stacks on their shared 10 m lattice; each stack is a
    ``SimpleSource`` (paths relative to the VRT when possible) placed by its geotransform; pixels
    without a stack are the files' nodata (NaN for stacks). Band descriptions, units, nodata and a
    colour table of band 1 come from the files, which must agree. Written as XML directly from the
    files' known geometry (no GDAL ``BuildVRT`` needed), atomically. Works for any set of aligned
    single-grid tiles (e.g. predicted map tiles), not only stacks; ``fix`` ends the error of
    files that disagree (what the caller's user should do).
    """
    out_path = Path(out_path)
    paths = _stack_paths(stacks)
    if not paths:
        raise InputError(f"{out_path}: no stack files given; pass at least one stack GeoTIFF")
    tiles = [_read_tile(path) for path in paths]
    _check_tiles_agree(tiles, fix)
    transform, width, height, offsets = _mosaic_grid(tiles, fix)
    first = tiles[0]
    if first.dtype not in GDAL_TYPES:
        raise InputError(f"{first.path}: data type {first.dtype} is not supported in a VRT")
    write_vrt_file(
        out_path,
        width=width,
        height=height,
        crs=first.crs,
        transform=transform,
        dtype=first.dtype,
        bands=_mosaic_bands(tiles, offsets, out_path.resolve().parent),
        metadata={"MAPPER_SYNTHETIC": str(any(t.synthetic for t in tiles)).lower()},
    )
    logger.info("wrote %s over %d stacks (%d x %d px)", out_path, len(tiles), width, height)
    return out_path


# -- the files a VRT given as a source reads ------------------------------------------------------


def vrt_members(path: str | Path, crs: str = "EPSG:3338"
                ) -> list[tuple[str, tuple[float, float, float, float] | None]]:
    """The local files a VRT reads (its ``SourceFilename`` elements, relative ones resolved
    against the VRT's folder, in order, each once), each with its extent in ``crs`` grown by
    two of its pixels (a resampling kernel's reach), or None when it cannot be read (so that a
    caller keeps it: the job that reads it names it). Files behind ``/vsi`` paths or URLs are
    left out: nothing local to watch. Memoised per VRT file and its modification time and size."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(crs))
    if key not in _MEMBERS:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise InputError(f"{path}: not a VRT GDAL can read ({exc}); fix or rebuild it "
                             "(gdalbuildvrt)") from None
        names: dict[str, None] = {}
        for element in root.iter("SourceFilename"):
            name = (element.text or "").strip()
            if not name or name.startswith("/vsi") or "://" in name:
                continue
            if element.get("relativeToVRT", "0") == "1" and not os.path.isabs(name):
                name = os.path.normpath(os.path.join(path.parent, name))
            names[name] = None
        _MEMBERS[key] = [(name, _extent_in(name, crs)) for name in names]
    return _MEMBERS[key]


_MEMBERS: dict[tuple, list[tuple[str, tuple[float, float, float, float] | None]]] = {}


def _extent_in(path: str, crs: str) -> tuple[float, float, float, float] | None:
    from rasterio.warp import transform_bounds

    try:
        with rasterio.open(path) as ds:
            if ds.crs is None:
                return None
            dx, dy = 2 * abs(ds.res[0]), 2 * abs(ds.res[1])
            left, bottom, right, top = ds.bounds
            return transform_bounds(ds.crs, crs, left - dx, bottom - dy, right + dx,
                                    top + dy, densify_pts=21)
    except RasterioError:
        return None


def vrt_members_over(path: str | Path, bounds: tuple[float, float, float, float],
                     crs: str = "EPSG:3338", _within: tuple[str, ...] = ()) -> list[str]:
    """The files of :func:`vrt_members` whose extent meets ``bounds`` (left, bottom, right, top
    in ``crs``), and those whose extent is unknown. A member that is itself a VRT (``.vrt``)
    brings its own members over ``bounds`` after it, at any depth (a VRT that names a VRT it is
    read from is left out), so a file corrected behind a VRT of VRTs is seen too."""
    left, bottom, right, top = bounds
    within = (*_within, str(Path(path).resolve()))
    found: dict[str, None] = {}
    for name, ext in vrt_members(path, crs):
        if ext is not None and not (ext[0] < right and ext[2] > left and ext[1] < top
                                    and ext[3] > bottom):
            continue
        if str(Path(name).resolve()) in within:
            continue
        found[name] = None
        if name.lower().endswith(".vrt") and os.path.isfile(name):
            found.update(dict.fromkeys(vrt_members_over(name, bounds, crs, within)))
    return list(found)


def source_vrt_members(region: Any, tile: str) -> list[str]:
    """The files behind ``region``'s sources given as a VRT (kind ``file``, a ``.vrt`` path) that
    the stack of ``tile`` reads: those whose extent meets its DEM window (the tile grown by the
    terrain and hydrology halos, a superset of what the Sentinel-2 and climate warps read). A
    VRT that is not there gives none (the source's own input names it)."""
    from mapper.sources.cells import tile_dem_bounds

    vrts = [s["path"] for s in (region.settings["sources"][name]
                                for name in ("sentinel2", "dem", "climate"))
            if s["kind"] == "file" and s["path"].lower().endswith(".vrt")
            and os.path.exists(s["path"])]
    if not vrts:
        return []
    bounds = tile_dem_bounds(region, [tile])[0]
    return [m for vrt in vrts for m in vrt_members_over(vrt, bounds, region.lattice.crs)]
