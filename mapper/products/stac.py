"""STAC Items describing the map products (one Item per product, written beside the COG).

The Item's geometry and bbox are in EPSG:4326 as STAC requires: the footprint of the product's
mapped pixels (:func:`area_footprint_4326`; a raster's whole extent, :func:`footprint_4326`, where
no area is given), densified, projected, and cut at the antimeridian when it crosses 180 degrees
(the Aleutians do): the geometry becomes a MultiPolygon of the two sides and the bbox has ``west >
east`` (RFC 7946, section 5.2); outer rings run counterclockwise (section 3.1.6). The native grid
goes in the projection extension (``proj:code`` EPSG:3338, ``proj:shape``, ``proj:transform``,
``proj:bbox``), band encodings in the raster extension (nodata, data type, scale/offset, unit,
resolution), and class names and colours in the classification extension. Asset hrefs are relative
to the Item file (same folder), so the folder can be moved or published as a whole.

Validation runs offline: pystac ships the core Item schema (checked with jsonschema); extension
schemas live on the web and are not fetched at run time, so their fields are checked here for
presence and type instead.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import shapely
import shapely.affinity
from affine import Affine
from pyproj import Transformer
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.validation.stac_validator import JsonSchemaSTACValidator

from mapper.errors import MapperError
from mapper.files import atomic_path

logger = logging.getLogger(__name__)

COG_MEDIA_TYPE = pystac.MediaType.COG
EDGE_POINTS = 64  # the first split of each edge of a footprint
EDGE_TOLERANCE_M = 1.0  # how far a footprint's straight lon/lat segments may stray from the edge


@dataclass
class ProductAsset:
    """One file of a product: where it lies and what it is."""

    path: Path
    title: str
    roles: list[str]
    media_type: str
    bands: list[dict[str, Any]] = field(default_factory=list)  # raster:bands entries
    classes: list[dict[str, Any]] = field(default_factory=list)  # classification:classes


def footprint_4326(bounds: tuple[float, float, float, float], crs: str = "EPSG:3338") -> (
    tuple[dict[str, Any], list[float]]
):
    """GeoJSON geometry and bbox in EPSG:4326 of ``bounds`` (left, bottom, right, top) in ``crs``.

    The image of a straight edge is a curve in longitude/latitude, and GeoJSON joins vertices with
    straight lines there, which cut inside the curve. So the bounds are first widened by
    :data:`EDGE_TOLERANCE_M`, and each edge is split until no segment's midpoint in longitude/
    latitude lies farther than that from the edge (:func:`_edge_points`): the outline covers the
    raster and strays at most about twice the tolerance beyond it. A footprint crossing 180
    degrees is split there (module docstring).
    """
    d = EDGE_TOLERANCE_M
    left, bottom, right, top = bounds[0] - d, bounds[1] - d, bounds[2] + d, bounds[3] + d
    corners = [(left, top), (right, top), (right, bottom), (left, bottom)]
    fwd = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    back = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    ends = zip(corners, corners[1:] + corners[:1], strict=True)
    lon, lat = np.concatenate([_edge_points(a, b, fwd, back) for a, b in ends]).T
    lon = np.degrees(np.unwrap(np.radians(lon)))
    ring = shapely.Polygon(np.column_stack([lon, lat]))
    if not ring.is_valid:
        ring = shapely.make_valid(ring)
    return _cut_at_antimeridian(ring)


AREA_SEGMENT_M = 10_000.0
"""A mapped area's footprint is densified to vertices at most this far apart in EPSG:3338 before
projecting: a 10 km chord in longitude/latitude departs from its curve by about 1 m."""


def area_simplify_m(bounds: tuple[float, float, float, float], res: float) -> float:
    """How far a mapped area's footprint may run outside its outline: a thousandth of the
    raster's larger side, at least a pixel, at most 1 km (the statewide boundary's own scale,
    1:5,000,000, is coarser): 20 m for the demo's 20 km, 1 km for the state."""
    side = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    return float(min(max(side / 1000.0, res), 1000.0))


