"""Tiny synthetic sources and region files for the stack, terrain-window and VRT tests.

Every file is SYNTHETIC (tag MAPPER_SYNTHETIC=true) and made from fixed seeds, each in its own
native CRS and resolution like the real sources: a UTM 6N 10 m uint16 Sentinel-2-like file, a
geographic 1-arc-second DEM (a tilted plane with hills, hollows and a flat-bottomed pit), a 1 km
climate grid in EPSG:3338 whose origin is off the 10 m lattice. East of a straight "coast" the DEM
and climate are nodata (sea) and the Sentinel-2 file stops.

The region is a square of 2 x 2 tiles of 128 px (4 x 4 tiles of 64 px) on the project lattice.
The fixtures ``stack_sources`` and ``small_stacks`` (tests/conftest.py) write the sources and
build four stacks once per session; the stack, window, error and interrupt tests share them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import tiny_region
from affine import Affine
from pyproj import Transformer
from scipy.ndimage import gaussian_filter

LEFT, TOP = 241_600.0, 1_647_680.0  # region's upper-left corner, on the 128 px tile lattice
SIZE = 2560.0  # region width and height (m)
COAST_X = LEFT + SIZE + 1000.0  # sea east of this
MARGIN = 1500.0
X_REF, Y_REF = LEFT, TOP - SIZE
S2_CODES = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
CLIMATE_ORDER = ["jan_tmin", "precip_annual", "summer_warmth"]  # not the stack order on purpose
OCEAN_TILE_64 = "R1488C4448"  # 64 px tile entirely at sea, 1.5 km east of the coast
BIG_TILE = "R0744C2220"  # a 128 px tile of the region; its four 64 px tiles:
SMALL_TILES = ["R1488C4440", "R1488C4441", "R1489C4440", "R1489C4441"]


def _apply(t: Affine, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates of pixel positions under a north-up transform."""
    return t.c + t.a * cols, t.f + t.e * rows


def _albers_to(crs: str) -> Transformer:
    return Transformer.from_crs("EPSG:3338", crs, always_xy=True)


def _bbox_in(crs: str, left: float, bottom: float, right: float, top: float) -> tuple:
    t = _albers_to(crs)
    xs = np.concatenate(
        [np.linspace(left, right, 50)] * 2 + [np.full(50, left), np.full(50, right)]
    )
    ys = np.concatenate(
        [np.full(50, bottom), np.full(50, top)] + [np.linspace(bottom, top, 50)] * 2
    )
    u, v = t.transform(xs, ys)
    return min(u), min(v), max(u), max(v)


