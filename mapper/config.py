"""Configuration: load, validate against the JSON schemas, fill defaults; regions and boundaries.

The schemas shipped in the package (``mapper/schemas/``) are the single definition of every key:
unknown keys are rejected, types checked, defaults filled (:mod:`mapper.schema`). Errors are one
line naming the file and the key.

A *resolved* configuration (:func:`resolve_config`, what :func:`load_config` returns) holds every
region by value: ``regions[name] = {"origin": <where its settings came from>, "settings": <the
region file with its ``region_overrides`` merged in, validated, defaults filled>}``. The Snakefile
resolves the configuration it builds the DAG from (config files and ``--config`` merged) and writes
it with :func:`write_run_config`; every ``python -m mapper`` command of the workflow is given that
file, so a job sees exactly the settings the DAG was built with, whatever the region files say by
the time it runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import shapely
import yaml
from pyproj import CRS
from pyproj.exceptions import CRSError

from mapper.blending import CropLattice
from mapper.errors import ConfigError
from mapper.grid import Lattice, reproject, tiles_of
from mapper.region_checks import check_region_settings
from mapper.schema import validate
from mapper.sources.settings_checks import check_source_settings
from mapper.yaml_files import read_yaml

DEFAULT_CONFIG = "config/config.yaml"
"""The config file a command reads when given none (the Snakefile's ``configfile``)."""
RUN_CONFIG_ENV = "MAPPER_RUN_CONFIG"
"""Environment variable naming a run's resolved config file (:func:`write_run_config`) to the
jobs of the run that parse the Snakefile again (cluster jobs, ``run:`` jobs)."""
RUN_CONFIG_HEADER = (
    "# The configuration a Snakemake run built its DAG from, written for its jobs: config files\n"
    "# and --config merged, every region by value, validated. Named by its content; not edited.\n"
)


def load_config(path: str | Path | Sequence[str | Path] | None = None) -> dict:
    """Read a config file, or several (a site file after ``config/config.yaml``) each merged over
    the ones before (:func:`merge_settings`, as Snakemake merges its config files), and resolve
    it (see :func:`resolve_config`). None: ``config/config.yaml``."""
    paths = _config_paths(path)
    if path is None and not Path(DEFAULT_CONFIG).is_file():
        raise ConfigError(
            f"{DEFAULT_CONFIG}: not found in {Path.cwd()}; run from the project's folder, or "
            "give the config with --config"
        )
    data: dict = {}
    for each in paths:
        data = merge_settings(data, read_yaml(each))
    if "regions" not in data and "region_overrides" in data:  # a site file on its own
        raise ConfigError(
            f"{' + '.join(map(str, paths))}: no 'regions', only 'region_overrides': a site file "
            "is merged over a config; give the config first: --config config/config.yaml "
            f"--config {paths[-1]}"
        )
    return resolve_config(data, " + ".join(map(str, paths)))


def job_config(named: str | None, config: dict, source: str) -> dict:
    """The configuration of a job that parses the Snakefile again (a cluster job, a ``run:``
    job): the run's file that ``named`` (:data:`RUN_CONFIG_ENV`) names, never the region files
    as they are by the time the job starts. Without the variable (an executor that does not pass
    the environment on, a job command run by hand) ``config`` is resolved as a run does, with a
    warning; a named file that is gone is one ConfigError with the fix."""
    if not named:
        print(f"warning: no {RUN_CONFIG_ENV} in this job's environment: its settings are read "
              "from the config and region files as they are now, not as the run's DAG was "
              "built from them", file=sys.stderr)
        return resolve_config(config, source)
    if not Path(named).is_file():
        raise ConfigError(
            f"{named}: the run's settings file ({RUN_CONFIG_ENV}) is gone (.snakemake/mapper "
            "emptied during the run?); start the run again"
        )
    print(f"settings of the run: {named}", file=sys.stderr)
    return load_config(named)


def _config_paths(path: str | Path | Sequence[str | Path] | None) -> list[str | Path]:
    """The config files :func:`load_config` reads for ``path``, in order."""
    return ([DEFAULT_CONFIG] if path is None
            else [path] if isinstance(path, (str, Path)) else list(path) or [DEFAULT_CONFIG])


def load_run_region(path: str | Path | Sequence[str | Path] | None, name: str) -> Region:
    """Region ``name`` of the config files ``path`` (:func:`load_config`), as a command's
    ``--config`` and ``--region`` give them: an unknown name is one error that names the files
    read and the regions they define."""
    config = load_config(path)
    if name not in config["regions"]:
        read = " + ".join(map(str, _config_paths(path)))
        known = ", ".join(sorted(config["regions"]))
        raise ConfigError(
            f"{read}: no region '{name}' in 'regions' (known: {known}); give one of those to "
            "--region, or add the region's file to 'regions' in a config given with --config"
        )
    return load_region(config, name)


def resolve_config(data: dict, source: str | Path) -> dict:
    """Validate a top-level config and every region it names; return it resolved (a new dict).

    Each region file is read, its ``region_overrides`` entry merged in (:func:`merge_settings`)
    and the result validated against the region schema; ``regions`` then maps each name to
    ``{"origin", "settings"}`` and ``region_overrides`` is emptied (applied). Resolving a resolved
    config gives the same config. ``source`` names the config file(s) in messages.
    """
    config = validate(copy.deepcopy(data), "config.schema.yaml", source)
    overrides = config["region_overrides"]
    unknown = sorted(set(overrides) - set(config["regions"]))
    if unknown:
        raise ConfigError(
            f"{source}: key 'region_overrides.{unknown[0]}': no region '{unknown[0]}' in "
            "'regions'; fix the name or add the region"
        )
    config["regions"] = {name: _resolve_region(config, name, source) for name in config["regions"]}
    config["region_overrides"] = {}
    return config


def _resolve_region(config: dict, name: str, source: str | Path) -> dict[str, Any]:
    """``{"origin", "settings"}`` of region ``name``: its file (or value) with overrides merged."""
    entry = config["regions"][name]
    if isinstance(entry, str):
        if not Path(entry).is_file():
            raise ConfigError(
                f"{entry}: the region file of 'regions.{name}' in {source} not found; check the "
                "path (read from the folder the command or Snakemake runs in: the project's)"
            )
        origin, settings = entry, read_yaml(entry)
    else:
        origin, settings = entry["origin"], copy.deepcopy(entry["settings"])
    override = config.get("region_overrides", {}).get(name)
    if override:
        merged = merge_settings(settings, override)
        merged.get("sources", {}).update(_sources_of_another_kind(settings, override))
        settings = merged
        origin = f"{origin} + region_overrides.{name} of {source}"
    settings = validate(settings, "region.schema.yaml", origin)
    check_source_settings(settings, origin)
    check_region_settings(settings, origin, float(config["grid"]["res"]))
    return {"origin": origin, "settings": settings}


def _sources_of_another_kind(settings: dict, override: dict) -> dict[str, dict]:
    """The override's sources whose ``kind`` differs from the region file's, each whole: merged
    key by key, the keys of the file's kind would stay beside the new kind's (a cells DEM's
    ``url_template`` under ``kind: file``), and an override cannot remove a key."""
    given = settings.get("sources") or {}
    return {
        name: copy.deepcopy(section)
        for name, section in (override.get("sources") or {}).items()
        if isinstance(section, dict) and "kind" in section
        and section["kind"] != (given.get(name) or {}).get("kind")
    }


def merge_settings(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in: mappings key by key, any other value replaced (as
    Snakemake merges config files); neither argument is changed."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_run_config(config: dict, folder: str | Path) -> Path:
    """Write a resolved config to ``folder/config-<16 hex of its SHA-256>.yaml``; return the path.

    Named by its content: the same configuration always gives the same file, written once
    (atomically) and then only read, so jobs of a run never see another run's settings. YAML
    keeps every value exact (floats are written so that they read back identical).
    """
    from mapper.files import atomic_path

    text = RUN_CONFIG_HEADER + yaml.safe_dump(config, sort_keys=False)
    path = Path(folder) / f"config-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if path.is_file() and path.read_text() == text:
        return path
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text)
    except FileNotFoundError:
        # another process writing the same file (a cluster job parsing the workflow) removed
        # this one's temporary as stale; its rename leaves the same content
        if not (path.is_file() and path.read_text() == text):
            raise
    return path


@dataclass(frozen=True)
class Region:
    """A validated region: its name, settings (dict, defaults filled), lattice and grid.

    ``path`` says where the settings were read from (the region file, and any overrides) for
    messages; ``grid`` is the config's validated ``grid`` section the lattice was built from.
    """

    name: str
    settings: dict[str, Any]
    lattice: Lattice
    path: str
    grid: dict[str, Any]

    @property
    def synthetic(self) -> bool:
        return bool(self.settings["synthetic"])

    def boundary(self) -> shapely.Geometry:
        """The region's boundary in EPSG:3338 (see :func:`read_boundary`)."""
        return read_boundary(self.settings["boundary"])

    def area(self) -> shapely.Geometry:
        """The mapped area in EPSG:3338: the boundary buffered by ``buffer_m`` metres.

        An out cell (a pixel of the maps) is mapped when its centre lies inside it
        (:func:`mapper.grid.cells_inside`); every other cell is nodata in every product and is
        never decoded. Observations and training crops are placed by it too.
        """
        return mapped_area(self.settings["boundary"], float(self.settings["buffer_m"]))

    def tiles(self) -> list[str]:
        """The mapped tiles: those that meet the mapped area (each predicted and mosaicked)."""
        return region_tiles(self.settings["boundary"], self.lattice,
                            float(self.settings["buffer_m"]))

    def missing_tiles(self, given: Iterable[str], stacked: bool = False) -> list[str]:
        """The mapped tiles (:meth:`tiles`; with ``stacked``, the mapped and context tiles of
        :meth:`stacked_tiles`) not among ``given`` tile ids, in lattice order."""
        given = set(given)
        tiles = self.stacked_tiles() if stacked else self.tiles()
        return [tile for tile in tiles if tile not in given]

    @property
    def context_px(self) -> int:
        """How far (lattice pixels) the crops of prediction and training reach from a mapped
        point: a prediction crop holds the cell it answers, a training crop its centre (a point
        of the area, or an observation shifted by less than half a crop)."""
        return max(int(self.settings["prediction"]["crop_px"]),
                   int(self.settings["training"]["crop_px"]))

    def stacked_tiles(self) -> list[str]:
        """The mapped tiles and the *context tiles*: every tile with a pixel within
        :attr:`context_px` of the mapped area, stacked so that a crop near the region's edge
        reads the sources wherever they have data, as an interior crop does (never nodata for
        want of a tile). A function of the area and the reach, not of which tiles are mapped."""
        return region_tiles(self.settings["boundary"], self.lattice,
                            float(self.settings["buffer_m"]), self.context_px)

    def crop_lattice(self) -> CropLattice:
        """The prediction crop lattice of the region's ``prediction`` settings."""
        return CropLattice.from_settings(self.settings["prediction"], self.lattice.res)

    def tile_context(self, tile: str) -> list[str]:
        """The stacked tiles that the prediction crops of ``tile`` may read (itself included),
        sorted: the predict job's stacks."""
        crops = self.crop_lattice()
        reach = crops.reads(crops.out_window(self.lattice.tile_window(tile)))
        stacked = set(self.stacked_tiles())
        return sorted(t for t in self.lattice.tiles_in_window(reach) if t in stacked)


def load_region(config: dict, name: str) -> Region:
    """Region ``name`` of a config from :func:`load_config` or :func:`resolve_config`."""
    if name not in config["regions"]:
        known = ", ".join(sorted(config["regions"]))
        raise ConfigError(f"region '{name}' is not in config 'regions' (known: {known})")
    entry = config["regions"][name]
    if isinstance(entry, str):  # a validated but unresolved config
        entry = _resolve_region(config, name, "config")
    settings = copy.deepcopy(entry["settings"])
    lattice = Lattice.from_config(config["grid"], settings["tile_px"])
    return Region(name, settings, lattice, entry["origin"], copy.deepcopy(config["grid"]))


def read_boundary(path: str | Path) -> shapely.Geometry:
    """Read a GeoJSON boundary (EPSG:4326 by default, or the CRS it names) as EPSG:3338 geometry.

    Plain JSON reading keeps DAG building fast and free of OGR; a longitude range past 180 degrees
    (Aleutians west of the antimeridian written as 172..180 or -188..-180) projects correctly
    because Alaska Albers is continuous across 180.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: boundary file not found; check the region's 'boundary' key")
    return _read_boundary_cached(str(path.resolve()), path.stat().st_mtime_ns)


GEOGRAPHIC_SEGMENT_DEG = 0.01
"""A boundary given in degrees is densified to vertices at most this far apart (about 1 km of
latitude) before projecting: the chord of a 0.01 degree edge departs from its curve in EPSG:3338
by under 1 cm, where a 2 degree edge's chord departs by about 350 m."""


@lru_cache(maxsize=8)
def _read_boundary_cached(path: str, _mtime: int) -> shapely.Geometry:
    try:
        with open(path, encoding="utf-8") as f:
            gj = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable GeoJSON file ({exc}); replace it") from None
    except UnicodeDecodeError:  # a shapefile, a GeoPackage, a zip, or Latin-1 text
        raise ConfigError(
            f"{path}: not UTF-8 GeoJSON; convert it: ogr2ogr -f GeoJSON -t_srs EPSG:4326 "
            f"boundary.geojson {path}"
        ) from None
    geom, crs = _boundary_geometry(path, gj)
    if not crs.equals(CRS.from_epsg(3338)):
        if crs.is_geographic:  # an edge is straight in degrees: keep its curve in Albers
            geom = shapely.segmentize(geom, GEOGRAPHIC_SEGMENT_DEG)
        geom = reproject(geom, crs, 3338)
        # a 1 mm grid makes the two sides of a cut at 180 degrees coincide (they differ by ~1e-9 m)
        geom = shapely.set_precision(shapely.make_valid(geom), 1e-3)
    # dissolve after projecting: pieces cut at 180 degrees meet only in EPSG:3338
    area = shapely.make_valid(shapely.union_all(shapely.make_valid(geom)))
    if area.geom_type in ("Polygon", "MultiPolygon") and area.area > 0:
        return area
    polygons = [p for p in shapely.get_parts(area) if p.geom_type == "Polygon" and p.area > 0]
    if not polygons:
        raise ConfigError(f"{path}: no polygon with an area; fix the file (a region's boundary "
                          "is a Polygon or MultiPolygon, in a Feature or FeatureCollection)")
    return shapely.union_all(polygons)  # lines or points beside the polygons are dropped


def _boundary_geometry(path: str, gj: Any) -> tuple[shapely.Geometry, CRS]:
    """The GeoJSON's geometries (as written) and their CRS; a malformed file is one ConfigError."""
    fix = "fix the file (a Polygon or MultiPolygon, in a Feature or FeatureCollection)"
    if not isinstance(gj, dict):
        raise ConfigError(f"{path}: not a GeoJSON object; {fix}")
    if gj.get("type") == "FeatureCollection":
        features = gj.get("features")
        if not isinstance(features, list):
            raise ConfigError(f"{path}: a FeatureCollection without a 'features' list; {fix}")
    else:
        features = [gj]
    try:
        geom = shapely.GeometryCollection(
            [shapely.geometry.shape(f.get("geometry", f)) for f in features]
        )
    except (AttributeError, KeyError, TypeError, ValueError, shapely.errors.ShapelyError) as exc:
        raise ConfigError(f"{path}: not a valid GeoJSON geometry ({exc}); {fix}") from None
    crs_member = gj.get("crs")
    if crs_member is None:
        crs = CRS.from_epsg(4326)
    else:
        try:
            crs = CRS.from_user_input(crs_member["properties"]["name"])
        except (KeyError, TypeError, CRSError) as exc:
            raise ConfigError(
                f"{path}: its 'crs' member names no CRS that PROJ knows ({exc}); write it as "
                "\"crs\": {\"type\": \"name\", \"properties\": {\"name\": \"EPSG:3338\"}}"
            ) from None
    west, south, east, north = geom.bounds if not geom.is_empty else (0, 0, 0, 0)
    if crs.is_geographic and (max(abs(west), abs(east)) > 360 or max(abs(south), abs(north)) > 90):
        said = ("the file names no CRS (GeoJSON without one is EPSG:4326)" if crs_member is None
                else f"the file names {crs_member['properties']['name']}")
        raise ConfigError(
            f"{path}: coordinates up to ({east:.0f}, {north:.0f}) are not longitude and "
            f"latitude, and {said}; reproject it to EPSG:4326, or name its CRS: \"crs\": "
            "{\"type\": \"name\", \"properties\": {\"name\": \"EPSG:3338\"}}"
        )
    return geom, crs


@lru_cache(maxsize=8)
def _area_cached(path: str, mtime: int, buffer_m: float) -> shapely.Geometry:
    boundary = _read_boundary_cached(path, mtime)
    if buffer_m <= 0:
        return boundary
    return shapely.make_valid(shapely.buffer(boundary, buffer_m, quad_segs=8))


def mapped_area(boundary_path: str | Path, buffer_m: float = 0.0) -> shapely.Geometry:
    """The boundary of a GeoJSON file (:func:`read_boundary`) buffered by ``buffer_m`` metres in
    EPSG:3338 (shapely's round joins, 8 segments a quarter circle); cached per file and buffer."""
    p = Path(boundary_path)
    if not p.exists():
        raise ConfigError(f"{p}: boundary file not found; check the region's 'boundary' key")
    return _area_cached(str(p.resolve()), p.stat().st_mtime_ns, float(buffer_m))


@lru_cache(maxsize=16)
def _tiles_cached(path: str, mtime: int, lattice: Lattice, buffer_m: float,
                  reach_px: int) -> tuple[str, ...]:
    return tuple(tiles_of(_area_cached(path, mtime, buffer_m), lattice, reach_px))


def check_places(region: Region) -> None:
    """The region's boundary read and placed on the lattice, as the workflow does when it starts:
    an unreadable boundary, one smaller than a pixel or one that meets no tile of the lattice
    (coordinates in another CRS than the file says, say) is one error naming the file."""
    path = region.settings["boundary"]
    if not Path(path).exists():  # the workflow checks every region: say which one names it
        raise ConfigError(f"{path}: boundary file not found; check the 'boundary' key of region "
                          f"'{region.name}' ({region.path})")
    boundary = region.boundary()
    res = float(region.lattice.res)
    if boundary.area < res * res:
        raise ConfigError(
            f"{path}: region '{region.name}''s boundary encloses {boundary.area:.3g} m^2 in "
            f"{region.lattice.crs}, less than one {res:g} m pixel; check its coordinates and "
            "CRS (a GeoJSON without a 'crs' member is read as EPSG:4326 longitude/latitude)"
        )
    if not region.tiles():
        left, bottom, right, top = boundary.bounds
        raise ConfigError(
            f"{path}: region '{region.name}' meets no tile of the lattice ({region.lattice.crs} "
            f"east and south of x {region.lattice.origin_x:.0f}, y {region.lattice.origin_y:.0f}): "
            f"its boundary lies at x {left:.0f}..{right:.0f}, y {bottom:.0f}..{top:.0f}; check its "
            "coordinates and CRS (a GeoJSON without a 'crs' member is read as EPSG:4326 "
            "longitude/latitude)"
        )


def region_tiles(boundary_path: str | Path, lattice: Lattice, buffer_m: float = 0.0,
                 reach_px: int = 0) -> list[str]:
    """The tiles meeting the boundary buffered by ``buffer_m`` (or within ``reach_px`` pixels of
    it: :func:`mapper.grid.tiles_of`), cached per boundary file, lattice, buffer and reach."""
    p = Path(boundary_path)
    if not p.exists():
        raise ConfigError(f"{p}: boundary file not found; check the region's 'boundary' key")
    return list(_tiles_cached(str(p.resolve()), p.stat().st_mtime_ns, lattice, float(buffer_m),
                              int(reach_px)))
