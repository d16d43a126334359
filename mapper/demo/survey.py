"""SYNTHETIC field observations of the demo world, drawn from its truth maps.

Real soil surveys are not a random sample: points cluster along access corridors and at a few
intensively studied sites, older records lack permafrost notes, and pre-GPS positions are loose.
The demo's observations copy that structure:

- ~35 % along the road (within a few hundred metres of it), ~25 % along the river banks,
  ~30 % at one study site per soil order (a cluster of ~250 m radius centred in a landscape where
  that order dominates, so every order is observed), ~10 % scattered (helicopter stops);
- dates 1952-2023 (river surveys from 1952, the road from the 1960s, each site one campaign);
- NSP (0/1) drawn as Bernoulli(truth probability) and the soil order read from the truth map at
  the point, except that ~30 % of the points dated before 1985 were really observed up to ~150 m
  from their recorded position (pre-GPS position error);
- exactly 17.5 % of the points lack NSP (twice as likely before 1980) and 10 % lack a soil order
  (never both).

Positions are in the region (inside its boundary, never on open water), written as WGS84
longitude/latitude with 6 decimals; labels are taken at the pixel holding the *written* position
(plus the position error), so rounding cannot move a point off its label.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer
from scipy import ndimage

from mapper.bands import CLASS_NODATA, SOIL_ORDERS
from mapper.demo.fields import STREAM_SURVEY, rng_for
from mapper.demo.world import World
from mapper.errors import ConfigError
from mapper.files import atomic_path

COLUMNS = ("obs_id", "lon", "lat", "date", "nsp", "soil_order")
OBS_PER_KM2 = 3.6
"""Observation density: about 1500 points over the 20 x 20 km demo region."""
MIN_OBSERVATIONS = 300
MISSING_NSP = 0.175
MISSING_SOIL = 0.10
SHARES = {"road": 0.35, "river": 0.25, "sites": 0.30, "scattered": 0.10}


def observation_count(area_m2: float) -> int:
    return max(MIN_OBSERVATIONS, int(round(OBS_PER_KM2 * area_m2 / 1e6)))


def survey(
    world: World, boundary: shapely.Geometry, seed: int, where: str = "region boundary"
) -> dict[str, np.ndarray]:
    """Observation table as columns (see :data:`COLUMNS`); rows sorted by date, then obs_id.

    ``boundary`` is in EPSG:3338; ``where`` names it (the boundary file) in error messages.
    """
    rng = rng_for(seed, STREAM_SURVEY)
    n = observation_count(boundary.area)
    counts = {g: int(round(n * s)) for g, s in SHARES.items()}
    counts["scattered"] = n - sum(v for g, v in counts.items() if g != "scattered")
    shapely.prepare(boundary)
    parts = [_points(rng, world, boundary, where, g, count) for g, count in counts.items()]
    lon, lat, x, y, year = (np.concatenate(a) for a in zip(*parts, strict=True))

    # where each label was really observed: pre-GPS points carry position error
    loose = (year < 1985) & (rng.random(n) < 0.3)
    lx = x + np.where(loose, rng.normal(0.0, 75.0, n), 0.0)
    ly = y + np.where(loose, rng.normal(0.0, 75.0, n), 0.0)
    p, soil = _truth_at(world, lx, ly)
    p0, soil0 = _truth_at(world, x, y)
    off = np.isnan(p) | (soil == CLASS_NODATA)  # the true spot was water: use the written one
    p, soil = np.where(off, p0, p), np.where(off, soil0, soil)
    nsp = (rng.random(n) < p).astype("int8")

    day = rng.integers(152, 259, n)  # 1 June .. 15 September (day of a non-leap year)
    dates = np.array(
        [f"{yy:04d}-{_month_day(int(yy), int(dd))}" for yy, dd in zip(year, day, strict=True)],
        dtype=object,
    )
    weight = np.where(year < 1980, 2.0, 1.0)
    no_nsp = np.zeros(n, dtype=bool)
    chosen = rng.choice(n, int(round(MISSING_NSP * n)), replace=False, p=weight / weight.sum())
    no_nsp[chosen] = True
    keep = np.flatnonzero(~no_nsp)
    no_soil = np.zeros(n, dtype=bool)
    no_soil[rng.choice(keep, int(round(MISSING_SOIL * n)), replace=False)] = True

    order = np.lexsort((lat, lon, dates))
    return {
        "obs_id": np.array([f"OBS{i + 1:05d}" for i in range(n)], dtype=object),
        "lon": lon[order],
        "lat": lat[order],
        "date": dates[order],
        "nsp": np.where(no_nsp, -1, nsp)[order],
        "soil_order": np.where(no_soil, CLASS_NODATA, soil)[order],
    }


def _month_day(year: int, day_of_year: int) -> str:
    d = dt.date(year, 1, 1) + dt.timedelta(days=day_of_year - 1)
    return f"{d.month:02d}-{d.day:02d}"


def _truth_at(world: World, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truth NSP probability and soil order of the world pixels holding points (x, y)."""
    g = world.grid
    row = np.clip(np.floor((g.y0 - y) / g.res).astype(int), 0, g.shape[0] - 1)
    col = np.clip(np.floor((x - g.x0) / g.res).astype(int), 0, g.shape[1] - 1)
    return world.nsp[row, col].astype("float64"), world.soilorder[row, col]


