"""Views of the SYNTHETIC demo world on the sources' native grids: Sentinel-2, DEM, climate.

Every pixel of a native grid takes the world's fields at its own centre (projected to
EPSG:3338): continuous fields bilinearly, land cover by nearest neighbour. The one signal finer
than the world grid, the ice-wedge polygon network, is evaluated analytically on each Sentinel-2
pixel (3 x 3 sub-samples averaged), so the image holds it at its own resolution.

Ice-wedge polygons are built to be invisible to a per-pixel model: inside a polygon field the
tundra's spectral modulation ``T`` comes from the polygons (~30 m across; wet troughs along their
edges and wet ponded centres dark, dry rims and centres bright); outside it comes from a field
varying over hundreds of metres plus a little tussock-scale grain. Both are mapped to normal
scores over their pixels (the polygons' scaled by :data:`POLYGON_GAIN` so that their spread equals
the other tundra's after the stack's bilinear warp), with the same mean tundra spectrum, so a
pixel's own band values barely tell whether it lies in a polygon field; the local variance over a
few pixels (50-100 m) tells it plainly.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from mapper.demo.fields import (
    STREAM_POLYGONS,
    STREAM_SENSOR,
    gaussianize,
    rng_for,
    smooth_noise,
)  # fmt: skip
from mapper.demo.grids import NativeGrid
from mapper.demo.world import (
    ASH,
    BIRCH,
    COVERS,
    FEN,
    GRASS,
    GRAVEL,
    POND,
    RIVER,
    SHRUB,
    SPRUCE,
    TUNDRA,
    World,
)  # fmt: skip

logger = logging.getLogger(__name__)

S2_NATIVE = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
"""Sentinel-2 L2A bands in native order, as written to sentinel2.tif."""
S2_WAVELENGTH_NM = (490, 560, 665, 705, 740, 783, 842, 1610, 2190)

# Midsummer surface reflectance (0-1) per land cover, bands as S2_NATIVE.
SPECTRA: dict[int, tuple[float, ...]] = {
    RIVER: (0.060, 0.080, 0.075, 0.070, 0.055, 0.050, 0.045, 0.015, 0.010),  # silty glacial
    POND: (0.030, 0.040, 0.025, 0.020, 0.015, 0.012, 0.010, 0.005, 0.003),
    GRAVEL: (0.090, 0.110, 0.130, 0.150, 0.165, 0.175, 0.185, 0.240, 0.200),
    SPRUCE: (0.020, 0.040, 0.025, 0.065, 0.150, 0.180, 0.200, 0.110, 0.050),
    BIRCH: (0.025, 0.060, 0.030, 0.095, 0.270, 0.330, 0.360, 0.180, 0.080),
    SHRUB: (0.030, 0.060, 0.035, 0.090, 0.240, 0.290, 0.310, 0.170, 0.080),
    TUNDRA: (0.035, 0.060, 0.050, 0.090, 0.180, 0.220, 0.240, 0.200, 0.110),
    FEN: (0.030, 0.050, 0.040, 0.070, 0.150, 0.180, 0.190, 0.120, 0.060),
    GRASS: (0.045, 0.075, 0.070, 0.110, 0.210, 0.250, 0.270, 0.260, 0.160),
    ASH: (0.050, 0.060, 0.065, 0.070, 0.080, 0.085, 0.090, 0.110, 0.100),
}
# Relative within-class variation (multiplies the ~80 m texture field); tundra uses T instead.
VARIATION = {RIVER: 0.15, POND: 0.10, GRAVEL: 0.10, SPRUCE: 0.10, BIRCH: 0.08, SHRUB: 0.08,
             TUNDRA: 0.0, FEN: 0.10, GRASS: 0.08, ASH: 0.10}  # fmt: skip
TUNDRA_CONTRAST = (0.006, 0.010, 0.010, 0.016, 0.036, 0.044, 0.048, 0.045, 0.028)
"""Reflectance change per unit of ``T`` (dry rims and centres bright, wet troughs dark)."""
NOISE = 0.012
"""Relative per-pixel noise (sensor and sub-pixel heterogeneity), independent per band."""

POLYGON_SPACING = 30.0  # m between polygon centres
TROUGH_HALF_WIDTH = 2.5  # m
POLYGON_WETNESS = 1.0
"""Weight of each polygon's own wetness against its trough network (both standardised)."""
POLYGON_GAIN = 1.25
"""Amplitude of the polygon modulation against the N(0, 1) of tundra outside polygon fields.

A bilinear warp onto the lattice (what the stack stage does) smooths the ~3 px polygon pattern
far more than the smooth variation outside polygon fields (its spread drops by ~20 %). The gain
makes both spreads equal *after* that warp, where models see pixels; on the native grid polygon
pixels spread ~20 % wider (in both cases a pixel's value alone barely separates them: ROC AUC of
|value - median| 0.52 on the lattice, 0.44 natively, against 0.99 for the local standard
deviation over 5 x 5 pixels; demo region, band B08)."""
GRAIN = 0.15
"""Share of the variance of tundra modulation (outside polygons) at the tussock scale (~20 m)."""
CLOUD_RADIUS = 1200.0  # m (demo size; scales with the region)