def area_footprint_4326(area: shapely.Geometry, bounds: tuple[float, float, float, float],
                        res: float, crs: str = "EPSG:3338") -> tuple[dict[str, Any], list[float]]:
    """GeoJSON geometry and bbox in EPSG:4326 of the mapped pixels of a product: those of the
    raster ``bounds`` (``res`` m pixels, in ``crs``) whose centre lies in ``area`` (in ``crs``).

    The area grown by a pixel's half diagonal holds every mapped pixel whole; it is grown by
    :func:`area_simplify_m` more and simplified by as much (where the simplification cuts into
    the grown area after all, that piece is added back), clipped to the raster, densified
    (:data:`AREA_SEGMENT_M`) and projected, each ring's longitudes unwrapped and the parts put on
    one side of 180 degrees before the geometry is cut there (module docstring). So a catalog
    search finds the product where it has data, not in the corners of its rectangle (for the
    state: the Yukon and the North Pacific).
    """
    slack = area_simplify_m(bounds, res)
    reach = res / np.sqrt(2) + EDGE_TOLERANCE_M
    cover = shapely.simplify(shapely.buffer(area, reach + slack, quad_segs=4), slack,
                             preserve_topology=True)
    # simplifying may cut a corner by more than its tolerance: the pixels it cut are put back
    need = shapely.buffer(area, reach, quad_segs=4)
    missed = shapely.difference(need, cover)
    if not missed.is_empty:
        cover = shapely.union(cover, shapely.buffer(missed, slack / 4, quad_segs=2))
    d = EDGE_TOLERANCE_M
    cover = shapely.intersection(cover, shapely.box(bounds[0] - d, bounds[1] - d,
                                                    bounds[2] + d, bounds[3] + d))
    cover = shapely.segmentize(cover, AREA_SEGMENT_M)
    fwd = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def lonlat(ring: shapely.LinearRing, near: float | None) -> np.ndarray:
        lon, lat = fwd.transform(*np.asarray(ring.coords).T)
        lon = np.degrees(np.unwrap(np.radians(lon)))
        if near is not None:  # on the same side of 180 degrees as ``near``
            lon = lon - 360.0 * np.round((lon.mean() - near) / 360.0)
        return np.column_stack([lon, lat])

    pieces, ref = [], None
    for polygon in shapely.get_parts(cover):
        if polygon.geom_type != "Polygon" or polygon.is_empty:
            continue
        outer = lonlat(polygon.exterior, ref)
        ref = outer[:, 0].mean() if ref is None else ref
        holes = [lonlat(hole, outer[:, 0].mean()) for hole in polygon.interiors]
        pieces.append(shapely.make_valid(shapely.Polygon(outer, holes)))
    return _cut_at_antimeridian(shapely.union_all(pieces))


def _cut_at_antimeridian(unwrapped: shapely.Geometry) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON geometry and bbox of a geometry whose longitudes run on past 180 (or -180)
    degrees: the pieces in each 360-degree band moved back into -180..180, outer rings
    counterclockwise (RFC 7946), and a bbox with ``west > east`` when it crosses 180 degrees."""
    west, south, east, north = unwrapped.bounds
    parts = []
    for shift in (-360.0, 0.0, 360.0):  # pieces of the unwrapped geometry in each 360-degree band
        piece = unwrapped.intersection(shapely.box(-180.0 - shift, -90.0, 180.0 - shift, 90.0))
        if not piece.is_empty and piece.area > 0:
            parts.append(shapely.affinity.translate(piece, xoff=shift))
    geom = shapely.union_all(parts) if len(parts) > 1 else parts[0]
    # RFC 7946: exterior rings counterclockwise
    geom = shapely.orient_polygons(shapely.set_precision(geom, 1e-7))
    if west < -180.0 or east > 180.0:
        west = ((west + 180.0) % 360.0) - 180.0
        east = ((east + 180.0) % 360.0) - 180.0
    bbox = [round(west, 7), round(south, 7), round(east, 7), round(north, 7)]
    # GeoJSON as plain lists (shapely gives tuples, which JSON schema does not take for arrays)
    return json.loads(shapely.to_geojson(geom)), bbox


def _edge_points(a: tuple[float, float], b: tuple[float, float], fwd: Transformer,
                 back: Transformer) -> np.ndarray:
    """Longitude/latitude of points along the edge from ``a`` to ``b`` (``b`` left out), each
    segment split in two while its midpoint in longitude/latitude, projected back, lies more than
    :data:`EDGE_TOLERANCE_M` off the edge's line; (n, 2)."""
    start, step = np.asarray(a, dtype=float), np.subtract(b, a, dtype=float)
    t = np.linspace(0.0, 1.0, EDGE_POINTS + 1)
    for _ in range(32):  # each round halves the segments that stray; the sag falls 4-fold
        lon, lat = fwd.transform(*(start + np.outer(t, step)).T)
        lon = np.degrees(np.unwrap(np.radians(lon)))
        x, y = back.transform((lon[:-1] + lon[1:]) / 2, (lat[:-1] + lat[1:]) / 2)
        off_edge = np.abs(step[0] * (y - start[1]) - step[1] * (x - start[0])) / np.hypot(*step)
        strays = off_edge > EDGE_TOLERANCE_M
        if not strays.any():
            break
        t = np.sort(np.concatenate([t, ((t[:-1] + t[1:]) / 2)[strays]]))
    else:
        lon, lat = fwd.transform(*(start + np.outer(t, step)).T)  # the points of the last split
    return np.column_stack([lon, lat])[:-1]