def write_sentinel2(
    path: Path, seed: int = 1, codes: list[str] | None = None, hole: bool = True
) -> Path:
    """UTM 6N, 10 m, uint16 reflectance x 1e4 that declares its scale 0.0001 (its values, 0.15
    and up, are brighter than any scene's darkest pixels, so read as undeclared DNs they would
    be taken for DNs that hold ESA's offset), nodata 0, band descriptions ``codes``."""
    codes = codes or S2_CODES
    left, bottom, right, top = _bbox_in(
        "EPSG:32606", LEFT - MARGIN, TOP - SIZE - MARGIN, COAST_X, TOP + MARGIN
    )
    left, top = np.floor(left / 10) * 10, np.ceil(top / 10) * 10
    width, height = int(np.ceil((right - left) / 10)), int(np.ceil((top - bottom) / 10))
    transform = Affine(10.0, 0, left, 0, -10.0, top)
    rng = np.random.default_rng(seed)
    data = np.empty((len(codes), height, width), dtype=np.uint16)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    ux, uy = _apply(transform, cols, rows)
    ax, ay = Transformer.from_crs("EPSG:32606", "EPSG:3338", always_xy=True).transform(ux, uy)
    sea = ax > COAST_X
    gap = hole & (np.hypot(ax - (LEFT + 900), ay - (TOP - 700)) < 150)
    for b in range(len(codes)):
        smooth = gaussian_filter(rng.normal(size=(height, width)), 6) * 4000
        noise = rng.normal(scale=300, size=(height, width))
        data[b] = np.clip(1500 + 300 * b + smooth + noise, 1, 9000).astype(np.uint16)
        data[b][sea | gap] = 0
    profile = dict(
        driver="GTiff", width=width, height=height, count=len(codes), dtype="uint16",
        crs="EPSG:32606", transform=transform, nodata=0, compress="deflate",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.scales = [1e-4] * len(codes)
        for i, c in enumerate(codes, start=1):
            dst.set_band_description(i, c)
        dst.update_tags(MAPPER_SYNTHETIC="true")
    return path


def write_dem(path: Path, kind: str = "hills", seed: int = 2) -> Path:
    """EPSG:4326, 1 arc-second, float32 metres, nodata -9999 at sea.

    ``kind="plane"``: z = 100 + 0.1 (x - X_REF) in Alaska Albers metres (rises to the east,
    slope atan(0.1), aspect 270). ``kind="hills"``: a plane tilted to the south-west with Gaussian
    hills and hollows and a flat-bottomed pit, so that filling, flats and accumulation all work.
    """
    arcsec = 1.0 / 3600.0
    lon0, lat0, lon1, lat1 = _bbox_in(
        "EPSG:4326", LEFT - MARGIN, TOP - SIZE - MARGIN, COAST_X + 3500, TOP + MARGIN
    )
    lon0, lat1 = np.floor(lon0 / arcsec) * arcsec, np.ceil(lat1 / arcsec) * arcsec
    width, height = int(np.ceil((lon1 - lon0) / arcsec)), int(np.ceil((lat1 - lat0) / arcsec))
    transform = Affine(arcsec, 0, lon0, 0, -arcsec, lat1)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    lon, lat = _apply(transform, cols, rows)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True).transform(lon, lat)
    dx, dy = x - X_REF, y - Y_REF
    if kind == "plane":
        z = 100.0 + 0.1 * dx
    else:
        rng = np.random.default_rng(seed)
        z = 300.0 + 0.03 * dx + 0.02 * dy
        for _ in range(40):
            cx = rng.uniform(-MARGIN, SIZE + MARGIN)
            cy = rng.uniform(-MARGIN, SIZE + MARGIN)
            amp = rng.uniform(-25, 40)
            sig = rng.uniform(80, 300)
            z = z + amp * np.exp(-((dx - cx) ** 2 + (dy - cy) ** 2) / (2 * sig**2))
        pit = np.hypot(dx - 1300, dy - 1200) < 120
        z = np.where(pit, np.minimum(z, 290.0), z)
    z = np.where(x > COAST_X, -9999.0, z).astype(np.float32)
    profile = dict(
        driver="GTiff", width=width, height=height, count=1, dtype="float32",
        crs="EPSG:4326", transform=transform, nodata=-9999.0,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(z, 1)
        dst.set_band_description(1, "elevation")
        dst.update_tags(MAPPER_SYNTHETIC="true")
    return path


def write_climate(path: Path) -> Path:
    """EPSG:3338, 1 km, 3 described bands (not in stack order), origin off lattice, -9999 sea."""
    left = np.floor((LEFT - MARGIN) / 1000) * 1000 - 2000 + 137.0
    top = np.ceil((TOP + MARGIN) / 1000) * 1000 + 2000 + 263.0
    width = int(np.ceil((COAST_X + 5000 - left) / 1000))
    height = int(np.ceil((top - (TOP - SIZE - MARGIN - 2000)) / 1000))
    transform = Affine(1000.0, 0, left, 0, -1000.0, top)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x, y = _apply(transform, cols, rows)
    values = {
        "precip_annual": 300 + 0.02 * (x - LEFT) + 0.01 * (y - TOP),
        "summer_warmth": 1200 - 0.03 * (y - TOP) + 0.005 * (x - LEFT),
        "jan_tmin": -28 + 0.0004 * (x - LEFT) - 0.0002 * (y - TOP),
    }
    data = np.stack([values[n] for n in CLIMATE_ORDER]).astype(np.float32)
    data[:, x > COAST_X] = -9999.0
    profile = dict(
        driver="GTiff", width=width, height=height, count=3, dtype="float32",
        crs="EPSG:3338", transform=transform, nodata=-9999.0,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, n in enumerate(CLIMATE_ORDER, start=1):
            dst.set_band_description(i, n)
        dst.update_tags(MAPPER_SYNTHETIC="true")
    return path


def write_config(root: Path, stack: dict | None = None, tile_sizes: tuple = (64, 128),
                 **settings: object) -> Path:
    """config.yaml with one region per tile size (``t64``, ``t128``) over the same square;
    ``settings`` are further region-file sections (for example ``prediction``)."""
    stack = stack or {"halo_px": 16, "tpi_radius_m": 50.0, "hydro_block_px": 128,
                      "hydro_halo_px": 32}
    bounds = (LEFT, TOP - SIZE, LEFT + SIZE, TOP)
    regions = {
        f"t{px}": tiny_region.write_region_file(
            root, f"t{px}", bounds, px, description="synthetic stack test region", stack=stack,
            **settings,
        )
        for px in tile_sizes
    }
    return tiny_region.write_config(root / "config.yaml", regions)