def _sample(a: np.ndarray, rows: np.ndarray, cols: np.ndarray, order: int) -> np.ndarray:
    return ndimage.map_coordinates(a, [rows, cols], order=order, mode="nearest")


class PolygonNetwork:
    """Ice-wedge polygons: the Voronoi cells of a jittered grid of centres in EPSG:3338.

    Each polygon has its own wetness (some centres ponded, some dry), and troughs ~5 m wide run
    along the cell edges.
    """

    def __init__(self, rng: np.random.Generator, x0: float, y0: float, width: float, height: float):
        a = POLYGON_SPACING
        self.x0, self.y0 = x0, y0
        self.nx, self.ny = int(width // a) + 3, int(height // a) + 3
        self.jx = rng.uniform(-0.35, 0.35, (self.ny, self.nx)) * a
        self.jy = rng.uniform(-0.35, 0.35, (self.ny, self.nx)) * a
        self.wetness = rng.standard_normal((self.ny, self.nx))

    def sample(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Trough indicator (1 on a trough's axis) and the polygon's wetness at points (m).

        The distance to the polygon's edge is taken as half the difference between the distances
        to the nearest and the second-nearest centre (Worley's F2 - F1): exact on the line between
        the two centres and close enough elsewhere for a few-metre-wide trough.
        """
        a = POLYGON_SPACING
        gi = np.floor((x - self.x0) / a).astype(int)
        gj = np.floor((self.y0 - y) / a).astype(int)
        d1 = np.full(x.shape, np.inf)
        d2 = np.full(x.shape, np.inf)
        wet = np.zeros(x.shape)
        for dj in (-1, 0, 1):
            j = np.clip(gj + dj, 0, self.ny - 1)
            for di in (-1, 0, 1):
                i = np.clip(gi + di, 0, self.nx - 1)
                sx = self.x0 + (i + 0.5) * a + self.jx[j, i]
                sy = self.y0 - (j + 0.5) * a + self.jy[j, i]
                d = (x - sx) ** 2 + (y - sy) ** 2
                first = d < d1
                np.minimum(d2, np.where(first, d1, d), out=d2)
                np.minimum(d1, d, out=d1)
                wet[first] = self.wetness[j[first], i[first]]
        edge = 0.5 * (np.sqrt(d2) - np.sqrt(d1))
        return np.exp(-((edge / TROUGH_HALF_WIDTH) ** 2)), wet


def polygon_texture(
    net: PolygonNetwork, x: np.ndarray, y: np.ndarray, jac: np.ndarray, chunk: int = 200_000
) -> np.ndarray:
    """Polygon modulation of pixels centred at ``x, y`` (3 x 3 sub-samples each), N(0, 1).

    Wet troughs and wet polygons negative, dry rims and centres positive. ``jac``
    [[dx/dcol, dx/drow], [dy/dcol, dy/drow]] maps sub-pixel offsets into EPSG:3338.
    """
    offsets = [(dc, dr) for dr in (-1 / 3, 0.0, 1 / 3) for dc in (-1 / 3, 0.0, 1 / 3)]
    trough = np.zeros(x.size)
    wet = np.zeros(x.size)
    for s in range(0, x.size, chunk):
        xs, ys = x[s : s + chunk], y[s : s + chunk]
        for dc, dr in offsets:
            dx = jac[0, 0] * dc + jac[0, 1] * dr
            dy = jac[1, 0] * dc + jac[1, 1] * dr
            t, w = net.sample(xs + dx, ys + dy)
            trough[s : s + chunk] += t
            wet[s : s + chunk] += w
    if x.size < 2:
        return np.zeros(x.size, dtype="float32")
    raw = -(trough - trough.mean()) / max(trough.std(), 1e-9)
    raw += POLYGON_WETNESS * wet / max(wet.std(), 1e-9)
    return gaussianize(raw)


def render_sentinel2(world: World, grid: NativeGrid, seed: int) -> np.ndarray:
    """The Sentinel-2 L2A-like image: uint16 [9, rows, cols], reflectance x 1e4, 0 = nodata.

    Includes terrain shading, within-class texture, the tundra modulation (see module docstring),
    per-pixel noise, and one irregular cloud gap (all bands 0) inside the region.
    """
    rng = rng_for(seed, STREAM_SENSOR)
    x, y = grid.centres_albers()
    rows, cols = world.grid.index(x, y)
    cover = _sample(world.cover, rows, cols, 0)
    light = _sample(world.illumination, rows, cols, 1)
    tex = _sample(world.texture, rows, cols, 1)
    weight = np.clip(_sample(world.polygon_weight, rows, cols, 1), 0.0, 1.0)
    smooth_t = _sample(world.tundra_texture, rows, cols, 1)
    del rows, cols
    tundra = cover == TUNDRA

    # tundra modulation T: polygons inside polygon fields; outside, smooth variation over
    # hundreds of metres plus a little tussock-scale grain (~20 m)
    grain = smooth_noise(rng, grid.shape, 3.0)
    t_mod = np.zeros(grid.shape, dtype="float32")
    if tundra.any():
        t_mod[tundra] = np.sqrt(1.0 - GRAIN) * smooth_t[tundra] + np.sqrt(GRAIN) * gaussianize(
            grain[tundra]
        )
    del grain, smooth_t
    inside = tundra & (weight > 0.0)
    h, w = grid.shape
    jac = np.array(
        [[x[h // 2, w // 2 + 1] - x[h // 2, w // 2], x[h // 2 + 1, w // 2] - x[h // 2, w // 2]],
         [y[h // 2, w // 2 + 1] - y[h // 2, w // 2], y[h // 2 + 1, w // 2] - y[h // 2, w // 2]]]
    )  # fmt: skip
    g = world.grid
    net = PolygonNetwork(
        rng_for(seed, STREAM_POLYGONS), g.x0, g.y0, g.shape[1] * g.res, g.shape[0] * g.res
    )
    if inside.any():
        polygons = POLYGON_GAIN * polygon_texture(net, x[inside], y[inside], jac)
        wi = weight[inside]
        t_mod[inside] = np.sqrt(wi) * polygons + np.sqrt(1.0 - wi) * t_mod[inside]
    del weight, inside

    spectra = np.array([SPECTRA[c] for c in range(len(COVERS))], dtype="float32")
    variation = np.array([VARIATION[c] for c in range(len(COVERS))], dtype="float32")
    scale = (1.0 + variation[cover] * tex) * light
    gap = _cloud_gap(rng, world, grid, x, y)
    out = np.empty((len(S2_NATIVE),) + grid.shape, dtype="uint16")
    for b in range(len(S2_NATIVE)):
        refl = spectra[cover, b] * scale
        refl += TUNDRA_CONTRAST[b] * t_mod * light
        refl *= 1.0 + NOISE * rng.standard_normal(grid.shape, dtype="float32")
        band = np.clip(np.rint(refl * 10_000.0), 1, 65_535).astype("uint16")
        band[gap] = 0
        out[b] = band
    logger.debug("sentinel2: %d px, %.1f%% cloud gap", cover.size, 100 * gap.mean())
    return out


def _cloud_gap(
    rng: np.random.Generator, world: World, grid: NativeGrid, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """An irregular hole (a cloud and its shadow masked out) over the southern lowlands."""
    lay = world.layout
    cx, cy = lay.cx + 0.35 * lay.half, lay.cy - 0.5 * lay.half
    radius = CLOUD_RADIUS * lay.k
    ragged = smooth_noise(rng, grid.shape, 40.0)
    return np.hypot(x - cx, y - cy) / radius + 0.35 * ragged < 1.0


def render_dem(world: World, grid: NativeGrid) -> np.ndarray:
    """Elevation (m, float32) at the DEM grid's pixel centres (bilinear from the world)."""
    x, y = grid.centres_albers()
    rows, cols = world.grid.index(x, y)
    return _sample(world.elevation, rows, cols, 1).astype("float32")


def render_climate(world: World, grid: NativeGrid) -> np.ndarray:
    """Climate normals [3, rows, cols] float32 at the climate grid's pixel centres."""
    x, y = grid.centres_albers()
    return world.climate.sample(x, y)
