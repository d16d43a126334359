"""Zone layers: the polygons a region's evaluation is broken down by (results by region).

A region names its layers under ``zones`` (mapper/schemas/region.schema.yaml), each with a
``name``, the ``field`` whose value names a polygon's zone, and where the polygons come from
(``kind``): ``file`` (a local ``path``), ``http`` (``files`` downloaded by the workflow, ``layer``
naming the one to read, or a shapefile inside a zip) or ``demo`` (synthesized from the demo's
climate by :mod:`mapper.demo.zones`). Readable inputs: GeoJSON (EPSG:4326 unless it names its
CRS, as the region boundaries) and polygon shapefiles, loose or zipped, in any CRS: read by GDAL's
OGR drivers through pyogrio (:func:`open_vector`, :func:`read_vector`), a zip through ``/vsizip/``.

Each layer is *prepared* once (:func:`prepare_zone_layer`, rule ``zone_layer``) into
``resources/<region>/zones/<name>.geojson``: EPSG:3338, cut to the bounding box of the region's
mapped area plus :data:`CLIP_MARGIN`, one (Multi)Polygon per zone (``properties.zone``: the
field's value as text), and a ``mapper`` member saying where it came from and whether it is
synthetic. The report reads only prepared layers, as plain JSON (fast, no GDAL).

A point belongs to the first zone (in the layer's order: zones sorted by name) whose polygon
covers it, boundary included; a point in no polygon is in :data:`OUTSIDE` (a gap of the layer,
or water the layer leaves out). Points are the samples' EPSG:3338 ``x``, ``y`` (metres).
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS

from mapper.config import Region
from mapper.errors import ConfigError, InputError, first_few
from mapper.files import atomic_path
from mapper.grid import coordinates_to

logger = logging.getLogger(__name__)

OUTSIDE = "outside zones"
"""The zone of a point that no polygon of the layer covers."""
CLIP_MARGIN = 20_000.0
"""Metres kept around the bounding box of the region's mapped area (its boundary buffered by
``buffer_m``) when a layer is prepared."""
VECTOR_SUFFIXES = (".geojson", ".json", ".shp", ".zip")
WHAT = "mapper zone layer"


def zone_layer_path(region_name: str, name: str) -> Path:
    """``resources/<region>/zones/<name>.geojson``: where a prepared layer is written."""
    return Path("resources") / region_name / "zones" / f"{name}.geojson"


def zone_settings(region: Region, name: str) -> dict[str, Any]:
    """The region's entry for zone layer ``name``."""
    for entry in region.settings.get("zones", []):
        if entry["name"] == name:
            return entry
    known = ", ".join(z["name"] for z in region.settings.get("zones", [])) or "none"
    raise ConfigError(f"{region.path}: no zone layer '{name}' under 'zones' (known: {known})")


