"""The demo region's zone layer, SYNTHETIC: climate zones cut from its synthetic climate normals.

``synthesize_zones(climate, out)`` classes the ``summer_warmth`` band of the demo's
``sources/climate.tif`` (EPSG:3338, 1 km, degree-days above 0 C) at :data:`THRESHOLDS` into
:data:`ZONES`, polygonises the classes (``rasterio.features.shapes``, pixel edges), dissolves
each class into one (Multi)Polygon and writes them as GeoJSON in EPSG:4326 (RFC 7946 longitude,
latitude, rounded to 1e-7 degrees, ~1 cm), ``properties.zone`` naming the class. The zones
therefore follow the climate the synthetic permafrost was drawn from (colder summers, more
permafrost), the role permafrost zones play for the real state.

A file of its own, made after the demo's sources and from them only: the sources, their
manifest and the truth are untouched (their checksums stay as they were). Deterministic: the same
climate gives byte-identical zones. Nothing here describes a real place.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from rasterio.features import shapes

from mapper.errors import InputError
from mapper.files import atomic_path
from mapper.raster import open_raster

logger = logging.getLogger(__name__)

BAND = "summer_warmth"
THRESHOLDS = (1400.0, 1650.0)
"""Degree-days splitting the demo's summer warmth (about 1030-1770) into three zones."""
ZONES = ("cool", "moderate", "warm")
"""Zone names, coolest first: below 1400, 1400 to 1650, and 1650 degree-days or more."""
NOTICE = ("SYNTHETIC zones of the demo region: summer warmth classes of its synthetic climate "
          "normals; they describe no real place")


def synthesize_zones(climate: str | Path, out: str | Path) -> dict[str, float]:
    """Write the demo's climate zones (module doc) to ``out``; return each zone's area in km²."""
    climate = Path(climate)
    with open_raster(climate) as ds:
        if BAND not in ds.descriptions:
            raise InputError(f"{climate}: no band '{BAND}' (bands: {ds.descriptions}); remake "
                             "the demo's sources")
        band = ds.descriptions.index(BAND) + 1
        values = ds.read(band, masked=True)
        transform, crs = ds.transform, ds.crs
    valid = ~np.ma.getmaskarray(values) & np.isfinite(values.filled(np.nan))
    classes = np.digitize(values.filled(np.nan), THRESHOLDS).astype(np.uint8)
    parts: dict[int, list[shapely.Geometry]] = {}
    for geom, value in shapes(classes, mask=valid, transform=transform, connectivity=4):
        parts.setdefault(int(value), []).append(shapely.geometry.shape(geom))
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def project(xy: np.ndarray) -> np.ndarray:
        lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
        return np.round(np.column_stack([lon, lat]), 7)

    features, areas = [], {}
    for value in sorted(parts):
        # vertices every 250 m at most: the pixel edges stay straight in EPSG:3338 when read back
        merged = shapely.segmentize(shapely.union_all(parts[value]), 250.0)
        areas[ZONES[value]] = float(merged.area / 1e6)
        features.append({
            "type": "Feature",
            "properties": {"zone": ZONES[value], "summer_warmth": _range(value)},
            "geometry": json.loads(shapely.to_geojson(shapely.transform(merged, project))),
        })
    doc = {"type": "FeatureCollection", "synthetic": True, "description": NOTICE,
           "source": str(climate), "features": features}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    logger.info("%s: %d SYNTHETIC climate zones (%s)", out, len(features),
                ", ".join(f"{z} {a:.0f} km²" for z, a in areas.items()))
    return areas


def _range(value: int) -> str:
    low = THRESHOLDS[value - 1] if value > 0 else None
    high = THRESHOLDS[value] if value < len(THRESHOLDS) else None
    if low is None:
        return f"< {high:.0f} degree-days"
    if high is None:
        return f">= {low:.0f} degree-days"
    return f"{low:.0f} to {high:.0f} degree-days"