def _points(
    rng: np.random.Generator,
    world: World,
    boundary: shapely.Geometry,
    where: str,
    group: str,
    count: int,
) -> tuple[np.ndarray, ...]:
    """``count`` points of one access group inside ``boundary`` and off open water.

    Returns lon, lat (rounded to 6 decimals, as written), the EPSG:3338 x, y of that written
    position, and the year of each point.
    """
    g = world.grid
    left, bottom, right, top = boundary.bounds  # draw candidates over the region's box only
    r_lo, r_hi = (g.y0 - top) / g.res - 0.5, (g.y0 - bottom) / g.res - 0.5
    c_lo, c_hi = (left - g.x0) / g.res - 0.5, (right - g.x0) / g.res - 0.5
    to_lonlat = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True)
    from_lonlat = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True)
    found: list[tuple[np.ndarray, ...]] = []
    have = 0
    sites = _site_centres(rng, world, boundary, where) if group == "sites" else None
    for _ in range(200):
        m = max(4 * (count - have), 256)
        if group == "road":
            row = rng.uniform(r_lo, r_hi, m)
            col = np.interp(row, np.arange(g.shape[0]), world.road_col)
            col += rng.choice([-1.0, 1.0], m) * rng.exponential(15.0, m)
            year = rng.integers(1962, 2024, m)
        elif group == "river":
            col = rng.uniform(c_lo, c_hi, m)
            row = np.interp(col, np.arange(g.shape[1]), world.river_row)
            away = world.belt_half / g.res + rng.exponential(25.0, m)
            row += rng.choice([-1.0, 1.0], m) * away
            year = 1952 + np.floor(rng.beta(1.2, 1.6, m) * 72).astype(int)
        elif group == "sites":
            which = rng.integers(0, len(sites), m)
            row = sites[which, 0] + rng.normal(0.0, 25.0, m)
            col = sites[which, 1] + rng.normal(0.0, 25.0, m)
            year = sites[which, 2] + rng.integers(-1, 2, m)
        else:
            row = rng.uniform(r_lo, r_hi, m)
            col = rng.uniform(c_lo, c_hi, m)
            year = rng.integers(1970, 2024, m)
        lon, lat = to_lonlat.transform(g.x0 + (col + 0.5) * g.res, g.y0 - (row + 0.5) * g.res)
        lon, lat = np.round(lon, 6), np.round(lat, 6)
        x, y = from_lonlat.transform(lon, lat)  # the written position, as a reader projects it
        ok = shapely.contains_xy(boundary, x, y)
        ok &= _truth_at(world, x, y)[1] != CLASS_NODATA
        take = np.flatnonzero(ok)[: count - have]
        year = np.clip(year[take], 1952, 2023).astype(int)
        found.append((lon[take], lat[take], x[take], y[take], year))
        have += take.size
        if have == count:
            break
    else:
        raise ConfigError(
            f"{where}: could not place {count} {group} observations on land inside the "
            "region; use a larger boundary"
        )
    return tuple(np.concatenate(a) for a in zip(*found, strict=True))


def _site_centres(
    rng: np.random.Generator, world: World, boundary: shapely.Geometry, where: str
) -> np.ndarray:
    """One study site per soil order: (row, col, campaign year) of a world pixel in the region
    where that order covers most of the surrounding ~500 m (or as much as anywhere)."""
    g = world.grid
    f = 5  # work on 50 m blocks
    h, w = (g.shape[0] // f) * f, (g.shape[1] // f) * f
    soil = world.soilorder[:h, :w]
    rows = (np.arange(h // f) + 0.5) * f - 0.5
    cols = (np.arange(w // f) + 0.5) * f - 0.5
    cx = g.x0 + (cols + 0.5) * g.res
    cy = g.y0 - (rows + 0.5) * g.res
    inside = shapely.contains_xy(boundary, *np.meshgrid(cx, cy))
    out = []
    for c in range(len(SOIL_ORDERS)):
        share = (soil == c).reshape(h // f, f, w // f, f).mean(axis=(1, 3))
        share = ndimage.uniform_filter(share, 9, mode="nearest")
        share = np.where(inside, share, -1.0)
        best = share.max()
        if best <= 0:
            continue
        cand = np.flatnonzero(share.ravel() >= min(0.6, 0.8 * best))
        pick = int(rng.choice(cand))
        r, q = divmod(pick, share.shape[1])
        out.append((rows[r], cols[q], int(rng.integers(1975, 2021))))
    if not out:
        raise ConfigError(f"{where}: the region holds no land; use a larger boundary")
    return np.array(out, dtype="float64")


def write_observations(path: Path, table: dict[str, np.ndarray]) -> None:
    """Write the table as CSV (``\\n`` line ends, 6-decimal degrees, empty = missing) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(COLUMNS)
            for i in range(len(table["obs_id"])):
                nsp = int(table["nsp"][i])
                soil = int(table["soil_order"][i])
                out.writerow(
                    [
                        table["obs_id"][i],
                        f"{table['lon'][i]:.6f}",
                        f"{table['lat'][i]:.6f}",
                        table["date"][i],
                        "" if nsp < 0 else str(nsp),
                        "" if soil == CLASS_NODATA else SOIL_ORDERS[soil],
                    ]
                )

