"""Zone layers and the results by zone: reading (GeoJSON; shapefiles written by GDAL's ogr2ogr),
preparing, assigning points, the report's per-zone figures against a computation by hand, the
demo's synthetic climate zones, and the workflow's plan."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine
from pyproj import Transformer
from tiny_region import write_tiny_region
from workflow_project import make_project, make_statewide_project, planned_jobs

from mapper.config import Region, load_config, load_region
from mapper.demo.zones import THRESHOLDS, ZONES, synthesize_zones
from mapper.errors import ConfigError, InputError, SourceError
from mapper.evaluate import _write
from mapper.raster import write_geotiff
from mapper.report import report
from mapper.zonal import THIN_ZONE
from mapper.zones import (
    OUTSIDE,
    fetch_zone_file,
    open_vector,
    prepare_zone_layer,
    read_vector,
    read_zone_layer,
    zone_layer_path,
)

LEFT, BOTTOM = 241_600.0, 1_645_120.0
RIGHT, TOP = LEFT + 2560.0, BOTTOM + 2560.0
MID = LEFT + 1280.0
# two zones in EPSG:3338: west of MID, and east of it up to 200 m short of the region's east edge
WEST = shapely.box(LEFT - 1000, BOTTOM - 1000, MID, TOP + 1000)
EAST = shapely.box(MID, BOTTOM - 1000, RIGHT - 200, TOP + 1000)
TO_LONLAT = Transformer.from_crs(3338, 4326, always_xy=True)


def _lonlat(geom: shapely.Geometry) -> shapely.Geometry:
    def f(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(TO_LONLAT.transform(xy[:, 0], xy[:, 1]))

    return shapely.transform(shapely.segmentize(geom, 50.0), f)


def _region(root: Path, zones: list[dict] | None = None) -> Region:
    config = write_tiny_region(root, (LEFT, BOTTOM, RIGHT, TOP), 64, zones=zones or [],
                               evaluation={"folds": 2})  # the fold files' (_fold_files)
    return load_region(load_config(config), "tiny")


def _zones_geojson(path: Path) -> Path:
    """The two zones in EPSG:4326 (no crs member: RFC 7946), zone names in field ``area``."""
    features = [{"type": "Feature", "properties": {"area": name, "code": i},
                 "geometry": json.loads(shapely.to_geojson(_lonlat(g)))}
                for i, (name, g) in enumerate((("west", WEST), ("east", EAST)))]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _layer_settings(path: Path) -> dict:
    return {"name": "halves", "title": "two halves", "kind": "file", "field": "area",
            "path": str(path), "labels": {"west": "the west"}}


@pytest.fixture
def halves(tmp_path: Path) -> tuple[Region, Path]:
    """A tiny region whose zone layer 'halves' is prepared (west, east; 200 m outside)."""
    source = _zones_geojson(tmp_path / "halves.geojson")
    region = _region(tmp_path / "region", [_layer_settings(source)])
    out = tmp_path / "zones" / "halves.geojson"
    prepare_zone_layer(region, "halves", [source], out)
    return region, out


# -- layers ------------------------------------------------------------------------------------


def test_a_numeric_zone_field_is_named_and_labelled_by_its_number(tmp_path: Path) -> None:
    """A shapefile's numeric field reads as floats (120.0) and a YAML label key ``120:`` as an
    int: both name zone 120, so the label is kept (it was lost without a word)."""
    features = [{"type": "Feature", "properties": {"mlra": code},
                 "geometry": json.loads(shapely.to_geojson(_lonlat(g)))}
                for code, g in ((120.0, WEST), (7.5, EAST))]
    source = tmp_path / "mlra.geojson"
    source.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    settings = {"name": "mlra", "kind": "file", "field": "mlra", "path": str(source),
                "labels": {120: "one twenty"}}
    region = _region(tmp_path / "region", [settings])
    out = tmp_path / "zones" / "mlra.geojson"
    prepare_zone_layer(region, "mlra", [source], out)
    layer = read_zone_layer(out)
    assert layer.zones == ("120", "7.5") and dict(layer.labels) == {"120": "one twenty"}



def test_prepared_layer_is_in_albers_and_assigns_points(halves: tuple[Region, Path]) -> None:
    region, path = halves
    layer = read_zone_layer(path)
    assert layer.zones == ("east", "west") and dict(layer.labels) == {"west": "the west"}
    gj = json.loads(path.read_text())
    assert gj["crs"]["properties"]["name"] == "EPSG:3338"
    for zone, geom in zip(layer.zones, layer.geometries, strict=True):
        truth = {"west": WEST, "east": EAST}[zone]
        # back from EPSG:4326 within centimetres (the vertices every 50 m went there and back)
        assert geom.symmetric_difference(truth.intersection(geom.envelope)).area < 50.0
        assert geom.hausdorff_distance(truth.intersection(geom.envelope)) < 0.5
    x = np.array([LEFT + 10, MID + 10, RIGHT - 100, LEFT + 640, 0.0])
    y = np.array([BOTTOM + 10, TOP - 10, BOTTOM + 1000, BOTTOM + 1280, 0.0])
    assert list(layer.assign(x, y)) == ["west", "east", OUTSIDE, "west", OUTSIDE]


def test_a_layer_is_cut_around_the_buffered_boundary(tmp_path: Path) -> None:
    """Points lie in the mapped area, the boundary buffered by ``buffer_m``: a point 25 km out,
    inside a 30 km buffer, keeps its zone (a cut around the boundary alone lost it)."""
    far = 60_000.0
    west = shapely.box(LEFT - far, BOTTOM - far, MID, TOP + far)
    features = [{"type": "Feature", "properties": {"area": "west"},
                 "geometry": json.loads(shapely.to_geojson(_lonlat(west)))}]
    source = tmp_path / "west.geojson"
    source.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    config = write_tiny_region(tmp_path / "region", (LEFT, BOTTOM, RIGHT, TOP), 64,
                               zones=[{**_layer_settings(source), "labels": {}}],
                               buffer_m=30_000.0)  # fmt: skip
    region = load_region(load_config(config), "tiny")
    out = tmp_path / "zones" / "halves.geojson"
    prepare_zone_layer(region, "halves", [source], out)
    x, y = np.array([LEFT - 25_000.0, LEFT + 10]), np.array([BOTTOM + 10, BOTTOM + 10])
    assert region.area().contains(shapely.points(x, y)).all()
    assert list(read_zone_layer(out).assign(x, y)) == ["west", "west"]


def test_missing_layer_is_one_error_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    region = _region(tmp_path, [_layer_settings(tmp_path / "nowhere.geojson")])
    files = _fold_files(tmp_path)
    expected = zone_layer_path("tiny", "halves")
    with pytest.raises(InputError) as err:
        report(region, "nsp", files, tmp_path / "reports" / "nsp.md")
    message = str(err.value)
    assert str(expected) in message and f"snakemake --cores 1 {expected}" in message
    assert "'zones'" in message and "\n" not in message
    assert not (tmp_path / "reports").exists()  # nothing written
    # a source file that is not there, when the layer is prepared
    with pytest.raises(InputError, match="nowhere.geojson.*not found.*fix 'zones'"):
        prepare_zone_layer(region, "halves", [tmp_path / "nowhere.geojson"], tmp_path / "o.json")


def _null_geometry(gj: dict) -> None:
    gj["features"][0]["geometry"] = None


def _unknown_type(gj: dict) -> None:
    gj["features"][0]["geometry"]["type"] = "Blob"


def _two_points_ring(gj: dict) -> None:
    gj["features"][0]["geometry"] = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}


def _one_point_line(gj: dict) -> None:
    gj["features"][0]["geometry"] = {"type": "LineString", "coordinates": [[0, 0]]}


def _no_name(gj: dict) -> None:
    del gj["mapper"]["name"]


@pytest.mark.parametrize("damage", [_null_geometry, _unknown_type, _two_points_ring,
                                    _one_point_line, _no_name])
def test_a_damaged_prepared_layer_is_one_error_naming_the_file_and_the_fix(
        halves: tuple[Region, Path], damage: Callable[[dict], None]) -> None:
    """A prepared layer edited or cut by hand: a null geometry, an unknown geometry type,
    coordinates that make no geometry (shapely's ValueError, GEOS's exception), no layer name:
    each is the one error of a damaged layer (delete it, make it again), not a traceback."""
    _, path = halves
    gj = json.loads(path.read_text())
    damage(gj)
    path.write_text(json.dumps(gj))
    with pytest.raises(InputError) as err:
        read_zone_layer(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a prepared zone layer (")
    assert message.endswith(f"); delete it and make it again with `snakemake --cores 1 {path}`")


def test_a_layer_in_another_format_names_the_conversion(tmp_path: Path) -> None:
    """A GeoPackage (any file neither GeoJSON nor a (zipped) shapefile) given as a zone layer:
    one error naming the file and how to convert it, nothing written."""
    gpkg = tmp_path / "zones.gpkg"
    gpkg.write_bytes(b"SQLite format 3\x00" + bytes(100))
    region = _region(tmp_path / "r", [_layer_settings(gpkg)])
    out = tmp_path / "o.geojson"
    with pytest.raises(InputError, match=rf"^{re.escape(str(gpkg))}: zone layer 'halves' is not "
                                         r"GeoJSON or a \(zipped\) shapefile; convert it: ogr2ogr"):
        prepare_zone_layer(region, "halves", [gpkg], out)
    assert not out.exists()


def test_a_field_the_layer_lacks_is_named(tmp_path: Path) -> None:
    source = _zones_geojson(tmp_path / "halves.geojson")
    region = _region(tmp_path / "r", [{**_layer_settings(source), "field": "AREA_SYM"}])
    with pytest.raises(ConfigError, match="no field 'AREA_SYM'.*fields: area, code"):
        prepare_zone_layer(region, "halves", [source], tmp_path / "o.geojson")


def test_http_layer_is_downloaded_verified_and_prepared(tmp_path: Path) -> None:
    """An http layer from a loopback server: the file, its manifest (sha256 checked), then the
    prepared layer; a wrong checksum leaves nothing behind."""
    import hashlib

    from httpserver import LoopbackServer

    from mapper.sources.lock import lock_path

    data = _zones_geojson(tmp_path / "halves.geojson").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with LoopbackServer() as server:
        url = server.add_file("/zones/halves.geojson", data)
        settings = {"name": "halves", "kind": "http", "field": "area",
                    "files": [{"url": url, "sha256": digest}]}
        region = _region(tmp_path / "r", [settings])
        out = tmp_path / "resources" / "zones" / "halves" / "halves.geojson"
        fetch_zone_file(region, "halves", "halves.geojson", out)
        manifest = json.loads(out.with_name("halves.geojson.json").read_text())
        assert out.read_bytes() == data and manifest["items"][0]["sha256"] == digest
        assert not lock_path(region.path).exists()  # pinned by the region file, not the lock
        assert manifest["items"][0]["url"] == url
        bad = replace(region, settings={**region.settings, "zones": [
            {**settings, "files": [{"url": url, "sha256": "0" * 64}]}]})
        other = tmp_path / "other" / "halves.geojson"
        with pytest.raises(SourceError, match="sha256"):
            fetch_zone_file(bad, "halves", "halves.geojson", other)
        assert not other.exists()
    assert prepare_zone_layer(region, "halves", [out], tmp_path / "p.geojson") == {
        "east": 1, "west": 1}


def test_an_http_layer_without_sha256_is_pinned_by_the_lock_file(tmp_path: Path) -> None:
    """Without a sha256 in the region file, the first download of a zone file records its sha256
    and size in the region's lock file; a later download of a file changed upstream is one error
    naming the URL and the lock file, with no partial file left and the lock unchanged."""
    import hashlib

    from httpserver import LoopbackServer

    from mapper.sources.lock import LockFile, lock_path

    data = _zones_geojson(tmp_path / "halves.geojson").read_bytes()
    with LoopbackServer() as server:
        url = server.add_file("/zones/halves.geojson", data)
        settings = {"name": "halves", "kind": "http", "field": "area", "files": [{"url": url}]}
        region = _region(tmp_path / "r", [settings])
        lock = LockFile(lock_path(region.path))
        out = tmp_path / "resources" / "zones" / "halves" / "halves.geojson"
        fetch_zone_file(region, "halves", "halves.geojson", out)
        recorded = {url: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
        assert out.read_bytes() == data and lock.entries() == recorded
        manifest = json.loads(out.with_name("halves.geojson.json").read_text())
        assert manifest["items"][0]["sha256"] == recorded[url]["sha256"]
        # another machine (no local copy) after the publisher replaced the file
        server.add_file("/zones/halves.geojson", data.replace(b'"west"', b'"WEST"'))
        other = tmp_path / "other" / "halves.geojson"
        with pytest.raises(SourceError) as err:
            fetch_zone_file(region, "halves", "halves.geojson", other)
        message = str(err.value)
        assert url in message and str(lock.path) in message and "\n" not in message
        assert "delete the entry" in message
        assert not other.parent.exists() or list(other.parent.iterdir()) == []
        assert lock.entries() == recorded
    assert prepare_zone_layer(region, "halves", [out], tmp_path / "p.geojson") == {
        "east": 1, "west": 1}


def test_a_circumpolar_polygon_in_ease_grid_covers_the_region(tmp_path: Path) -> None:
    """A ring around the pole in EASE-Grid North (as NSIDC's permafrost map is drawn), cut to
    the region in its own CRS and then projected: exactly the region's window."""
    from mapper.zones import CLIP_MARGIN

    ring = shapely.Point(0, 0).buffer(5_000_000, 64).difference(
        shapely.Point(0, 0).buffer(1_500_000, 64))
    path = tmp_path / "ring.geojson"
    path.write_text(json.dumps({
        "type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:3408"}},
        "features": [{"type": "Feature", "properties": {"EXTENT": "C"},
                      "geometry": json.loads(shapely.to_geojson(ring))}]}))
    region = _region(tmp_path / "r", [{"name": "pf", "kind": "file", "field": "EXTENT",
                                       "path": str(path)}])
    prepare_zone_layer(region, "pf", [path], tmp_path / "pf.geojson")
    layer = read_zone_layer(tmp_path / "pf.geojson")
    window = shapely.box(LEFT, BOTTOM, RIGHT, TOP).buffer(CLIP_MARGIN, join_style="mitre")
    assert layer.zones == ("C",)
    assert layer.geometries[0].symmetric_difference(window).area < 1e-6 * window.area


