"""The SYNTHETIC demo world: land cover, climate and truth on a 10 m grid aligned with the lattice.

Every demo source is a view of one world, so that the sources agree with each other and with the
truth maps. The world lives on a 10 m grid in EPSG:3338 whose pixels *are* lattice pixels (origin
on the lattice), so the truth rasters are plain crops of it; the sources' native grids sample it
at their own pixel centres (:mod:`mapper.demo.render`). Terrain: :mod:`mapper.demo.terrain`.

The truth follows what controls permafrost in interior Alaska (discontinuous zone): north-facing
slopes, low flat wet ground, moss and black spruce, cold valley-floor winters and cool summers
favour it; steep south-facing slopes, the active floodplain near the river, birch, grass and fens
(taliks) do not. Ice-wedge polygon fields on lowland tussock tundra are near-certain permafrost
(p ~ 0.9 against ~ 0.3 for similar tundra without polygons), a signal only image texture shows.
Soil orders follow the Soil Taxonomy key in simplified form: Gelisols where permafrost is likely
(p >= 0.5), then Histosols (fens), Andisols (volcanic ash), Mollisols (steppe grass on loess
bluffs), Entisols (active floodplain, gravel bars), Spodosols (forest on older uplands), and
Inceptisols elsewhere. Open water has no soil: NaN / 255 in the truth.

Units: metres (EPSG:3338) for coordinates and elevation, degrees for slope and aspect (aspect
clockwise from north, the direction the slope faces), pixel centres at +0.5 pixel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

from mapper.bands import CLASS_NODATA, SOIL_ORDERS
from mapper.demo.fields import Layout, WorldGrid, blur, gaussianize, noise, smoothstep
from mapper.demo.terrain import Terrain, build_terrain

logger = logging.getLogger(__name__)

COVERS: tuple[str, ...] = (
    "river", "pond", "gravel", "spruce", "birch", "shrub", "tundra", "fen", "grass", "ash",
)  # fmt: skip
"""Land cover classes of the world (index = code); they drive spectra and the truth. ``river`` is
silty glacial water, ``pond`` clear still water; both are open water (no soil)."""
RIVER, POND, GRAVEL, SPRUCE, BIRCH, SHRUB, TUNDRA, FEN, GRASS, ASH = range(len(COVERS))
(ANDISOLS, ENTISOLS, GELISOLS, HISTOSOLS, INCEPTISOLS, MOLLISOLS, SPODOSOLS) = range(
    len(SOIL_ORDERS)
)

# Effect of land cover on the log-odds of permafrost (index = cover code).
COVER_LOGIT = np.array([0.0, 0.0, -2.5, 0.6, -1.2, -0.6, -0.5, -1.5, -2.5, -1.0], dtype="float32")
POLYGON_LOGIT = 2.3
"""Log-odds of permafrost inside ice-wedge polygon fields (p ~ 0.9)."""

SUN_AZIMUTH, SUN_ZENITH = 160.0, 45.0
"""Sentinel-2 overpass in midsummer at ~64.5 N (about 11:00 local solar time), degrees."""


@dataclass
class Coarse:
    """Smooth fields on a coarse north-up grid (climate), sampled bilinearly by every consumer."""

    x0: float
    y0: float
    res: float
    data: np.ndarray  # [bands, rows, cols] float32

    def sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear values at points (metres, EPSG:3338): [bands, *x.shape] float32."""
        row = (self.y0 - y) / self.res - 0.5
        col = (x - self.x0) / self.res - 0.5
        return np.stack(
            [ndimage.map_coordinates(b, [row, col], order=1, mode="nearest") for b in self.data]
        ).astype("float32")


