"""Region files for tests: a square boundary, a region file and the config that names it.

Every test region is a square in EPSG:3338 (or a polygon given in EPSG:4326, :func:`pentagon`,
:func:`lonlat_boundary`) on the project lattice (origin (-2,600,000,
2,600,000) m, 10 m pixels), SYNTHETIC, with the four sources of kind ``demo`` unless a test
gives others. Paths in the files are absolute, so a config works from any working directory.
:func:`write_tiny_region` writes the three files for one region; :func:`write_region_file` and
:func:`write_config` write several regions under one config; :func:`changed_copy` copies a
region file with one change, for tests of bad settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ORIGIN = (-2_600_000.0, 2_600_000.0)
RES = 10.0
SOURCES = ("sentinel2", "dem", "climate", "observations")
Bounds = tuple[float, float, float, float]


def square_boundary(left: float, bottom: float, right: float, top: float) -> dict:
    """A GeoJSON FeatureCollection of one square, EPSG:3338 metres (named by its crs member)."""
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    return {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3338"}},
        "features": [
            {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                               "coordinates": [ring]}}
        ],
    }  # fmt: skip


def lonlat_boundary(points: list[tuple[float, float]]) -> dict:
    """A GeoJSON FeatureCollection of one polygon through ``points`` (EPSG:3338 metres, closed
    for it), written in EPSG:4326 longitude/latitude (no crs member: GeoJSON's default), as a
    user's boundary usually is."""
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True)
    ring = [list(to_lonlat.transform(x, y)) for x, y in [*points, points[0]]]
    return {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}],
    }


def pentagon(centre: tuple[float, float], radius: float) -> list[tuple[float, float]]:
    """An irregular pentagon around ``centre`` (EPSG:3338 metres): vertices at uneven angles and
    0.7 to 1 times ``radius``, so that no edge follows the lattice."""
    import math

    angles = (8.0, 85.0, 160.0, 215.0, 300.0)
    scales = (1.0, 0.8, 0.95, 0.7, 0.9)
    return [(centre[0] + radius * k * math.cos(math.radians(a)),
             centre[1] + radius * k * math.sin(math.radians(a)))
            for a, k in zip(angles, scales, strict=True)]


def demo_sources(seed: int = 1) -> dict[str, dict[str, Any]]:
    """The four sources, synthesized by ``python -m mapper demo`` from ``seed``."""
    return {name: {"kind": "demo", "seed": seed} for name in SOURCES}


def write_region_file(folder: Path, name: str, bounds: Bounds | None, tile_px: int,
                      geojson: dict | None = None, **settings: Any) -> Path:
    """``<folder>/<name>.geojson`` (the square ``bounds``: left, bottom, right, top; or the
    boundary ``geojson``) and ``<folder>/<name>.yaml``; returns the region file.

    ``settings`` are region-file sections (``model``, ``training``, ``prediction``, ...); a
    ``sources`` mapping replaces those of its names among the demo sources (seed 1).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    boundary = folder / f"{name}.geojson"
    boundary.write_text(json.dumps(geojson if geojson is not None else square_boundary(*bounds)))
    region = {
        "description": "tiny SYNTHETIC test region",
        "synthetic": True,
        "boundary": str(boundary),
        "tile_px": tile_px,
        **settings,
        "sources": {**demo_sources(), **settings.get("sources", {})},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(region, sort_keys=False))
    return path


def write_config(path: Path, regions: dict[str, Path]) -> Path:
    """A config at ``path`` on the project lattice naming ``regions`` (name -> region file)."""
    config = {
        "grid": {"crs": "EPSG:3338", "res": RES, "origin": list(ORIGIN)},
        "regions": {name: str(file) for name, file in regions.items()},
    }
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
    return Path(path)


def write_tiny_region(folder: Path, bounds: Bounds, tile_px: int, name: str = "tiny",
                      **settings: Any) -> Path:
    """Boundary, region file and ``config.yaml`` of one region ``name`` in ``folder``; returns
    the config (settings as in :func:`write_region_file`)."""
    region = write_region_file(folder, name, bounds, tile_px, **settings)
    return write_config(Path(folder) / "config.yaml", {name: region})


def changed_copy(config: Path, name: str, folder: Path,
                 change: Callable[[dict[str, Any]], object]) -> Path:
    """``<folder>/<name>.yaml``: region ``name`` of ``config`` after ``change(settings)``, and
    ``<folder>/config.yaml`` naming it in place of the original; returns the new config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    top = yaml.safe_load(Path(config).read_text())
    settings = yaml.safe_load(Path(top["regions"][name]).read_text())
    change(settings)
    region = folder / f"{name}.yaml"
    region.write_text(yaml.safe_dump(settings, sort_keys=False))
    top["regions"][name] = str(region)
    out = folder / "config.yaml"
    out.write_text(yaml.safe_dump(top, sort_keys=False))
    return out