@dataclass(frozen=True)
class ZoneLayer:
    """A prepared zone layer: its zones (names, sorted) and their EPSG:3338 polygons."""

    name: str
    title: str
    path: str
    zones: tuple[str, ...]
    geometries: tuple[shapely.Geometry, ...]
    synthetic: bool
    source: str
    labels: tuple[tuple[str, str], ...] = ()
    """(zone, label) for the zones the region file gives a label (e.g. C: continuous)."""

    def assign(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The zone of each EPSG:3338 point (object array of names; :data:`OUTSIDE` if none)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        out = np.full(len(x), OUTSIDE, dtype=object)
        free = np.ones(len(x), dtype=bool)
        for zone, geom in zip(self.zones, self.geometries, strict=True):
            shapely.prepare(geom)
            hit = free & shapely.intersects_xy(geom, x, y)
            out[hit] = zone
            free &= ~hit
        return out


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorSource:
    """A zone layer's source as GDAL's OGR opens it (through pyogrio): ``dataset`` is GDAL's
    name for it (``/vsizip/<zip>/<member>`` for a shapefile inside a zip), ``label`` the name
    messages give it, ``crs`` the layer's CRS (a GeoJSON without a ``crs`` member: EPSG:4326,
    RFC 7946) and ``fields`` its attribute names."""

    label: str
    dataset: str
    crs: CRS
    fields: tuple[str, ...]


def open_vector(path: str | Path, member: str | None = None) -> VectorSource:
    """The first layer of a GeoJSON file or a polygon shapefile, loose or zipped: ``member`` is
    the shapefile to read in a zip (e.g. ``MLRA_52_2022/MLRA_52.shp``), else the zip's only one.

    InputError (one line, naming the file and the fix) for a missing or unreadable file, a zip
    member that is not there, a shapefile without its .shx or .prj, a layer of points or lines."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VECTOR_SUFFIXES:
        raise InputError(f"{path}: not a zone layer format mapper reads (GeoJSON, .shp or a "
                         "zipped shapefile); convert it, e.g. ogr2ogr -f GeoJSON out.geojson IN")
    if not path.is_file():
        raise InputError(f"{path}: zone layer not found; fetch it or fix its path")
    label, dataset = str(path), str(path)
    if suffix == ".zip":
        member = _zip_member(path, member)
        label, dataset = f"{path}/{member}", f"/vsizip/{path}/{member}"
    try:
        info = pyogrio.read_info(dataset)
    except (DataSourceError, DataLayerError) as exc:
        reason = " ".join(str(exc).split())  # GDAL's message, on one line
        parts = " (a shapefile: fetch its .shp, .shx, .dbf and .prj)" if label.lower().endswith(
            ".shp") else ""
        raise InputError(f"{label}: not readable by GDAL ({reason}); replace it{parts}") from None
    if info["crs"] is None:
        raise InputError(f"{label}: the layer has no CRS (a shapefile without its .prj); fetch "
                         "all of its parts")
    kind = info["geometry_type"] or "Unknown"
    if "Polygon" not in kind and kind not in ("Unknown", "GeometryCollection"):
        raise InputError(f"{label}: a layer of {kind} geometries, not polygons; a zone layer "
                         "needs polygons")
    return VectorSource(label, dataset, CRS.from_user_input(info["crs"]),
                        tuple(str(f) for f in info["fields"]))


def _zip_member(path: Path, member: str | None) -> str:
    """``member`` if zip ``path`` holds it, else (``member`` None) its only ``.shp``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise InputError(f"{path}: not a zip archive; delete it and fetch it again") from None
    if member is not None:
        if member not in names:
            raise InputError(f"{path}: has no member {member}; fix the zone layer's 'layer' key")
        return member
    shps = [n for n in names if n.lower().endswith(".shp")]
    if len(shps) != 1:
        raise InputError(f"{path}: holds {len(shps)} shapefiles ({', '.join(shps[:5]) or 'none'});"
                         " name the one to read with the zone layer's 'layer' key")
    return shps[0]


def read_vector(
    source: VectorSource, field: str, mask: shapely.Geometry | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(geometries, values)`` of ``source``'s features: shapely geometries (None for a null
    shape; Z and M dropped) and their ``field`` values (None or NaN where empty); ``field`` is
    one of ``source.fields`` (checked by the caller, whose message names the fix). ``mask`` (in
    the layer's CRS) keeps only the features that meet it, skipped by GDAL before they are
    built (a national layer read for one region)."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    if field not in source.fields:  # GDAL would give no values, not an error
        raise ValueError(f"{source.label}: no field {field!r} among {source.fields}")
    try:
        _, _, wkb, (values,) = pyogrio.raw.read(source.dataset, columns=[field], mask=mask,
                                                force_2d=True)
    except (DataSourceError, DataLayerError) as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{source.label}: not readable by GDAL ({reason}); replace it") from None
    return shapely.from_wkb(wkb), values


def _zone_name(value: Any) -> str | None:
    """A field value (or a ``labels`` key) as a zone name; None when empty (null, NaN, blank).
    A whole number stored as a float (a shapefile's numeric field: 120.0) is named as the
    integer (``120``), as a label key ``120:`` in YAML (an int) is."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    return str(value).strip() or None


def read_zone_layer(path: str | Path) -> ZoneLayer:
    """A prepared layer (:func:`prepare_zone_layer`'s output); InputError naming the fix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: zone layer not found; make it with `snakemake --cores 1 {path}` (rule "
            "zone_layer), or remove the layer from the region's 'zones'"
        )
    try:
        gj = json.loads(path.read_text())
        info = gj["mapper"]
        if info.get("what") != WHAT:
            raise KeyError("what")
        pairs = sorted((str(f["properties"]["zone"]), shapely.geometry.shape(f["geometry"]))
                       for f in gj["features"])
        labels = tuple(sorted((str(f["properties"]["zone"]), str(f["properties"]["label"]))
                              for f in gj["features"] if f["properties"].get("label")))
        return ZoneLayer(info["name"], info.get("title") or info["name"], str(path),
                         tuple(z for z, _ in pairs), tuple(g for _, g in pairs),
                         bool(info.get("synthetic")), info.get("source", ""), labels)
    # a damaged feature: a null geometry (AttributeError), an unknown type (shapely's
    # GeometryTypeError), coordinates that make no geometry (ValueError, GEOSException)
    except (OSError, ValueError, KeyError, TypeError, AttributeError,
            shapely.errors.ShapelyError) as exc:
        raise InputError(f"{path}: not a prepared zone layer ({exc!r}); delete it and make it "
                         f"again with `snakemake --cores 1 {path}`") from None


# -- preparing --------------------------------------------------------------------------------


def _window_in(window: shapely.Polygon, crs: CRS) -> shapely.Geometry | None:
    """The EPSG:3338 ``window`` in ``crs`` (edges densified), or None when it does not map to
    one faithful polygon there (torn at 180 degrees, or off the projection's domain): then
    every polygon is projected whole and cut in EPSG:3338.

    Cutting first spares projecting the far parts of a large polygon (a circum-Arctic zone) into
    Alaska Albers, where a polygon that crosses the conic's cut (26 degrees E) is torn apart."""
    edge = max(window.bounds[2] - window.bounds[0], window.bounds[3] - window.bounds[1]) / 100
    there = shapely.transform(shapely.segmentize(window, edge), coordinates_to("EPSG:3338", crs))
    if not np.isfinite(shapely.get_coordinates(there)).all() or not there.is_valid:
        return None
    back = shapely.transform(there, coordinates_to(crs, "EPSG:3338"))
    if not back.is_valid or abs(back.area - window.area) > 0.01 * window.area:
        return None
    return there



def _chosen_input(settings: dict[str, Any], inputs: list[Path]) -> tuple[Path, str | None]:
    """The file to read among a layer's inputs, and the zip member to read in it (if any)."""
    layer = settings.get("layer")
    readable = [p for p in inputs if p.suffix.lower() in VECTOR_SUFFIXES]
    if layer:
        named = [p for p in inputs if p.name == layer]
        if named:
            return named[0], None
        zips = [p for p in inputs if p.suffix.lower() == ".zip"]
        if len(zips) == 1:
            return zips[0], layer
        raise ConfigError(f"zone layer '{settings['name']}': 'layer' {layer} is none of its "
                          f"files ({', '.join(p.name for p in inputs)}); fix it")
    if not readable and len(inputs) == 1:  # a GeoPackage, a FileGDB, a KML
        raise InputError(
            f"{inputs[0]}: zone layer '{settings['name']}' is not GeoJSON or a (zipped) "
            f"shapefile; convert it: ogr2ogr -f GeoJSON -t_srs EPSG:4326 zones.geojson "
            f"{inputs[0]}"
        )
    if len(readable) != 1:
        raise ConfigError(f"zone layer '{settings['name']}': {len(readable)} readable files "
                          f"among {', '.join(p.name for p in inputs) or 'none'}; name the one to "
                          "read with 'layer'")
    return readable[0], None


def prepare_zone_layer(
    region: Region, name: str, inputs: list[str | Path], out: str | Path
) -> dict[str, int]:
    """Write layer ``name`` of ``region`` from its source file(s) ``inputs`` to ``out`` (module
    doc); return the number of polygons read per zone kept."""
    settings = zone_settings(region, name)
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: zone layer '{name}' of region '{region.name}' not found; "
                             f"put the file there or fix 'zones' in {region.path}")
    path, member = _chosen_input(settings, paths)
    left, bottom, right, top = region.area().bounds  # the samples' area: buffer included
    window = shapely.box(left - CLIP_MARGIN, bottom - CLIP_MARGIN, right + CLIP_MARGIN,
                         top + CLIP_MARGIN)
    source = open_vector(path, member)
    field = settings["field"]
    if field not in source.fields:
        raise ConfigError(f"{region.path}: zone layer '{name}': {source.label} has no field "
                          f"'{field}' (fields: {', '.join(source.fields) or 'none'}); fix 'field'")
    to_albers, near = None, None
    if not source.crs.equals(CRS.from_epsg(3338)):
        to_albers = coordinates_to(source.crs, "EPSG:3338")
        near = _window_in(window, source.crs)
    # GDAL skips the features that miss the window (None: it does not map to the layer's CRS)
    geometries, values = read_vector(source, field, mask=window if to_albers is None else near)
    by_zone: dict[str, list[shapely.Geometry]] = {}
    for geom, value in zip(geometries, values, strict=True):
        zone = _zone_name(value)
        if geom is None or zone is None:
            continue
        geom = shapely.make_valid(geom)
        if near is not None:  # cut in the layer's CRS first: far parts are not projected
            geom = shapely.intersection(geom, near)
        if to_albers is not None:
            geom = shapely.make_valid(shapely.transform(geom, to_albers))
        geom = shapely.intersection(geom, window)
        if not geom.is_empty and geom.area > 0:
            by_zone.setdefault(zone, []).append(geom)
    if not by_zone:
        raise InputError(f"{path}: no polygon of zone layer '{name}' meets region "
                         f"'{region.name}'; check the file and its CRS")
    labels = {_zone_name(k): v for k, v in (settings.get("labels") or {}).items()}
    unmatched = sorted(str(k) for k in labels if k not in by_zone)
    if unmatched:
        logger.info("zone layer '%s' of region %s: labels given for zones it has none of "
                    "in the region: %s", name, region.name, first_few(unmatched))
    feats = []
    for zone in sorted(by_zone):
        merged = shapely.make_valid(shapely.union_all(by_zone[zone]))
        merged = shapely.set_precision(merged, 0.01)  # centimetres: ample, and a smaller file
        props = {"zone": zone, "polygons": len(by_zone[zone])}
        if zone in labels:
            props["label"] = labels[zone]
        feats.append({"type": "Feature", "properties": props,
                      "geometry": json.loads(shapely.to_geojson(merged))})
    doc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "EPSG:3338"}},
        "mapper": {"what": WHAT, "name": name, "title": settings.get("title") or name,
                   "field": field, "source": str(path) + (f"/{member}" if member else ""),
                   "synthetic": bool(settings.get("synthetic") or settings["kind"] == "demo"
                                     or region.synthetic)},
        "features": feats,
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(doc))
    counts = {z: len(g) for z, g in sorted(by_zone.items())}
    logger.info("%s: %d zones of '%s' from %s", out, len(counts), field, path)
    return counts


