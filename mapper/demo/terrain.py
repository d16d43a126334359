"""Terrain of the SYNTHETIC demo world: river, floodplain, bluffs, uplands, lowlands, volcano.

Layout, in region units ``u = (x - cx) / L``, ``v = (y - cy) / L`` (``(cx, cy)`` the centre of
the region's bounding box, ``L`` its half-width, so the region is ``u, v in [-1, 1]``):

- a braided river runs west across the region a little south of the centre; its floodplain falls
  from ~145 m in the east to ~105 m in the west; inside a ~660 m channel belt, threads of water
  wind between gravel bars;
- north of the floodplain, steep south-facing loess bluffs (~170 m) rise to hills that reach
  ~900 m in the north-east, dissected by a creek network draining to the river
  (:mod:`mapper.demo.creeks`);
- south of it, wet lowland flats rise gently (0.25 %) to low hills at the southern edge, crossed
  by a few small streams;
- in the north-west corner, a volcanic cone (~560 m high, 3.7 km radius) with a summit crater and
  radial gullies, and an ash apron reaching east.

Widths scale with ``L`` and relief with ``max(L, 0.3 * demo)`` for regions smaller than the demo
(20 km), so any region holds the whole landscape. Elevations in metres, distances in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mapper.demo.creeks import carve_uplands
from mapper.demo.fields import (
    STREAM_BRAIDS,
    STREAM_CREEKS,
    STREAM_PHASES,
    Layout,
    WorldGrid,
    noise,
    rng_for,
    smoothstep,
)  # fmt: skip

VENT_UV = (-0.70, 0.70)
"""Position of the volcano's vent in region units (north-west)."""
CONE_RADIUS = 0.36
"""Radius of the cone in region half-widths."""


@dataclass
class Terrain:
    """Elevation and the landscape geometry the cover and truth are drawn from ([rows, cols])."""

    elevation: np.ndarray  # m, float32
    river_offset: np.ndarray  # signed distance from the river's centreline, m (+ north)
    water: np.ndarray  # bool: river threads inside the channel belt
    north: np.ndarray  # bool: uplands north of the floodplain
    south: np.ndarray  # bool: lowlands south of the floodplain
    cone: np.ndarray  # distance from the vent in cone radii, float32
    ash: np.ndarray  # 0..1 volcanic ash influence
    creek_distance: np.ndarray  # m to the nearest upland creek (inf where none)
    floodplain_level: np.ndarray  # m, per column (1-D)
    river_row: np.ndarray  # fractional world row of the river's centreline, per column
    belt_half: float  # half-width of the channel belt, m
    phases: np.ndarray  # random phases shared with later layout elements (the road)