def build_item(
    item_id: str,
    *,
    bounds: tuple[float, float, float, float],
    shape: tuple[int, int],
    transform: Affine,
    assets: dict[str, ProductAsset],
    properties: dict[str, Any],
    crs_code: str = "EPSG:3338",
    start_end: tuple[datetime, datetime] | None = None,
    created: datetime | None = None,
    area: shapely.Geometry | None = None,
) -> pystac.Item:
    """A STAC Item of a product whose main asset covers ``bounds`` (EPSG:3338) on ``shape``.

    Its geometry is the footprint of the pixels mapped in ``area`` (:func:`area_footprint_4326`),
    else of the whole raster (:func:`footprint_4326`); ``proj:bbox`` is the raster's.
    Assets are files beside the Item (hrefs ``./<name>``).
    ``start_end``: the period the sources describe, when known (else the Item's datetime is its
    creation time). ``properties`` are added as given (namespaced keys such as ``mapper:task``).
    """
    created = created or datetime.now(UTC).replace(microsecond=0)
    if area is None:
        geometry, bbox = footprint_4326(bounds, crs_code)
    else:
        geometry, bbox = area_footprint_4326(area, bounds, abs(transform.a), crs_code)
    if start_end is None:
        item = pystac.Item(item_id, geometry, bbox, created, dict(properties))
    else:
        item = pystac.Item(item_id, geometry, bbox, None, dict(properties),
                           start_datetime=start_end[0], end_datetime=start_end[1])
    item.common_metadata.created = created
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = crs_code
    proj.shape = [int(shape[0]), int(shape[1])]
    proj.transform = [float(v) for v in tuple(transform)[:6]]
    proj.bbox = [float(v) for v in bounds]
    for key, spec in assets.items():
        asset = pystac.Asset(
            href=f"./{spec.path.name}",
            title=spec.title,
            media_type=spec.media_type,
            roles=spec.roles,
        )
        item.add_asset(key, asset)
        if spec.bands:
            raster = RasterExtension.ext(asset, add_if_missing=True)
            raster.bands = [RasterBand.create(**_raster_band(b)) for b in spec.bands]
        if spec.classes:
            classification = ClassificationExtension.ext(asset, add_if_missing=True)
            classification.classes = [Classification.create(**c) for c in spec.classes]
    return item


def _raster_band(spec: dict[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    if isinstance(out.get("data_type"), str):
        out["data_type"] = DataType(out["data_type"])
    return out


_EXTENSION_FIELDS = {
    "proj": ("proj:code", "proj:shape", "proj:transform", "proj:bbox"),
}


def validate_item(item_dict: dict[str, Any]) -> None:
    """Check an Item dict offline: core STAC schema (bundled with pystac) and our extension fields.

    Raises MapperError naming the first problem.
    """
    validator = JsonSchemaSTACValidator()
    try:
        validator.validate_core(item_dict, pystac.STACObjectType.ITEM, item_dict["stac_version"])
    except pystac.STACValidationError as exc:
        raise MapperError(f"STAC item {item_dict.get('id')}: not valid STAC ({exc})") from None
    props = item_dict["properties"]
    for key in _EXTENSION_FIELDS["proj"]:
        if key not in props:
            raise MapperError(f"STAC item {item_dict['id']}: missing {key}")
    if len(props["proj:shape"]) != 2 or len(props["proj:transform"]) not in (6, 9):
        raise MapperError(f"STAC item {item_dict['id']}: proj:shape/proj:transform malformed")
    for name, asset in item_dict["assets"].items():
        for band in asset.get("raster:bands", []):
            if "nodata" not in band or "data_type" not in band:
                raise MapperError(f"STAC item {item_dict['id']}: asset {name} band lacks nodata")
        for cls in asset.get("classification:classes", []):
            if not isinstance(cls.get("value"), int) or not cls.get("name"):
                raise MapperError(f"STAC item {item_dict['id']}: asset {name} class malformed")
    pystac.Item.from_dict(item_dict)  # round trip through pystac's own model


def write_item(item: pystac.Item, path: str | Path) -> Path:
    """Validate and write ``item`` as JSON to ``path`` atomically (hrefs kept relative)."""
    path = Path(path)
    item.set_self_href(None)
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    validate_item(data)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
    logger.info("wrote STAC item %s", path)
    return path
