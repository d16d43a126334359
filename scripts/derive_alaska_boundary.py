"""Derive config/regions/alaska.geojson (the state's land, EPSG:3338) from Census county boundaries.

Input: the US Census Bureau's 2023 cartographic boundary counties at 1:5,000,000
(``cb_2023_us_county_5m.shp``, NAD83 geographic, public domain). Only the ``.shp`` geometry is
needed (no attribute table), so the file is read here with a small ESRI-shapefile polygon reader
instead of adding an OGR dependency.

Selection: a county-equivalent is in Alaska when an interior point of it lies north of 50 N and
west of 130 W or east of 170 E; the state has exactly 30 (boroughs and census areas), which is
checked.

Antimeridian: the western Aleutians (Near and Rat Islands, Buldir) are stored at
longitudes +172..+180. Every positive longitude is shifted by -360 degrees before projecting, so a
polygon cut at 180 degrees becomes two pieces sharing an edge at -180 that the dissolve merges;
EPSG:3338 (central meridian 154 W) is continuous across 180 degrees, so Attu lies west of Adak in
one piece of plane.

Processing: dissolve (union) in EPSG:3338, round coordinates to a 1 m grid (``set_precision``,
which keeps the result valid), simplify (topology preserving) only if the written file would
exceed ``--max-bytes``, trying tolerances from ``TOLERANCES_M`` in order.

Usage::

    python scripts/derive_alaska_boundary.py /path/to/cb_2023_us_county_5m.shp \
        --out config/regions/alaska.geojson
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np
import shapely
from pyproj import CRS, Transformer

from mapper.files import atomic_path, file_sha256

SRC_CRS = "EPSG:4269"  # NAD83 geographic: the Census cartographic boundary files' CRS
DST_CRS = "EPSG:3338"  # NAD83 / Alaska Albers
CRS_URN = "urn:ogc:def:crs:EPSG::3338"
ALASKA_COUNTIES = 30
TOLERANCES_M = (0.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)
SHP_POLYGON = 5


def read_polygons(shp: Path) -> list[list[np.ndarray]]:
    """Read every Polygon record of an ESRI shapefile as a list of rings (N x 2 lon/lat arrays).

    Layout (ESRI Shapefile Technical Description, 1998): a 100-byte header (file code 9994, big
    endian; shape type at byte 32, little endian), then records of an 8-byte big-endian header
    (number, content length in 16-bit words) and little-endian content: shape type, bounding box
    (4 doubles), number of parts, number of points, part start indices, points (x, y doubles).
    """
    data = shp.read_bytes()
    code, file_words = struct.unpack(">i20xi", data[:28])
    if code != 9994 or file_words * 2 != len(data):
        sys.exit(f"{shp}: not an ESRI shapefile (bad header or truncated file)")
    (shape_type,) = struct.unpack("<i", data[32:36])
    if shape_type != SHP_POLYGON:
        sys.exit(f"{shp}: shape type {shape_type}, expected {SHP_POLYGON} (Polygon)")
    records = []
    off = 100
    while off < len(data):
        _, words = struct.unpack(">ii", data[off : off + 8])
        c = off + 8
        (rtype,) = struct.unpack("<i", data[c : c + 4])
        if rtype == SHP_POLYGON:
            n_parts, n_points = struct.unpack("<ii", data[c + 36 : c + 44])
            parts = np.frombuffer(data, "<i4", n_parts, c + 44)
            pts = np.frombuffer(data, "<f8", 2 * n_points, c + 44 + 4 * n_parts).reshape(-1, 2)
            ends = list(parts[1:]) + [n_points]
            records.append([pts[s:e].copy() for s, e in zip(parts, ends, strict=True)])
        off = c + 2 * words
    return records


def record_geometry(rings: list[np.ndarray]) -> shapely.Geometry:
    """One record's rings as a (multi)polygon: clockwise rings outer, counter-clockwise holes."""
    outer, holes = [], []
    for ring in rings:
        poly = shapely.Polygon(ring)
        (holes if shapely.is_ccw(poly.exterior) else outer).append(shapely.make_valid(poly))
    geom = shapely.union_all(outer)
    if holes:
        geom = shapely.difference(geom, shapely.union_all(holes))
    return geom