def _river_centre(u: np.ndarray, phase: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """River centreline ``v = f(u)`` and its slope ``dv/du`` (region units)."""
    a, b = 2.2 * u + phase[0], 5.1 * u + phase[1]
    v = -0.10 + 0.08 * np.sin(a) + 0.035 * np.sin(b)
    dv = 0.08 * 2.2 * np.cos(a) + 0.035 * 5.1 * np.cos(b)
    return v, dv


@dataclass
class _River:
    """The river and its floodplain ([rows, cols] unless said; distances in metres)."""

    offset: np.ndarray  # signed distance from the centreline (+ north), float32
    centre_v: np.ndarray  # v of the centreline, per column
    water: np.ndarray  # bool: river threads inside the channel belt
    north: np.ndarray  # bool: uplands north of the floodplain
    south: np.ndarray  # bool: lowlands south of the floodplain
    level: np.ndarray  # floodplain elevation, per column, float32
    belt_half: float  # half-width of the channel belt
    w_north: np.ndarray  # offset of the bluffs' foot north of the centreline
    w_south: float  # offset of the lowlands' edge south of the centreline
    bluff_noise: np.ndarray  # the "bluff" field, shared by the bluffs' foot and height


def build_terrain(grid: WorldGrid, layout: Layout, seed: int) -> Terrain:
    """The demo world's elevation and landscape geometry, deterministic in ``seed``.

    Built in the order the landforms overlap: floodplain, uplands (north), lowlands (south),
    then the volcano on top.
    """
    shape = grid.shape
    xs, ys = grid.centres()
    u1, v1 = layout.uv(xs, ys)  # 1-D: u per column, v per row
    u = u1[None, :].astype("float32")
    v = v1[:, None].astype("float32")
    phases = rng_for(seed, STREAM_PHASES).uniform(0, 2 * np.pi, 16)
    river = _river(layout, seed, shape, u1, v1, phases)
    fine = noise(seed, shape, "fine")
    elev = _floodplain(river, fine, layout.k)
    # the cone's geometry first: creeks keep off it
    du, dv = u - VENT_UV[0], v - VENT_UV[1]
    rr = (np.sqrt(du * du + dv * dv) / CONE_RADIUS).astype("float32")
    hill = noise(seed, shape, "hill")
    elev, creek_px = _uplands(elev, river, layout, seed, u, v, rr, fine, hill)
    _lowlands(elev, river, layout, seed, u, v, v1, fine, hill, phases)
    del fine, hill
    ash = _volcano(elev, du, dv, rr, layout.kz, phases)
    del du, dv
    return Terrain(
        elevation=elev.astype("float32"),
        river_offset=river.offset,
        water=river.water,
        north=river.north,
        south=river.south,
        cone=rr,
        ash=ash,
        creek_distance=creek_px * np.float32(grid.res),
        floodplain_level=river.level,
        river_row=(grid.y0 - (river.centre_v * layout.half + layout.cy)) / grid.res - 0.5,
        belt_half=river.belt_half,
        phases=phases,
    )


def _river(
    layout: Layout,
    seed: int,
    shape: tuple[int, int],
    u1: np.ndarray,
    v1: np.ndarray,
    phases: np.ndarray,
) -> _River:
    """The river's course and braided channel belt, and where the floodplain ends."""
    half, k = layout.half, layout.k
    vr, dvr = _river_centre(u1, phases[:2])
    cosr = (1.0 / np.sqrt(1.0 + dvr**2)).astype("float32")
    n = ((v1[:, None] - vr[None, :]) * half * cosr[None, :]).astype("float32")  # m, + north
    belt_half = 330.0 * k
    bluff_noise = noise(seed, shape, "bluff")
    w_north = 1300.0 * k * (1.0 + 0.15 * bluff_noise)
    w_south = 2000.0 * k
    water = _braided_channels(rng_for(seed, STREAM_BRAIDS), u1 * half, n, belt_half, k)
    fp_level = (124.0 + 16.0 * np.clip(u1, -1.5, 1.5)).astype("float32")  # westward, 100-148 m
    return _River(
        offset=n,
        centre_v=vr,
        water=water,
        north=n >= w_north,
        south=n <= -w_south,
        level=fp_level,
        belt_half=belt_half,
        w_north=w_north,
        w_south=w_south,
        bluff_noise=bluff_noise,
    )


def _floodplain(river: _River, fine: np.ndarray, k: float) -> np.ndarray:
    """Elevation of the floodplain everywhere: level with the river, rising a little towards
    the belt's and the floodplain's edges, lowered in the river's threads."""
    n, belt_half, w_north, w_south = river.offset, river.belt_half, river.w_north, river.w_south
    floodplain = (n < w_north) & (n > -w_south)
    an = np.abs(n)
    elev = river.level[None, :] + 0.3 * fine
    elev += 2.5 * smoothstep(belt_half, belt_half + 600 * k, an) * floodplain
    elev += 1.5 * smoothstep(0.6 * w_north, w_north, n) * (n > 0)
    elev += 1.5 * smoothstep(0.6 * w_south, w_south, -n) * (n < 0)
    elev -= 1.8 * river.water
    return elev


def _uplands(
    elev: np.ndarray,
    river: _River,
    layout: Layout,
    seed: int,
    u: np.ndarray,
    v: np.ndarray,
    rr: np.ndarray,
    fine: np.ndarray,
    hill: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """North of the floodplain: loess bluffs, then hills rising to the north-east, dissected by
    creeks. Returns the elevation with them and the distance (px) to the nearest creek."""
    shape = elev.shape
    k, kz, n, north = layout.k, layout.kz, river.offset, river.north
    t = np.maximum(n - river.w_north, 0.0)
    base = river.level[None, :] + 4.0
    surface = 170.0 * kz * (1.0 + 0.25 * river.bluff_noise) * smoothstep(0.0, 550.0 * k, t)
    relief = kz * (200.0 + 400.0 * smoothstep(-0.4, 0.8, u) * smoothstep(-0.1, 0.9, v))
    hills = relief * smoothstep(300.0 * k, 6500.0 * k, t) ** 0.8
    hills *= 1.0 + 0.2 * np.clip(hill, -2.0, 2.0)
    hills += 12.0 * kz * noise(seed, shape, "hill2") * smoothstep(0.0, 1000.0 * k, t)
    surface += base + np.maximum(hills, 0.0)
    del hills, relief, t
    foot = np.argmin(north, axis=0)  # first floodplain row from the top, per column
    creeks = rng_for(seed, STREAM_CREEKS)
    count = max(3, int(round(2.0 * layout.half / 2200.0)))
    cols = np.linspace(0.04, 0.96, count) * (shape[1] - 1)
    cols += creeks.uniform(-0.3, 0.3, count) * (cols[1] - cols[0])
    starts = [(float(foot[int(c)] - 1), float(c)) for c in cols if foot[int(c)] > 1]
    uplands, creek_px = carve_uplands(
        creeks, surface, np.broadcast_to(base, shape), north & (rr > 0.95), starts, 25.0 * k
    )
    del surface
    return np.where(north, uplands + 0.3 * fine, elev), creek_px


def _lowlands(
    elev: np.ndarray,
    river: _River,
    layout: Layout,
    seed: int,
    u: np.ndarray,
    v: np.ndarray,
    v1: np.ndarray,
    fine: np.ndarray,
    hill: np.ndarray,
    phases: np.ndarray,
) -> None:
    """South of the floodplain (added to ``elev``): wet flats sloping gently to the river, low
    hills at the southern edge, small streams wandering north."""
    k, kz = layout.k, layout.kz
    ts = np.maximum(-river.offset - river.w_south, 0.0)
    ramp = smoothstep(0.0, 500.0 * k, ts)
    elev += ramp * (0.0025 * ts + 2.5 * noise(seed, elev.shape, "low") + 0.3 * fine)
    elev += kz * 110.0 * smoothstep(-0.75, -1.1, v) * (1.0 + 0.4 * hill) * ramp
    del ts
    uw = u + 0.06 * noise(seed, elev.shape, "warp")  # streams wander (domain warp)
    stream_d = _creek_distance(uw, v1, layout.half, phases[9:13], spacing=4000.0)
    del uw
    elev -= 2.5 * np.exp(-((stream_d / 45.0) ** 2)) * ramp


def _volcano(
    elev: np.ndarray,
    du: np.ndarray,
    dv: np.ndarray,
    rr: np.ndarray,
    kz: float,
    phases: np.ndarray,
) -> np.ndarray:
    """The volcanic cone with a summit crater and radial gullies (added to ``elev``); returns its
    ash apron reaching east (0..1). ``du``, ``dv``: offsets from the vent (region units);
    ``rr``: distance from the vent in cone radii."""
    top = 0.12
    theta = np.arctan2(dv, du)
    gullies = 1.0 - 0.12 * (0.5 + 0.5 * np.cos(9 * theta + phases[13])) * smoothstep(top, 0.9, rr)
    del theta
    cone = 560.0 * kz * np.minimum(1.0, np.maximum(1.0 - rr, 0.0) / (1.0 - top)) ** 1.4
    elev += cone * gullies - 70.0 * kz * np.maximum(1.0 - (rr / (0.8 * top)) ** 2, 0.0)
    del cone, gullies
    plume = np.exp(-((dv / 0.16) ** 2)) * np.exp(-np.maximum(du, 0.0) / 0.7) * (du > 0)
    return np.clip(np.exp(-((rr / 1.15) ** 2)) + 0.8 * plume, 0.0, 1.0).astype("float32")


def _braided_channels(
    rng: np.random.Generator, s1: np.ndarray, n: np.ndarray, belt_half: float, k: float
) -> np.ndarray:
    """Water of a braided river: threads (zero lines of a field stretched along the river).

    The field lives on a grid in river coordinates (``s`` along, ``n`` across, metres): steps of
    50 m along and 10 m across, so its features are long bars and narrow threads. A main thread
    meanders inside the belt so the river never breaks.
    """
    n_max = belt_half + 100.0
    ds, dn = 50.0, 10.0
    s0 = float(s1.min()) - 200.0
    ns = int(np.ceil((float(s1.max()) + 200.0 - s0) / ds)) + 1
    nn = int(np.ceil(2 * n_max / dn)) + 1
    field = ndimage.gaussian_filter(rng.standard_normal((ns, nn)), (3.0, 2.5), mode="wrap")
    field /= field.std()
    phase = rng.uniform(0, 2 * np.pi)
    out = np.zeros(n.shape, dtype=bool)
    rows, cols = np.nonzero(np.abs(n) < n_max)
    s = s1[cols]
    nv = n[rows, cols]
    f = ndimage.map_coordinates(field, [(s - s0) / ds, (nv + n_max) / dn], order=1)
    main = 0.5 * belt_half * np.sin(s / (1500.0 * k) + phase)
    taper = np.abs(nv) < 0.92 * belt_half
    out[rows, cols] = ((np.abs(f) < 0.22) & taper) | (np.abs(nv - main) < 35.0 * k)
    return out


def _creek_distance(
    u: np.ndarray, v1: np.ndarray, half: float, phases: np.ndarray, spacing: float
) -> np.ndarray:
    """Distance (m) to the nearest of a set of streams running roughly north-south.

    ``u`` is [rows, cols] (warped so that the streams wander), ``v1`` the v of each row.
    """
    count = max(3, int(round(2.4 * half / spacing)))
    span = np.linspace(-1.15, 1.15, count)
    jitter = 0.25 * (span[1] - span[0]) * np.sin(np.arange(count) * 2.3 + phases[0])
    d = np.full(u.shape, np.inf, dtype="float32")
    for i, u0 in enumerate(span + jitter):
        ph = phases[i % len(phases)]
        centre = (u0 + 0.06 * np.sin(2.5 * v1 + ph) - 0.03 * v1).astype("float32")
        np.minimum(d, np.abs(u - centre[:, None]) * np.float32(half), out=d)
    return d