@dataclass
class World:
    """The world's fields on ``grid`` (arrays [rows, cols]); see the module docstring for units."""

    grid: WorldGrid
    layout: Layout
    seed: int
    elevation: np.ndarray  # m, float32
    cover: np.ndarray  # uint8 index into COVERS
    polygon_weight: np.ndarray  # 0..1: ice-wedge polygon field membership (tundra only)
    tundra_texture: np.ndarray  # N(0,1) over tundra: smooth (hundreds of m) wetness variation
    texture: np.ndarray  # N(0,1), ~80 m: within-class spectral variation
    illumination: np.ndarray  # multiplicative terrain shading of reflectance (~0.5..1.3)
    climate: Coarse  # precip_annual (mm), summer_warmth (degree-days), jan_tmin (deg C)
    nsp: np.ndarray  # truth NSP probability, NaN on open water
    soilorder: np.ndarray  # truth soil order index, CLASS_NODATA on open water
    river_row: np.ndarray  # per column: fractional row of the river's centreline
    road_col: np.ndarray  # per row: fractional column of the road's centreline
    belt_half: float  # half-width of the braided channel belt (m)


def build_world(grid: WorldGrid, layout: Layout, seed: int) -> World:
    """Build every world field deterministically from ``seed``."""
    shape = grid.shape
    k = layout.k
    ter = build_terrain(grid, layout, seed)
    elev = ter.elevation
    an = np.abs(ter.river_offset)
    belt = an < ter.belt_half
    floodplain = ~ter.north & ~ter.south
    young = floodplain & (an < ter.belt_half + 500 * k)

    # terrain derivatives on the world grid (what the stack stage will see from the DEM)
    gy, gx = np.gradient(elev, grid.res)  # gy along rows (southward), gx eastward
    gy = -gy  # northward
    slope = np.degrees(np.arctan(np.hypot(gx, gy))).astype("float32")
    aspect = ((np.degrees(np.arctan2(-gx, -gy)) + 360.0) % 360.0).astype("float32")
    del gx, gy
    tpi = elev - blur(elev, 25.0)
    northness = np.where(slope > 1.0, np.cos(np.radians(aspect)), 0.0).astype("float32")
    illumination = _illumination(slope, aspect)
    del aspect

    climate = _climate(grid, elev, layout)
    cover = _cover(seed, ter, slope, northness, tpi, belt, young)

    # ice-wedge polygon fields: patches of flat lowland tundra
    tundra = cover == TUNDRA
    poly = smoothstep(-0.2, 0.2, noise(seed, shape, "polygon") + 0.45)
    poly_w = np.where(tundra & ter.south, poly * smoothstep(2.5, 1.2, slope), 0.0)
    poly_w = poly_w.astype("float32")
    del poly
    tundra_texture = np.zeros(shape, dtype="float32")
    tundra_texture[tundra] = gaussianize(noise(seed, shape, "tundra")[tundra])
    del tundra

    # truth: NSP probability
    unobserved = noise(seed, shape, "nsp")
    warmth, tmin = (_upsample(b, grid, climate) for b in climate.data[1:])
    near_river = np.exp(-np.maximum(an - ter.belt_half, 0.0) / (400.0 * k)) * floodplain
    logit = (
        -0.9
        + 2.4 * northness * np.clip(slope / 12.0, 0.0, 1.0)
        + 1.0 * np.clip((-tpi - 0.3) / 2.5, 0.0, 1.0) * (slope < 4)  # low, flat, wet ground
        - 3.0 * near_river
        - 0.6 * (warmth - 1600.0) / 300.0
        - 0.3 * (tmin + 27.0) / 4.0
        + COVER_LOGIT[cover]
        + 0.5 * unobserved
    )
    del warmth, tmin, near_river, northness, tpi
    nsp = (1.0 - poly_w) * expit(logit) + poly_w * expit(POLYGON_LOGIT + 0.3 * unobserved)
    nsp = nsp.astype("float32")
    del logit

    # truth: soil order (a simplified Soil Taxonomy key: later assignments take precedence)
    soil = np.full(shape, INCEPTISOLS, dtype="uint8")
    forest = (cover == SPRUCE) | (cover == BIRCH)
    height = elev - ter.floodplain_level[None, :]
    upland = (ter.north | (ter.cone < 1.5)) & (height > 40.0) & (slope < 25)
    soil[forest & upland] = SPODOSOLS
    soil[young | belt | (cover == GRAVEL)] = ENTISOLS
    soil[cover == GRASS] = MOLLISOLS
    soil[ter.ash + 0.08 * unobserved > 0.45] = ANDISOLS
    soil[cover == FEN] = HISTOSOLS
    soil[nsp >= 0.5] = GELISOLS
    open_water = cover <= POND
    soil[open_water] = CLASS_NODATA
    nsp[open_water] = np.nan
    del forest, height, upland, unobserved, slope

    # a gravel road crossing the region north-south (after the truth: it is not a soil)
    _, ys = grid.centres()
    v1 = (ys - layout.cy) / layout.half
    road_u = 0.22 + 0.10 * np.sin(1.7 * v1 + ter.phases[14]) - 0.08 * v1
    road_col = (road_u * layout.half + layout.cx - grid.x0) / grid.res - 0.5
    road = np.abs(np.arange(shape[1])[None, :] - road_col[:, None]) * grid.res < 6.0
    cover[road & ~open_water] = GRAVEL

    logger.debug("demo world: %s px, cover counts %s", shape, np.bincount(cover.ravel()))
    return World(
        grid=grid,
        layout=layout,
        seed=seed,
        elevation=elev,
        cover=cover,
        polygon_weight=poly_w,
        tundra_texture=tundra_texture,
        texture=noise(seed, shape, "texture"),
        illumination=illumination,
        climate=climate,
        nsp=nsp,
        soilorder=soil,
        river_row=ter.river_row,
        road_col=road_col,
        belt_half=ter.belt_half,
    )