def is_alaska(geom: shapely.Geometry) -> bool:
    """North of 50 N and west of 130 W or east of 170 E, tested on an interior point."""
    largest = max(getattr(geom, "geoms", [geom]), key=lambda g: g.area)
    p = largest.point_on_surface()
    return p.y > 50.0 and (p.x < -130.0 or p.x > 170.0)


def unwrap(geom: shapely.Geometry) -> shapely.Geometry:
    """Shift positive (eastern hemisphere) longitudes by -360 so the Aleutians are continuous."""

    def shift(xy: np.ndarray) -> np.ndarray:
        xy = xy.copy()
        xy[:, 0] = np.where(xy[:, 0] > 0.0, xy[:, 0] - 360.0, xy[:, 0])
        return xy

    return shapely.transform(geom, shift)


def project(geom: shapely.Geometry) -> shapely.Geometry:
    transformer = Transformer.from_crs(SRC_CRS, DST_CRS, always_xy=True)

    def fwd(xy: np.ndarray) -> np.ndarray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geom, fwd)


def to_geojson(geom: shapely.Geometry, properties: dict) -> str:
    """A one-feature FeatureCollection with integer metre coordinates and a named CRS member."""
    feature = json.loads(shapely.to_geojson(geom))

    def ints(c):  # noqa: ANN001, ANN202
        return [ints(v) for v in c] if isinstance(c[0], list) else [int(round(v)) for v in c]

    feature["coordinates"] = ints(feature["coordinates"])
    fc = {
        "type": "FeatureCollection",
        "name": "alaska",
        "crs": {"type": "name", "properties": {"name": CRS_URN}},
        "features": [{"type": "Feature", "properties": properties, "geometry": feature}],
    }
    return json.dumps(fc, separators=(",", ":")) + "\n"


def derive(shp: Path, max_bytes: int) -> tuple[str, dict]:
    """The GeoJSON text of Alaska's land and a summary of what was done."""
    prj = shp.with_suffix(".prj")
    src = CRS.from_user_input(SRC_CRS)
    if prj.exists() and not CRS.from_wkt(prj.read_text()).equals(src, ignore_axis_order=True):
        sys.exit(f"{prj}: expected NAD83 geographic coordinates ({SRC_CRS})")
    records = [record_geometry(r) for r in read_polygons(shp)]
    alaska = [g for g in records if is_alaska(g)]
    if len(alaska) != ALASKA_COUNTIES:
        sys.exit(f"{shp}: {len(alaska)} Alaska county-equivalents found, expected 30")
    land = project(shapely.union_all([unwrap(g) for g in alaska]))
    land = shapely.set_precision(shapely.make_valid(land), 1.0)
    for tol in TOLERANCES_M:
        geom = land
        if tol > 0:
            geom = shapely.set_precision(shapely.simplify(land, tol, preserve_topology=True), 1.0)
        props = {
            "name": "Alaska",
            "source": "US Census Bureau cb_2023_us_county_5m (1:5,000,000), public domain",
            "selection": "county-equivalents north of 50 N and west of 130 W or east of 170 E",
            "precision_m": 1,
            "simplify_tolerance_m": tol,
        }
        text = to_geojson(geom, props)
        if len(text.encode()) <= max_bytes:
            break
    else:
        sys.exit(f"no tolerance in {TOLERANCES_M} m brings the file under {max_bytes} bytes")
    parts = list(getattr(geom, "geoms", [geom]))
    summary = {
        "input": str(shp),
        "input_sha256": file_sha256(shp),
        "counties": len(alaska),
        "polygons": len(parts),
        "vertices": int(shapely.get_num_coordinates(geom)),
        "area_km2": round(geom.area / 1e6),
        "bounds_m": [round(v) for v in geom.bounds],
        "simplify_tolerance_m": tol,
        "bytes": len(text.encode()),
    }
    return text, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shp", type=Path, help="cb_2023_us_county_5m.shp")
    ap.add_argument("--out", type=Path, default=Path("config/regions/alaska.geojson"))
    ap.add_argument("--max-bytes", type=int, default=1_500_000, help="simplify above this size")
    args = ap.parse_args(argv)
    if not args.shp.exists():
        sys.exit(f"{args.shp}: file not found")
    text, summary = derive(args.shp, args.max_bytes)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