# -- fetching ---------------------------------------------------------------------------------


def fetch_zone_file(region: Region, name: str, file: str, out: str | Path) -> Path:
    """Download one file of an ``http`` zone layer to ``out``, with a source manifest beside it
    (``<out>.json``); return ``out``. A file with a ``sha256`` in the region file is verified
    against it (and its ``size``); one without is verified against the region's lock file, or
    recorded there at its first download (:func:`mapper.sources.lock.fetch_locked`). Every
    failure is one SourceError naming the URL and the fix, with no partial file left."""
    from mapper.sources.fetch import http_file_name
    from mapper.sources.lock import fetch_entry, lock_path
    from mapper.sources.manifest import make_manifest, write_manifest

    settings = zone_settings(region, name)
    if settings["kind"] != "http":
        raise ConfigError(f"{region.path}: zone layer '{name}' is of kind {settings['kind']}, "
                          "not http: nothing to download")
    entries = [f for f in settings["files"] if http_file_name(f) == file]
    if not entries:
        names = ", ".join(http_file_name(f) for f in settings["files"])
        raise ConfigError(f"{region.path}: zone layer '{name}' has no file '{file}' ({names})")
    out = Path(out)
    item = fetch_entry(entries[0], out, lock_path(region.path))
    item["path"] = str(out)
    write_manifest(out.with_name(out.name + ".json"),
                   make_manifest(region.name, f"zones/{name}", "http", [item],
                                 synthetic=region.synthetic))
    return out
