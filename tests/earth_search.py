"""A loopback replica of Element 84's Earth Search v1 (``sentinel-2-l2a``), for tests.

It answers as the real service does (stac-server), for what a client of this project reads:

- ``/v1``: the landing page (conformance classes core, item-search, query, sort, filter; links
  ``search`` for GET and POST, ``data``, ``conformance``);
- ``/v1/collections/sentinel-2-l2a``: the collection; any other path, another collection's
  included, ``404`` with ``{"code": "NotFound", "description": "Not Found"}`` (a search of an
  unknown collection is, as on stac-server, ``200`` with no items);
- ``/v1/search``: GET (query string) and POST (JSON body) with ``collections``, ``bbox`` (tested
  against each item's footprint polygon, not its bbox), ``intersects``, ``datetime`` (an instant
  or an interval, ``..`` open), ``query`` (``lt``, ``lte``, ``gt``, ``gte``, ``eq``), ``sortby``
  and ``limit`` (1..10000, default 10). Pages are a ``FeatureCollection`` with
  ``numberMatched``, ``numberReturned``, ``context`` and a ``next`` link carrying an opaque
  ``next`` token: in the query string for GET, in the repeated body (``merge: false``) for POST.
  A malformed request is answered ``400`` with ``{"code": "BadRequest", "description": ...}``;
- ``/v1/collections/sentinel-2-l2a/items/<id>``: each item;
- the COGs, at the paths of the ``sentinel-cogs`` bucket
  (``/sentinel-s2-l2a-cogs/<zone>/<band>/<square>/<year>/<month>/<id>/B04.tif``), uint16 DN,
  nodata 0, in the scene's UTM zone (EPSG:326xx), 10 m and 20 m bands and a 20 m SCL, served with
  Range and HEAD so GDAL's ``/vsicurl`` reads only the blocks it needs.

Items carry Earth Search's properties (``eo:cloud_cover``, ``proj:epsg``, ``mgrs:utm_zone``,
``mgrs:latitude_band``, ``mgrs:grid_square``, ``grid:code``, ``s2:processing_baseline``,
``s2:product_uri``, ``s2:datatake_id``, ``earthsearch:boa_offset_applied``, ...) and per asset
``proj:shape``, ``proj:transform``, ``eo:bands`` and ``raster:bands`` (scale 0.0001, offset -0.1
from baseline 04.00, as the real items say although their COGs hold DNs with that offset
removed).
The scenes' pixel values are SYNTHETIC, made by the test that adds them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import numpy as np
import shapely
import shapely.geometry
from affine import Affine
from httpserver import LoopbackServer
from pyproj import Transformer
from rasterio.io import MemoryFile

COLLECTION = "sentinel-2-l2a"
BUCKET = "/sentinel-s2-l2a-cogs"
BANDS: dict[str, tuple[str, int, str]] = {  # asset key: (file band, resolution, title)
    "blue": ("B02", 10, "Blue (band 2) - 10m"),
    "green": ("B03", 10, "Green (band 3) - 10m"),
    "red": ("B04", 10, "Red (band 4) - 10m"),
    "rededge1": ("B05", 20, "Red edge 1 (band 5) - 20m"),
    "rededge2": ("B06", 20, "Red edge 2 (band 6) - 20m"),
    "rededge3": ("B07", 20, "Red edge 3 (band 7) - 20m"),
    "nir": ("B08", 10, "NIR 1 (band 8) - 10m"),
    "swir16": ("B11", 20, "SWIR 1.6um (band 11) - 20m"),
    "swir22": ("B12", 20, "SWIR 2.2um (band 12) - 20m"),
}
CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/item-search#sort",
    "https://api.stacspec.org/v1.0.0/item-search#fields",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]
LATITUDE_BANDS = "CDEFGHJKLMNPQRSTUVWX"
JSON = {"Content-Type": "application/json"}
GEOJSON = {"Content-Type": "application/geo+json"}

Pixels = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``f(x, y)`` -> DN (uint16) at UTM pixel centres, for one band."""


@dataclass
class Scene:
    """One SYNTHETIC Sentinel-2 L2A granule piece: a square of ``size_m`` in a UTM zone."""

    item_id: str
    when: datetime
    cloud_cover: float
    baseline: str
    epsg: int  # 326xx
    x0: float  # upper-left corner (UTM metres, multiple of 20)
    y0: float
    size_m: float
    grid_square: str = "VC"
    datatake_start: datetime | None = None  # the pass's sensing start; default ``when``

    @property
    def datatake_id(self) -> str:
        """``s2:datatake_id`` as Earth Search gives it (``GS2B_20230912T133839_034041_N05.09``):
        shared by the granules of one pass; the absolute orbit counts 100-minute orbits."""
        start = self.datatake_start or self.when
        orbit = int(start.timestamp()) // 6000 % 1_000_000
        return f"G{self.item_id[:3]}_{start:%Y%m%dT%H%M%S}_{orbit:06d}_N{self.baseline}"