# -- shapefiles, as GDAL's ogr2ogr wrote them -------------------------------------------------

UTM6N = Transformer.from_crs(3338, 32606, always_xy=True)


def _utm(geom: shapely.Geometry) -> shapely.Geometry:
    return shapely.transform(geom, lambda xy: np.column_stack(UTM6N.transform(xy[:, 0],
                                                                               xy[:, 1])))


@pytest.mark.skipif(shutil.which("ogr2ogr") is None,
                    reason="GDAL's ogr2ogr writes the shapefiles: install Debian's gdal-bin")
def test_shapefile_reads_as_gdal_wrote_it(tmp_path: Path) -> None:
    """Polygons with a hole and a multipolygon, in UTM 6N, written by the system's ogr2ogr
    (loose and zipped as NRCS publishes its MLRAs) and read through pyogrio's own GDAL: the same
    shapes, attributes and CRS back; a window skips the far shape; missing parts are named."""
    holed = shapely.Polygon(WEST.exterior.coords, [shapely.box(LEFT, BOTTOM, LEFT + 500,
                                                               BOTTOM + 500).exterior.coords])
    multi = shapely.MultiPolygon([shapely.box(MID, BOTTOM, MID + 500, BOTTOM + 500),
                                  shapely.box(MID + 800, BOTTOM, RIGHT, TOP)])
    far = shapely.box(LEFT + 300_000, BOTTOM, LEFT + 301_000, TOP)  # 300 km east: not read
    shapes = {"west": _utm(holed), "east": _utm(multi), "far": _utm(far)}
    features = [{"type": "Feature", "properties": {"MLRARSYM": name, "ratio": i + 0.5, "n": i},
                 "geometry": json.loads(shapely.to_geojson(g))}
                for i, (name, g) in enumerate(shapes.items())]
    src = tmp_path / "in.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties":
                               {"name": "urn:ogc:def:crs:EPSG::32606"}}, "features": features}))
    folder = tmp_path / "MLRA_52_2022"
    folder.mkdir()
    subprocess.run(["ogr2ogr", "-f", "ESRI Shapefile", str(folder / "MLRA_52.shp"), str(src)],
                   check=True, capture_output=True)
    archive = tmp_path / "MLRA_52_2022.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f"MLRA_52_2022/{f.name}")
    for path in (folder / "MLRA_52.shp", archive):
        source = open_vector(path)
        assert source.crs.to_epsg() == 32606 and source.fields == ("MLRARSYM", "ratio", "n")
        geoms, names = read_vector(source, "MLRARSYM")
        assert list(names) == ["west", "east", "far"]
        assert list(read_vector(source, "ratio")[1]) == [0.5, 1.5, 2.5]
        assert list(read_vector(source, "n")[1]) == [0, 1, 2]
        for geom, name in zip(geoms, names, strict=True):
            want = shapes[name]
            assert geom.geom_type == want.geom_type
            assert geom.symmetric_difference(want).area < 1e-3
        assert len(geoms[0].interiors) == 1 and len(geoms[1].geoms) == 2
    # the prepared layer from the zip, as an http layer names it: back in EPSG:3338
    settings = {"name": "mlra", "kind": "http", "field": "MLRARSYM",
                "files": [{"url": "https://example.invalid/MLRA_52_2022.zip"}],
                "layer": "MLRA_52_2022/MLRA_52.shp"}
    region = _region(tmp_path / "r", [settings])
    counts = prepare_zone_layer(region, "mlra", [archive], tmp_path / "mlra.geojson")
    assert counts == {"east": 1, "west": 1}
    window = _utm(shapely.box(LEFT - 1000, BOTTOM - 1000, RIGHT + 1000, TOP + 1000))
    near = read_vector(open_vector(archive, "MLRA_52_2022/MLRA_52.shp"), "MLRARSYM", window)[1]
    assert list(near) == ["west", "east"]  # GDAL skipped the far shape
    layer = read_zone_layer(tmp_path / "mlra.geojson")
    west = dict(zip(layer.zones, layer.geometries, strict=True))["west"]
    expected = holed.intersection(west.envelope)
    assert west.symmetric_difference(expected).area < 1.0  # m², after UTM and back
    assert layer.assign(np.array([LEFT + 250.0]), np.array([BOTTOM + 250.0]))[0] == OUTSIDE
    bad = region.settings["zones"][0] | {"layer": "MLRA_52_2022/nope.shp"}
    with pytest.raises(InputError, match="has no member MLRA_52_2022/nope.shp.*'layer'"):
        prepare_zone_layer(replace(region, settings={**region.settings, "zones": [bad]}),
                           "mlra", [archive], tmp_path / "x.geojson")
    # a loose shapefile without one of its parts: one line naming the file and the part
    for part, match in ((".shx", r"MLRA_52\.shp: not readable by GDAL.*\.shx.*fetch its"),
                        (".prj", r"MLRA_52\.shp: the layer has no CRS.*\.prj")):
        (folder / "MLRA_52").with_suffix(part).unlink()
        with pytest.raises(InputError, match=match) as err:
            open_vector(folder / "MLRA_52.shp")
        assert "\n" not in str(err.value)
        with zipfile.ZipFile(archive) as z:  # put it back for the next part
            z.extract(f"MLRA_52_2022/MLRA_52{part}", tmp_path)


