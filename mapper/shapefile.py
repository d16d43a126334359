"""Reading the polygons and attributes of an ESRI Shapefile, loose or inside a zip archive.

Zone layers (:mod:`mapper.zones`) are published as shapefiles (NRCS's MLRA database, NSIDC's
circum-Arctic permafrost map), and none of GDAL's vector bindings (pyogrio, fiona) is a
dependency of mapper: this small reader covers what a zone layer needs, in plain Python.

- ``<name>.shp``: polygon shapes (types 5, 15 and 25; Z and M values are skipped), each part a
  ring; clockwise rings are shells and counter-clockwise rings holes (the format's convention,
  y up), each hole given to the smallest shell that contains it. Null shapes give ``None``.
- ``<name>.dbf``: dBase III attributes; character fields as stripped strings, numeric fields
  (N, F) as int or float (empty: None), logical (L) as bool, others as stripped strings. The
  text encoding is the ``.cpg`` file's when there is one, else UTF-8 with a Latin-1 fallback.
- ``<name>.prj``: the CRS as WKT (required: a zone layer without a CRS cannot be placed).

A path ``archive.zip`` reads the only ``.shp`` in the archive; ``archive.zip`` with ``member``
reads that member (e.g. ``MLRA_52_2022/MLRA_52.shp``).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import shapely
from pyproj import CRS

from mapper.errors import InputError

POLYGON_TYPES = (5, 15, 25)
"""Polygon, PolygonZ, PolygonM: the same 2-D rings first in each record."""


def read_shapefile(
    path: str | Path,
    member: str | None = None,
    within: tuple[tuple[float, float, float, float], CRS] | None = None,
) -> tuple[list[tuple[shapely.Geometry | None, dict[str, Any]]], CRS]:
    """``([(geometry or None, attributes)], crs)`` of a polygon shapefile (module doc).

    ``within``: a box (left, bottom, right, top) and its CRS; shapes whose bounding box misses
    it are given as None without being built (a national layer read for one region). Ignored
    when the box does not map to one box in the file's CRS (e.g. across 180 degrees)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: shapefile not found; fetch it or fix the zone layer's path")
    if path.suffix.lower() == ".zip":
        return _read_zip(path, member, within)
    base = path.with_suffix("")

    def read(suffix: str) -> bytes | None:
        for s in (suffix, suffix.upper()):
            p = base.with_suffix(s)
            if p.is_file():
                return p.read_bytes()
        return None

    return _parse(str(path), read, within)


def _read_zip(path: Path, member: str | None, within: tuple | None) -> tuple[list, CRS]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InputError(f"{path}: not a zip archive; delete it and fetch it again") from None
    with archive:
        names = archive.namelist()
        if member is None:
            shps = [n for n in names if n.lower().endswith(".shp")]
            if len(shps) != 1:
                raise InputError(
                    f"{path}: holds {len(shps)} shapefiles ({', '.join(shps[:5]) or 'none'}); "
                    "name the one to read with the zone layer's 'layer' key"
                )
            member = shps[0]
        if member not in names:
            raise InputError(f"{path}: has no member {member}; fix the zone layer's 'layer' key")
        stem = str(PurePosixPath(member).with_suffix(""))
        lower = {n.lower(): n for n in names}

        def read(suffix: str) -> bytes | None:
            name = lower.get((stem + suffix).lower())
            return archive.read(name) if name else None

        return _parse(f"{path}/{member}", read, within)


def _parse(label: str, read: Callable[[str], bytes | None], within: tuple | None
           ) -> tuple[list, CRS]:
    shp, dbf, prj = read(".shp"), read(".dbf"), read(".prj")
    missing = [s for s, b in ((".shp", shp), (".dbf", dbf), (".prj", prj)) if b is None]
    if missing:
        raise InputError(f"{label}: the shapefile lacks its {', '.join(missing)} file(s); "
                         "fetch all of its parts")
    cpg = read(".cpg")
    encoding = cpg.decode("ascii", "replace").strip() if cpg else None
    if encoding and encoding.isdigit():  # a bare code page, e.g. 1252
        encoding = f"cp{encoding}"
    try:
        crs = CRS.from_wkt(prj.decode("latin-1"))
        geoms = _shapes(shp, _box_in(within, crs))
        records = _records(dbf, encoding)
    except (ValueError, struct.error, LookupError) as exc:
        raise InputError(f"{label}: not a readable polygon shapefile ({exc}); replace it") from None
    if len(geoms) != len(records):
        raise InputError(f"{label}: {len(geoms)} shapes but {len(records)} attribute records; "
                         "the .shp and .dbf do not belong together")
    return list(zip(geoms, records, strict=True)), crs