def _cover(
    seed: int,
    ter: Terrain,
    slope: np.ndarray,
    northness: np.ndarray,
    tpi: np.ndarray,
    belt: np.ndarray,
    young: np.ndarray,
) -> np.ndarray:
    """Land cover (uint8 codes of COVERS) from terrain position, aspect, wetness and patches."""
    shape = slope.shape
    elev, north, south, rr = ter.elevation, ter.north, ter.south, ter.cone
    patches = noise(seed, shape, "cover")
    small = noise(seed, shape, "cover_fine")
    fens = noise(seed, shape, "fen")
    southness = -northness
    cover = np.full(shape, SPRUCE, dtype="uint8")
    # north uplands: birch on sunny slopes, black spruce on shady ones, steppe on steep sunny
    # bluffs, shrubs along creeks and near treeline, alpine tundra above
    cover[north & (northness <= 0.25) & (patches > -0.4)] = BIRCH
    cover[north & (np.abs(northness) <= 0.25) & (patches <= 0.3)] = SPRUCE
    cover[north & (ter.creek_distance < 80.0) & (slope < 8)] = SHRUB
    cover[north & (southness > 0.5) & (slope > 12) & (elev < 520) & (small > -0.7)] = GRASS
    cover[north & (elev > 650)] = SHRUB
    cover[north & (elev > 760)] = TUNDRA
    # volcano: bare ash on the upper cone, shrubs on the flanks (ragged limits)
    rrn = rr * (1.0 + 0.15 * patches)
    cover[(rrn < 0.75) & north] = SHRUB
    cover[(rrn < 0.42) | ((rrn < 0.6) & (small > 1.0))] = ASH
    del rrn
    # floodplain: willow/alder and poplar near the channels, white spruce and birch further,
    # fens in sloughs; gravel bars and vegetated bars in the channel belt
    older = ~north & ~south & ~young
    cover[older & (patches > 0.7)] = BIRCH
    cover[older & ((tpi < -0.8) | (fens > 1.3)) & (slope < 3)] = FEN
    cover[young] = SHRUB
    cover[young & (small > 0.9)] = BIRCH
    cover[belt] = GRAVEL
    cover[belt & (small > 0.7) & (np.abs(ter.river_offset) > 0.5 * ter.belt_half)] = SHRUB
    # south lowlands: tussock tundra flats, fens in depressions, black spruce on drier ground
    low = south & (rr > 1.0)
    cover[low & (southness > 0.3) & (slope > 5)] = BIRCH
    wet = noise(seed, shape, "wet")
    cover[low & (slope < 3.0) & (wet + 0.3 * patches > -0.6)] = TUNDRA
    del wet
    cover[low & (slope < 4) & (((tpi < -1.0) & (fens > 0.3)) | (fens > 1.0))] = FEN
    ponds = south & (noise(seed, shape, "pond") > 2.1) & (tpi < 0.5) & (slope < 3)
    cover[ter.water & belt] = RIVER
    cover[ponds] = POND
    return cover