def cog_bytes(data: np.ndarray, transform: Affine, epsg: int, blocksize: int = 256) -> bytes:
    """A uint16 single-band COG (nodata 0, DEFLATE, no overviews) as Sentinel-2 L2A bands are
    stored, in memory."""
    with MemoryFile() as mem:
        with mem.open(
            driver="COG",
            width=data.shape[1],
            height=data.shape[0],
            count=1,
            dtype="uint16",
            crs=f"EPSG:{epsg}",
            transform=transform,
            nodata=0,
            blocksize=blocksize,
            compress="deflate",
            overviews="none",
        ) as dst:
            dst.write(data, 1)
        return mem.read()


class EarthSearch:
    """The replica, on a started :class:`LoopbackServer`."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.items: list[dict[str, Any]] = []
        self.searches: list[dict[str, Any]] = []
        self.sortby_drops_next = False
        """Answer as Earth Search did from January 2024 (Element84/earth-search#27): a POST
        search with ``sortby`` got a ``next`` link whose body had lost its ``next`` token, so
        following it gave the first page again, for ever."""
        self.stuck_paging = False
        """Every ``next`` link loses its token, whatever the search (a catalog whose paging
        does not advance)."""
        server.add_route("/v1", self._landing)
        server.add_route("/v1/conformance", self._conformance)
        server.add_route(f"/v1/collections/{COLLECTION}", self._collection)
        server.add_route("/v1/search", self._search)
        server.fallback = self._not_found

    @property
    def url(self) -> str:
        return self.server.url("/v1")

    # -- content --------------------------------------------------------------------------------
    def add_scene(self, scene: Scene, dn: dict[str, Pixels], scl: Pixels) -> dict[str, Any]:
        """Serve the scene's COGs (``dn[asset key]`` per band, ``scl`` for the 20 m SCL) and
        its item; return the item."""
        zone = scene.epsg - 32600
        to_ll = Transformer.from_crs(scene.epsg, 4326, always_xy=True)
        s = scene.size_m
        ring = [
            (scene.x0, scene.y0),
            (scene.x0 + s, scene.y0),
            (scene.x0 + s, scene.y0 - s),
            (scene.x0, scene.y0 - s),
            (scene.x0, scene.y0),
        ]
        lon, lat = to_ll.transform(*zip(*ring, strict=True))
        band_letter = LATITUDE_BANDS[int((float(np.mean(lat)) + 80) // 8)]
        month = scene.when.month
        prefix = (
            f"{BUCKET}/{zone}/{band_letter}/{scene.grid_square}/{scene.when.year}/{month}/"
            f"{scene.item_id}"
        )
        offset = -0.1 if float(scene.baseline) >= 4.0 else 0.0
        assets: dict[str, Any] = {}
        scl_asset = ("scl", ("SCL", 20, "Scene classification map (SCL)"))
        for key, (code, res, title) in [*BANDS.items(), scl_asset]:
            n = int(round(s / res))
            cols, rows = np.meshgrid(np.arange(n), np.arange(n))
            x, y = scene.x0 + (cols + 0.5) * res, scene.y0 - (rows + 0.5) * res
            values = (scl if key == "scl" else dn[key])(x, y).astype("uint16")
            transform = Affine(res, 0, scene.x0, 0, -res, scene.y0)
            cog = cog_bytes(values, transform, scene.epsg)
            href = self.server.add_file(f"{prefix}/{code}.tif", cog)
            asset = {
                "href": href,
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "title": title,
                "proj:shape": [n, n],
                "proj:transform": list(transform)[:6],
                "raster:bands": [
                    {
                        "nodata": 0,
                        "data_type": "uint8" if key == "scl" else "uint16",
                        "spatial_resolution": res,
                        **(
                            {}
                            if key == "scl"
                            else {"bits_per_sample": 15, "scale": 0.0001, "offset": offset}
                        ),
                    }
                ],
                "roles": ["data"] if key == "scl" else ["data", "reflectance"],
            }
            if key != "scl":
                asset["eo:bands"] = [{"name": key, "common_name": key}]
                asset["gsd"] = res
            assets[key] = asset
        start = scene.datatake_start or scene.when
        stamp, baseline = f"{start:%Y%m%dT%H%M%S}", scene.baseline.replace(".", "")
        granule = f"T{zone}{band_letter}{scene.grid_square}"
        product = f"{scene.item_id[:3]}_MSIL2A_{stamp}_N{baseline}_R000_{granule}_{stamp}.SAFE"
        self_href = self.server.url(f"/v1/collections/{COLLECTION}/items/{scene.item_id}")
        item = {
            "type": "Feature",
            "stac_version": "1.0.0",
            "stac_extensions": [
                "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
                "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
                "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
            ],
            "id": scene.item_id,
            "collection": COLLECTION,
            "bbox": [min(lon), min(lat), max(lon), max(lat)],
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[a, b] for a, b in zip(lon, lat, strict=True)]],
            },
            "properties": {
                "datetime": scene.when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "platform": "sentinel-2a" if scene.item_id.startswith("S2A") else "sentinel-2b",
                "constellation": "sentinel-2",
                "instruments": ["msi"],
                "eo:cloud_cover": scene.cloud_cover,
                "proj:epsg": scene.epsg,
                "mgrs:utm_zone": zone,
                "mgrs:latitude_band": band_letter,
                "mgrs:grid_square": scene.grid_square,
                "grid:code": f"MGRS-{zone}{band_letter}{scene.grid_square}",
                "s2:processing_baseline": scene.baseline,
                "s2:product_type": "S2MSI2A",
                "s2:product_uri": product,
                "s2:datatake_id": scene.datatake_id,
                "earthsearch:boa_offset_applied": float(scene.baseline) >= 4.0,
                "earthsearch:s3_path": f"s3://sentinel-cogs{prefix}",
            },
            "links": [
                {"rel": "self", "href": self_href, "type": "application/geo+json"},
                {"rel": "parent", "href": self.server.url(f"/v1/collections/{COLLECTION}")},
                {"rel": "collection", "href": self.server.url(f"/v1/collections/{COLLECTION}")},
                {"rel": "root", "href": self.url, "type": "application/json"},
            ],
            "assets": assets,
        }
        self.items.append(item)
        self.server.add_route(
            f"/v1/collections/{COLLECTION}/items/{scene.item_id}",
            lambda m, q, b, it=item: (200, GEOJSON, json.dumps(it).encode()),
        )
        return item

    # -- routes ---------------------------------------------------------------------------------
    def _landing(self, method: str, query: dict, body: bytes) -> tuple[int, dict, bytes]:
        search = self.server.url("/v1/search")
        doc = {
            "stac_version": "1.0.0",
            "type": "Catalog",
            "id": "earth-search-aws",
            "title": "Earth Search by Element 84",
            "description": "A STAC API of public datasets on AWS (loopback replica for tests)",
            "conformsTo": CONFORMANCE,
            "links": [
                {"rel": "self", "type": "application/json", "href": self.url},
                {"rel": "root", "type": "application/json", "href": self.url},
                {
                    "rel": "conformance",
                    "type": "application/json",
                    "href": self.server.url("/v1/conformance"),
                },
                {
                    "rel": "data",
                    "type": "application/json",
                    "href": self.server.url("/v1/collections"),
                },
                {"rel": "search", "type": "application/geo+json", "href": search, "method": "GET"},
                {"rel": "search", "type": "application/geo+json", "href": search, "method": "POST"},
            ],
        }
        return 200, JSON, json.dumps(doc).encode()

    def _conformance(self, method: str, query: dict, body: bytes) -> tuple[int, dict, bytes]:
        return 200, JSON, json.dumps({"conformsTo": CONFORMANCE}).encode()

    def _collection(self, method: str, query: dict, body: bytes) -> tuple[int, dict, bytes]:
        doc = {
            "type": "Collection",
            "id": COLLECTION,
            "stac_version": "1.0.0",
            "title": "Sentinel-2 Level-2A",
            "license": "proprietary",
            "description": "Sentinel-2 L2A COGs (loopback replica)",
            "extent": {
                "spatial": {"bbox": [[-180, -90, 180, 90]]},
                "temporal": {"interval": [["2015-06-27T10:25:31.456000Z", None]]},
            },
            "links": [{"rel": "root", "href": self.url}],
        }
        return 200, JSON, json.dumps(doc).encode()

    def _not_found(self, method: str, query: dict, body: bytes) -> tuple[int, dict, bytes]:
        """stac-server's answer to a path it has nothing at (src/lambdas/api/app.ts)."""
        return 404, JSON, json.dumps({"code": "NotFound", "description": "Not Found"}).encode()

    def _search(self, method: str, query: dict, body: bytes) -> tuple[int, dict, bytes]:
        try:
            params = json.loads(body) if method == "POST" else _get_params(query)
            hits = self._match(params)
        except (ValueError, KeyError, TypeError) as exc:
            doc = {"code": "BadRequest", "description": str(exc)}
            return 400, JSON, json.dumps(doc).encode()
        self.searches.append({"method": method, **params})
        limit = int(params.get("limit", 10))
        if not 1 <= limit <= 10000:
            doc = {"code": "BadRequest", "description": "limit must be between 1 and 10000"}
            return 400, JSON, json.dumps(doc).encode()
        start = int(params["next"]) if params.get("next") else 0
        stuck = self.stuck_paging or (self.sortby_drops_next and "sortby" in params)
        page = hits[start : start + limit]
        links = [{"rel": "root", "type": "application/json", "href": self.url}]
        if start + limit < len(hits):
            token = str(start + limit)
            search = self.server.url("/v1/search")
            if method == "POST":
                links.append(
                    {
                        "rel": "next",
                        "title": "Next page of Items",
                        "method": "POST",
                        "type": "application/geo+json",
                        "href": search,
                        "merge": False,
                        "body": {**{k: v for k, v in params.items() if k != "next"},
                                 **({} if stuck else {"next": token})},
                    }
                )
            else:
                # stac-server encodes its next link's query (a datetime's "+00:00" stays "+")
                kept = {k: v[0] for k, v in query.items() if k != "next"}
                kept |= {} if stuck else {"next": token}
                links.append(
                    {
                        "rel": "next",
                        "title": "Next page of Items",
                        "method": "GET",
                        "type": "application/geo+json",
                        "href": f"{search}?{urlencode(kept)}",
                    }
                )
        doc = {
            "type": "FeatureCollection",
            "stac_version": "1.0.0",
            "stac_extensions": [],
            "context": {"limit": limit, "matched": len(hits), "returned": len(page)},
            "numberMatched": len(hits),
            "numberReturned": len(page),
            "features": page,
            "links": links,
        }
        return 200, GEOJSON, json.dumps(doc).encode()

    def _match(self, p: dict) -> list[dict]:
        hits = list(self.items)
        if p.get("collections"):
            hits = [it for it in hits if it["collection"] in p["collections"]]
        if p.get("ids"):
            hits = [it for it in hits if it["id"] in p["ids"]]
        area = None
        if p.get("bbox") is not None:
            w, s, e, n = (float(v) for v in p["bbox"])
            if s > n or not (-180 <= w <= 180 and -180 <= e <= 180):
                raise ValueError(f"invalid bbox {p['bbox']}")
            area = (
                shapely.box(w, s, e, n)
                if w <= e
                else shapely.union(shapely.box(w, s, 180, n), shapely.box(-180, s, e, n))
            )
        elif p.get("intersects") is not None:
            area = shapely.geometry.shape(p["intersects"])
        if area is not None:
            hits = [it for it in hits if shapely.geometry.shape(it["geometry"]).intersects(area)]
        if p.get("datetime"):
            lo, hi = _interval(p["datetime"])
            hits = [it for it in hits if lo <= _when(it["properties"]["datetime"]) <= hi]
        for prop, ops in (p.get("query") or {}).items():
            for op, value in ops.items():
                test = {
                    "lt": float.__lt__,
                    "lte": float.__le__,
                    "gt": float.__gt__,
                    "gte": float.__ge__,
                }.get(op)
                if op == "eq":
                    hits = [it for it in hits if it["properties"].get(prop) == value]
                elif test is None:
                    raise ValueError(f"unknown query operator {op!r}")
                else:
                    hits = [
                        it
                        for it in hits
                        if prop in it["properties"]
                        and test(float(it["properties"][prop]), float(value))
                    ]
        keys = [
            (s["field"].removeprefix("properties."), s.get("direction", "asc"))
            for s in (p.get("sortby") or [])
        ] or [("datetime", "desc")]
        for field, direction in reversed(keys):
            hits.sort(
                key=lambda it, f=field: (it["properties"].get(f, it.get(f)), it["id"]),
                reverse=direction == "desc",
            )
        return hits


def _get_params(query: dict) -> dict:
    p: dict[str, Any] = {k: v[0] for k, v in query.items()}
    if "bbox" in p:
        p["bbox"] = [float(v) for v in p["bbox"].split(",")]
    for key in ("collections", "ids"):
        if key in p:
            p[key] = p[key].split(",")
    for key in ("query", "intersects"):
        if key in p:
            p[key] = json.loads(p[key])
    if "sortby" in p:
        p["sortby"] = [
            {"field": f.lstrip("+-"), "direction": "desc" if f.startswith("-") else "asc"}
            for f in p["sortby"].split(",")
        ]
    return p


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _interval(text: str) -> tuple[datetime, datetime]:
    if "/" not in text:
        t = _when(text)
        return t, t
    a, b = text.split("/")
    lo = datetime.min.replace(tzinfo=UTC) if a in ("", "..") else _when(a)
    hi = datetime.max.replace(tzinfo=UTC) if b in ("", "..") else _when(b)
    return lo, hi