TOGETHER = """
import json, sys
first, second, tif, layer, mask = sys.argv[1:]
__import__(first), __import__(second)
import pyogrio, rasterio, shapely
from rasterio.warp import transform_bounds
from mapper.zones import open_vector, read_vector
with rasterio.open(tif) as ds:  # rasterio's GDAL and PROJ
    out = {"bounds": transform_bounds(ds.crs, "EPSG:4326", *ds.bounds),
           "total": float(ds.read(1).sum())}
source = open_vector(layer)  # pyogrio's GDAL and PROJ (the URN looked up in its proj.db)
geoms, values = read_vector(source, "area", mask=shapely.from_wkt(mask))
out |= {"crs": source.crs.to_epsg(), "zones": list(values), "area": geoms[0].area,
        "gdal": [rasterio.__gdal_version__, pyogrio.__gdal_version_string__]}
print(json.dumps(out))
"""


@pytest.mark.parametrize("first", ["rasterio", "pyogrio"])
def test_rasterio_and_pyogrio_work_in_one_process(tmp_path: Path, first: str) -> None:
    """Each wheel bundles its own GDAL and PROJ: imported in either order, rasterio opens and
    reprojects a raster's bounds and pyogrio reads a layer in UTM (with a spatial filter, GEOS
    in its GDAL), each giving what pyproj and shapely give here."""
    tif = tmp_path / "r.tif"
    write_geotiff(tif, np.arange(16, dtype=np.float32).reshape(1, 4, 4),
                  Affine(1000.0, 0, LEFT, 0, -1000.0, TOP), "EPSG:3338")
    layer = tmp_path / "halves.geojson"
    features = [{"type": "Feature", "properties": {"area": name},
                 "geometry": json.loads(shapely.to_geojson(_utm(g)))}
                for name, g in (("west", WEST), ("east", EAST))]
    layer.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties":
                                 {"name": "urn:ogc:def:crs:EPSG::32606"}}, "features": features}))
    second = {"rasterio": "pyogrio", "pyogrio": "rasterio"}[first]
    mask = _utm(shapely.box(LEFT, BOTTOM, LEFT + 500, BOTTOM + 500)).wkt  # in the west only
    run = subprocess.run([sys.executable, "-c", TOGETHER, first, second, str(tif), str(layer),
                          mask], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    bounds = Transformer.from_crs(3338, 4326, always_xy=True).transform_bounds(
        LEFT, TOP - 4000, LEFT + 4000, TOP, densify_pts=21)
    assert out["bounds"] == pytest.approx(bounds, abs=1e-9) and out["total"] == 120.0
    assert out["crs"] == 32606 and out["zones"] == ["west"]
    assert out["area"] == pytest.approx(_utm(WEST).area)
    assert "ERROR" not in run.stderr and "proj.db" not in run.stderr, run.stderr


# -- the report by zone, against a computation by hand ----------------------------------------

# 10 points: 4 west, 5 east, 1 outside every zone (x within 200 m of the region's east edge)
PX = np.array([LEFT + 100, LEFT + 300, LEFT + 500, LEFT + 700,
               MID + 100, MID + 300, MID + 500, MID + 700, MID + 900, RIGHT - 50])
PY = np.linspace(BOTTOM + 100, TOP - 100, 10)
Y_TRUE = np.array([1, 0, 1, 0, 1, 1, 0, 0, 1, 0])
P = {"rf": np.array([0.7, 0.6, 0.4, 0.2, 0.8, 0.3, 0.55, 0.1, 0.9, 0.35]),
     "miso": np.array([0.9, 0.1, 0.8, 0.65, 0.45, 0.7, 0.2, 0.3, 0.6, 0.7])}
FOLDS = {"random": np.arange(10) % 2, "sh1km": (np.arange(10) >= 5).astype(int)}
EMPTY = ("sh1km", 1)  # a fold whose holdout left no training point: no predictions


def _fold_files(root: Path) -> list[Path]:
    files = []
    for split, folds in FOLDS.items():
        for model, p in P.items():
            for fold in (0, 1):
                i = np.flatnonzero(folds == fold)
                proba = np.stack([1 - p[i], p[i]], axis=1)
                n_train = 0 if (split, fold) == EMPTY else 5
                y_pred = (p[i] > 0.5).astype(int)
                if n_train == 0:
                    proba[:], y_pred = np.nan, np.full(len(i), -1)
                df = pd.DataFrame({"obs_id": [f"o{k}" for k in i], "x": PX[i], "y": PY[i],
                                   "y_true": Y_TRUE[i], "p_absent": proba[:, 0],
                                   "p_present": proba[:, 1], "y_pred": y_pred,
                                   "model": model, "split": split, "fold": fold})
                path = root / "cv" / "nsp" / f"{model}_{split}_f{fold}.parquet"
                _write(df, path, {"task": "nsp", "model": model, "split": split, "fold": fold,
                                  "n_train": n_train, "n_test": len(i), "note": "",
                                  "train_counts": [3, 2] if n_train else [0, 0],
                                  "classes": [], "region": "tiny"})
                files.append(path)
    return files


def _auc_by_pairs(y: np.ndarray, p: np.ndarray) -> float:
    """P(score of a present point > score of an absent one), ties half: every pair counted."""
    pos, neg = p[y == 1], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_a_zone_is_marked_thin_by_the_predictions_its_figures_rest_on(
    halves: tuple[Region, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """East has 5 points, but SH-1km's fold without training points leaves 1 scored there: its
    SH-1km row is marked, its Random row (5 scored) and its points row are not."""
    import mapper.zonal

    monkeypatch.setattr(mapper.zonal, "THIN_ZONE", 3)
    region, layer = halves
    out = tmp_path / "reports" / "nsp.md"
    report(region, "nsp", _fold_files(tmp_path), out, zones=[layer])
    by_zone = out.read_text().split("## Results by zone")[1]
    assert "| east | 5 | 50.0% |" in by_zone and f"| {OUTSIDE} * | 1 |" in by_zone
    random_rows = by_zone.split("Random:")[1].split("SH-1km:")[0]
    holdout_rows = by_zone.split("SH-1km:")[1]
    assert any(r.startswith("| east | 5 |") for r in random_rows.splitlines())
    assert any(r.startswith("| east * | 1 |") for r in holdout_rows.splitlines())
    assert any(r.startswith("| west (the west) | 4 |") for r in holdout_rows.splitlines())


def test_report_gives_per_zone_counts_and_metrics(halves: tuple[Region, Path],
                                                  tmp_path: Path) -> None:
    region, layer = halves
    out = tmp_path / "reports" / "nsp.md"
    content = report(region, "nsp", _fold_files(tmp_path), out, zones=[layer])
    data = json.loads((tmp_path / "reports" / "nsp.json").read_text())
    zones = data["zones"]["halves"]["zones"]
    assert list(zones) == ["east", "west", OUTSIDE]
    members = {"west": [0, 1, 2, 3], "east": [4, 5, 6, 7, 8], OUTSIDE: [9]}
    for zone, idx in members.items():
        assert zones[zone]["points"] == len(idx)
        assert zones[zone]["present"] == int(Y_TRUE[idx].sum())
        for split, folds in FOLDS.items():
            used = [k for k in idx if (split, folds[k]) != EMPTY]
            for model, p in P.items():
                cell = zones[zone]["splits"][split][model]
                assert cell["n"] == len(used), (zone, split, model)
                if not used:
                    assert cell["accuracy"] is None  # NaN in JSON
                    continue
                y, s = Y_TRUE[used], p[used]
                pred = (s > 0.5).astype(int)
                assert cell["accuracy"] == pytest.approx((pred == y).mean())
                present = y == 1
                r1 = (pred[present] == 1).mean() if present.any() else None
                assert cell["r1"] == (pytest.approx(r1) if r1 is not None else None)
                both = present.any() and (~present).any()
                assert cell["auc"] == (pytest.approx(_auc_by_pairs(y, s)) if both else None)
    # west, Random split, written out: RF predicts 1 1 0 0 (0.7 0.6 0.4 0.2), MiSo 1 0 1 1, for
    # the labels 1 0 1 0
    assert zones["west"]["splits"]["random"]["rf"]["accuracy"] == pytest.approx(0.5)
    assert zones["west"]["splits"]["random"]["miso"]["accuracy"] == pytest.approx(0.75)
    assert content["zones"]["halves"]["title"] == "two halves"
    md = out.read_text()
    assert "## Results by zone: two halves" in md
    assert "| west (the west) * | 4 | 40.0% | 2 (50%) |" in md  # thin: < THIN_ZONE points
    assert f"| {OUTSIDE} * | 1 | 10.0% | 0 (0%) |" in md
    assert THIN_ZONE > 5
    by_zone = md[md.index("## Results by zone"):]  # the reliability section has splits too
    random_rows = by_zone.split("Random:")[1].split("SH-1km:")[0]
    west = [r for r in random_rows.splitlines() if r.startswith("| west")][0]
    cells = [c.strip() for c in west.strip("|").split("|")]
    assert cells[1:4] == ["4", "0.500", "0.750"]  # n, RF and MiSo accuracy side by side
    header = [r for r in random_rows.splitlines() if r.startswith("| zone")][0]
    assert "Random Forest accuracy | MiSo accuracy | Random Forest AUC" in header
    sh1km_rows = by_zone.split("SH-1km:")[1]
    east = [r for r in sh1km_rows.splitlines() if r.startswith("| east")][0]
    assert east.split("|")[2].strip() == "1"  # o5-o8 were in the fold without training points


def test_soil_order_by_zone_has_accuracy_and_macro_f1(halves: tuple[Region, Path],
                                                      tmp_path: Path) -> None:
    """Multiclass: per zone accuracy and macro F1 (scikit-learn's, over the classes of the
    zone's test points), no AUC or R1."""
    from sklearn.metrics import f1_score

    from mapper.tasks import TASKS

    region, layer = halves
    classes = TASKS["soilorder"].classes
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, 10)
    y_pred = np.where(rng.random(10) < 0.6, y_true, rng.integers(0, 4, 10))
    files = []
    for fold in (0, 1):
        i = np.flatnonzero(np.arange(10) % 2 == fold)
        proba = np.full((len(i), len(classes)), 0.01)
        proba[np.arange(len(i)), y_pred[i]] = 0.9
        df = pd.DataFrame({"obs_id": [f"o{k}" for k in i], "x": PX[i], "y": PY[i],
                           "y_true": y_true[i], "y_pred": y_pred[i], "model": "miso",
                           "split": "random", "fold": fold})
        for c, col in enumerate(TASKS["soilorder"].probability_columns):
            df[col] = proba[:, c]
        path = tmp_path / "cv" / f"miso_random_f{fold}.parquet"
        _write(df, path, {"task": "soilorder", "model": "miso", "split": "random", "fold": fold,
                          "n_train": 5, "n_test": len(i), "note": "", "train_counts": [1] * 7,
                          "classes": [], "region": "tiny"})
        files.append(path)
    content = report(region, "soilorder", files, tmp_path / "so.md", zones=[layer])
    for zone, idx in {"west": [0, 1, 2, 3], "east": [4, 5, 6, 7, 8]}.items():
        cell = content["zones"]["halves"]["zones"][zone]["splits"]["random"]["miso"]
        assert set(cell) == {"n", "accuracy", "macro_f1"}
        assert cell["accuracy"] == pytest.approx((y_true[idx] == y_pred[idx]).mean())
        assert cell["macro_f1"] == pytest.approx(
            f1_score(y_true[idx], y_pred[idx], average="macro", zero_division=0,
                     labels=np.unique(y_true[idx])))
    assert "MiSo macro F1" in (tmp_path / "so.md").read_text()


def test_report_without_zone_layers_has_no_zone_section(tmp_path: Path) -> None:
    region = _region(tmp_path)
    content = report(region, "nsp", _fold_files(tmp_path), tmp_path / "nsp.md")
    assert content["zones"] == {} and "Results by zone" not in (tmp_path / "nsp.md").read_text()


# -- the demo's synthetic zones ----------------------------------------------------------------


def _climate(path: Path) -> np.ndarray:
    """A 1 km climate raster in EPSG:3338 (the demo's band order): summer warmth 1000 to 1900
    degree-days from west to east, one nodata pixel."""
    warmth = np.tile(np.linspace(1000, 1900, 10, dtype=np.float32), (6, 1))
    warmth[0, 0] = -9999.0
    data = np.stack([np.full_like(warmth, 300.0), warmth, np.full_like(warmth, -25.0)])
    write_geotiff(path, data, Affine(1000.0, 0, 240_371.0, 0, -1000.0, 1_650_371.0), "EPSG:3338",
                  nodata=-9999.0, descriptions=["precip_annual", "summer_warmth", "jan_tmin"])
    return warmth


def test_demo_zones_are_synthetic_classes_of_summer_warmth(tmp_path: Path) -> None:
    warmth = _climate(tmp_path / "climate.tif")
    areas = synthesize_zones(tmp_path / "climate.tif", tmp_path / "zones.geojson")
    valid = warmth != -9999.0
    classes = np.digitize(warmth, THRESHOLDS)
    expected = {ZONES[c]: float(((classes == c) & valid).sum()) for c in range(3)}
    assert areas == pytest.approx(expected)  # km²: 1 km pixels
    gj = json.loads((tmp_path / "zones.geojson").read_text())
    assert gj["synthetic"] is True and "SYNTHETIC" in gj["description"]
    assert [f["properties"]["zone"] for f in gj["features"]] == list(ZONES)
    first = (tmp_path / "zones.geojson").read_bytes()
    synthesize_zones(tmp_path / "climate.tif", tmp_path / "again.geojson")
    assert (tmp_path / "again.geojson").read_bytes() == first  # deterministic
    settings = {"name": "climate_zone", "kind": "demo", "field": "zone"}
    region = _region(tmp_path / "r", [settings])
    prepare_zone_layer(region, "climate_zone", [tmp_path / "zones.geojson"],
                       tmp_path / "prepared.geojson")
    layer = read_zone_layer(tmp_path / "prepared.geojson")
    assert layer.synthetic and layer.zones == ("cool", "moderate", "warm")
    # a pixel centre of each class lands in its zone after EPSG:4326 and back
    cols = np.array([1, 5, 9])
    x = 240_371.0 + 1000.0 * (cols + 0.5)
    y = np.full(3, 1_650_371.0 - 2500.0)
    assert list(layer.assign(x, y)) == [ZONES[c] for c in np.digitize(warmth[2, cols], THRESHOLDS)]


# -- the workflow ------------------------------------------------------------------------------


def test_plan_makes_the_zone_layers_before_the_reports(tmp_path: Path) -> None:
    import yaml

    project = make_project(tmp_path / "tiny")
    settings = yaml.safe_load(project.region_file.read_text())
    settings["zones"] = [{"name": "climate_zone", "kind": "demo", "field": "zone"}]
    project.region_file.write_text(yaml.safe_dump(settings))
    jobs = planned_jobs(project, *project.reports())
    assert jobs["demo_zones"] == 1 and jobs["zone_layer"] == 1 and jobs["report"] == 2
    assert jobs["demo_sources"] == 1  # the demo's own sources: one job, as without zones


def test_statewide_plan_fetches_and_prepares_both_zone_layers(tmp_path: Path) -> None:
    project = make_statewide_project(tmp_path)
    targets = [f"resources/{project.region}/zones/{n}.geojson" for n in ("permafrost_zone", "mlra")]
    jobs = planned_jobs(project, *targets)
    assert jobs == {"fetch_zone_file": 5, "zone_layer": 2}  # permaice's 4 parts, mlra's zip