def _climate(grid: WorldGrid, elev: np.ndarray, layout: Layout) -> Coarse:
    """Climate normals on a 100 m grid: smooth functions of elevation (~1.2 km mean) and latitude.

    Interior Alaska: ~300 mm of precipitation on the valley floor, more on the hills; summer
    warmth falls ~1 degree-day per metre of height; January minima are coldest on the valley floor
    (winter inversions) and warm by ~1.2 C per 100 m up to ~600 m.
    """
    f = 10
    h, w = elev.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    padded = np.pad(elev, ((0, hp - h), (0, wp - w)), mode="edge")
    coarse = padded.reshape(hp // f, f, wp // f, f).mean(axis=(1, 3))
    es = ndimage.gaussian_filter(coarse, 12.0, mode="nearest")
    res = grid.res * f
    ys = grid.y0 - (np.arange(es.shape[0]) + 0.5) * res
    xs = grid.x0 + (np.arange(es.shape[1]) + 0.5) * res
    north_km = ((ys - layout.cy) / 1000.0)[:, None]
    east_km = ((xs - layout.cx) / 1000.0)[None, :]
    above = es - 110.0
    precip = 300.0 + 0.42 * above + 1.2 * east_km - 0.8 * north_km
    warmth = 1750.0 - 0.95 * above - 4.0 * north_km
    tmin = -29.5 + 0.012 * np.minimum(above, 500.0) - 0.006 * np.maximum(above - 500.0, 0.0)
    tmin = tmin - 0.05 * north_km
    data = np.stack([precip, warmth, tmin]).astype("float32")
    return Coarse(grid.x0, grid.y0, res, data)


def _upsample(band: np.ndarray, grid: WorldGrid, coarse: Coarse) -> np.ndarray:
    """A coarse band bilinearly at the world grid's pixel centres (same sampling as the sources)."""
    xs, ys = grid.centres()
    rows = (coarse.y0 - ys) / coarse.res - 0.5
    cols = (xs - coarse.x0) / coarse.res - 0.5
    # separable: interpolate along rows, then along columns (exactly bilinear)
    r0 = np.clip(np.floor(rows).astype(int), 0, band.shape[0] - 2)
    c0 = np.clip(np.floor(cols).astype(int), 0, band.shape[1] - 2)
    fr = np.clip(rows - r0, 0.0, 1.0).astype("float32")[:, None]
    fc = np.clip(cols - c0, 0.0, 1.0).astype("float32")[None, :]
    top = band[r0][:, c0] * (1 - fc) + band[r0][:, c0 + 1] * fc
    bottom = band[r0 + 1][:, c0] * (1 - fc) + band[r0 + 1][:, c0 + 1] * fc
    return (top * (1 - fr) + bottom * fr).astype("float32")


def _illumination(slope: np.ndarray, aspect: np.ndarray) -> np.ndarray:
    """Terrain shading of reflectance: a third of the full cosine effect (diffuse light and the
    canopy's own structure soften it)."""
    s, a = np.radians(slope), np.radians(aspect)
    z, phi = np.radians(SUN_ZENITH), np.radians(SUN_AZIMUTH)
    cos_i = np.cos(z) * np.cos(s) + np.sin(z) * np.sin(s) * np.cos(phi - a)
    return np.clip(1.0 + 0.35 * (cos_i / np.cos(z) - 1.0), 0.5, 1.3).astype("float32")


def class_shares(soil: np.ndarray) -> dict[str, float]:
    """Area share of each soil order in a soil-order array (open water, 255, excluded)."""
    valid = soil != CLASS_NODATA
    counts = np.bincount(soil[valid], minlength=len(SOIL_ORDERS)) / max(int(valid.sum()), 1)
    return {name: float(c) for name, c in zip(SOIL_ORDERS, counts, strict=True)}
