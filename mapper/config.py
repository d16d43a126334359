"""Configuration: load, validate against the JSON schemas, fill defaults; regions and boundaries.

The schemas in ``workflow/schemas/`` are the single definition of every key: unknown keys are
rejected, types checked, defaults filled. The same validation runs in the Snakefile (through
Snakemake's ``validate``) and in every ``python -m mapper`` command, so a job on a cluster node
sees exactly the settings the DAG was built with. Errors are one line naming the file and key.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import shapely
import yaml
from pyproj import CRS, Transformer

from mapper.errors import ConfigError
from mapper.grid import Lattice, tiles_of

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "workflow" / "schemas"


def _with_defaults(validator_class: type) -> type:
    """A validator that fills ``default`` values while validating (as Snakemake's validate does)."""
    validate_props = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001, ANN202
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


@cache
def _schema(name: str) -> dict:
    with open(SCHEMA_DIR / name) as f:
        return yaml.safe_load(f)


def validate(data: dict, schema_name: str, source: str | Path) -> dict:
    """Validate ``data`` in place against ``schema_name``, filling defaults; return it.

    Raises ConfigError with the file, the key path and the problem on one line.
    """
    validator = _Validator(_schema(schema_name))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        message = err.message
        if err.validator == "additionalProperties":
            message = f"{message}; remove it or check its spelling"
        raise ConfigError(f"{source}: key '{key}': {message}")
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found; check the path")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        reason = exc.__class__.__name__
        raise ConfigError(f"{path}: not valid YAML ({reason}); fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def load_config(path: str | Path = "config/config.yaml") -> dict:
    """Read and validate the top-level config (defaults filled)."""
    return validate(read_yaml(path), "config.schema.yaml", path)


@dataclass(frozen=True)
class Region:
    """A validated region: its name, settings (dict, defaults filled) and lattice."""

    name: str
    settings: dict[str, Any]
    lattice: Lattice
    path: Path

    @property
    def synthetic(self) -> bool:
        return bool(self.settings["synthetic"])

    def boundary(self) -> shapely.Geometry:
        """The region's boundary in EPSG:3338 (see :func:`read_boundary`)."""
        return read_boundary(self.settings["boundary"])

    def tiles(self) -> list[str]:
        return region_tiles(self.settings["boundary"], self.lattice)


def load_region(config: dict, name: str) -> Region:
    """Load region ``name`` of a validated config."""
    if name not in config["regions"]:
        known = ", ".join(sorted(config["regions"]))
        raise ConfigError(f"region '{name}' is not in config 'regions' (known: {known})")
    path = Path(config["regions"][name])
    settings = validate(read_yaml(path), "region.schema.yaml", path)
    lattice = Lattice.from_config(config["grid"], settings["tile_px"])
    return Region(name, settings, lattice, path)


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


@lru_cache(maxsize=8)
def _read_boundary_cached(path: str, _mtime: int) -> shapely.Geometry:
    try:
        with open(path) as f:
            gj = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable GeoJSON file ({exc}); replace it") from None
    features = gj["features"] if gj.get("type") == "FeatureCollection" else [gj]
    geom = shapely.GeometryCollection(
        [shapely.geometry.shape(f.get("geometry", f)) for f in features]
    )
    crs_name = gj.get("crs", {}).get("properties", {}).get("name", "EPSG:4326")
    crs = CRS.from_user_input(crs_name)
    if not crs.equals(CRS.from_epsg(3338)):
        transformer = Transformer.from_crs(crs, 3338, always_xy=True)
        geom = shapely.transform(geom, lambda xy: _project(transformer, xy))
        # a 1 mm grid makes the two sides of a cut at 180 degrees coincide (they differ by ~1e-9 m)
        geom = shapely.set_precision(shapely.make_valid(geom), 1e-3)
    # dissolve after projecting: pieces cut at 180 degrees meet only in EPSG:3338
    return shapely.make_valid(shapely.union_all(shapely.make_valid(geom)))


def _project(transformer: Transformer, xy: Any) -> Any:
    import numpy as np

    x, y = transformer.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


@lru_cache(maxsize=16)
def _tiles_cached(path: str, mtime: int, lattice: Lattice) -> tuple[str, ...]:
    return tuple(tiles_of(_read_boundary_cached(path, mtime), lattice))


def region_tiles(boundary_path: str | Path, lattice: Lattice) -> list[str]:
    """The region's tile ids (cached per boundary file and lattice)."""
    p = Path(boundary_path)
    if not p.exists():
        raise ConfigError(f"{p}: boundary file not found; check the region's 'boundary' key")
    return list(_tiles_cached(str(p.resolve()), p.stat().st_mtime_ns, lattice))