def _box_in(within: tuple | None, crs: CRS) -> tuple[float, float, float, float] | None:
    """``within``'s box in ``crs`` (densified edges), or None when it is not one plain box."""
    if within is None:
        return None
    box, box_crs = within
    if CRS.from_user_input(box_crs).equals(crs):
        return tuple(box)
    from pyproj import Transformer

    try:
        out = Transformer.from_crs(box_crs, crs, always_xy=True).transform_bounds(
            *box, densify_pts=21)
    except Exception:  # noqa: BLE001 - pyproj raises several kinds; reading everything is safe
        return None
    if not all(np.isfinite(out)) or out[0] >= out[2] or out[1] >= out[3]:
        return None
    return out


def _shapes(data: bytes, bbox: tuple[float, float, float, float] | None
            ) -> list[shapely.Geometry | None]:
    code, = struct.unpack(">i", data[:4])
    if code != 9994:
        raise ValueError("no shapefile header (file code 9994)")
    shape_type, = struct.unpack("<i", data[32:36])
    if shape_type not in (0, *POLYGON_TYPES):
        raise ValueError(f"shape type {shape_type} is not a polygon type")
    out: list[shapely.Geometry | None] = []
    pos = 100
    while pos + 8 <= len(data):
        _, words = struct.unpack(">2i", data[pos:pos + 8])
        start, pos = pos + 8, pos + 8 + 2 * words
        kind, = struct.unpack("<i", data[start:start + 4])
        if kind == 0:
            out.append(None)
            continue
        if kind not in POLYGON_TYPES:
            raise ValueError(f"a record of shape type {kind}, not a polygon")
        if bbox is not None:
            x0, y0, x1, y1 = struct.unpack("<4d", data[start + 4:start + 36])
            if x1 < bbox[0] or x0 > bbox[2] or y1 < bbox[1] or y0 > bbox[3]:
                out.append(None)  # wholly outside the box asked for: not built
                continue
        n_parts, n_points = struct.unpack("<2i", data[start + 36:start + 44])
        parts = np.frombuffer(data, "<i4", n_parts, start + 44).tolist() + [n_points]
        xy = np.frombuffer(data, "<f8", 2 * n_points, start + 44 + 4 * n_parts).reshape(-1, 2)
        rings = [xy[a:b] for a, b in zip(parts[:-1], parts[1:], strict=True) if b - a >= 4]
        out.append(_polygon(rings) if rings else None)
    return out


def _polygon(rings: list[np.ndarray]) -> shapely.Geometry:
    """Shells (clockwise) with their holes (counter-clockwise) as one valid (Multi)Polygon."""
    shells, holes = [], []
    for ring in rings:
        (holes if shapely.is_ccw(shapely.LinearRing(ring)) else shells).append(ring)
    if not shells:  # a writer that ignored the orientation convention
        shells, holes = holes, []
    polygons = [shapely.Polygon(s) for s in shells]
    owned: list[list] = [[] for _ in shells]
    for hole in holes:
        point = shapely.Point(hole[0])
        around = [i for i, p in enumerate(polygons) if p.covers(point)]
        if around:
            owned[min(around, key=lambda i: polygons[i].area)].append(hole)
    parts = [shapely.Polygon(s, h) for s, h in zip(shells, owned, strict=True)]
    geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    return shapely.make_valid(geom)


def _records(data: bytes, encoding: str | None) -> list[dict[str, Any]]:
    n_records, header_len, record_len = struct.unpack("<IHH", data[4:12])
    fields = []
    pos = 32
    while pos < header_len - 1 and data[pos] != 0x0D:
        name = data[pos:pos + 11].split(b"\0")[0].decode("latin-1")
        fields.append((name, chr(data[pos + 11]), data[pos + 16]))
        pos += 32
    out = []
    for r in range(n_records):
        row = data[header_len + r * record_len:header_len + (r + 1) * record_len]
        if row[:1] == b"*":  # deleted record: still has its shape, keep it attribute-less
            out.append({})
            continue
        values, at = {}, 1
        for name, kind, length in fields:
            values[name] = _value(row[at:at + length], kind, encoding)
            at += length
        out.append(values)
    return out


def _value(raw: bytes, kind: str, encoding: str | None) -> Any:
    if kind in "NF":
        text = raw.decode("ascii", "replace").strip()
        if not text or set(text) <= {"*"}:
            return None
        try:
            return int(text)
        except ValueError:
            return float(text)
    if kind == "L":
        return raw.strip().upper() in (b"Y", b"T")
    if encoding:
        return raw.decode(encoding, "replace").strip()
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip()
