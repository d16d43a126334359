"""The ground under the lattice: how EPSG:3338's metres and axes depart from those on the ground.

Alaska Albers (EPSG:3338) keeps area, not distance or direction. At a point, a step ``de`` east and
``dn`` north on the ground (true east and north, metres) is a step on the grid of

    [dX, dY] = R(gamma) @ diag(k, h) @ [de, dn]

with ``k`` the scale along the parallel, ``h`` along the meridian (``k * h = 1``: equal area) and
``gamma`` the meridian convergence, the angle clockwise from true north to grid north
(:func:`grid_convergence`). ``k`` is 1 on the standard parallels (55 and 65 N),
0.9962 at 60 N, 1.0032 at Attu (52.9 N) and 1.0251 at Utqiagvik (71.3 N).

A :class:`GroundFrame` holds that Jacobian ``J`` for every pixel of an array, so that the terrain
functions (:mod:`mapper.terrain`) turn the derivatives they take on the grid into ground ones:
the gradient is ``J.T @ g`` and the Hessian ``J.T @ H @ J`` (the derivatives of ``J`` itself, some
1e-9 per metre, are left out). Slope, aspect (then from true north) and curvature are then those
of the ground. ``k``, ``h`` and ``gamma`` depend on a pixel's position only, so tiles of any size
agree pixel for pixel (what :mod:`mapper.stack` relies on). ``k`` and ``h`` depend on the latitude
only, and so, on a conic projection, on the distance from the apex of the cone: they are
interpolated from a table of pyproj's ``get_factors`` along the central meridian every 0.01 degree
(error below 1e-7).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from pyproj import Proj, Transformer

from mapper.errors import ConfigError

_LAT_RANGE = (0.0, 89.0)
"""Latitudes of the scale table (degrees): the northern hemisphere to 1 degree from the pole
(Alaska is 51 to 71.5 N; the lattice reaches 73.5 N at most)."""
_CENTRAL_LON = -154.0
"""EPSG:3338's central meridian (lon_0)."""


@cache
def _albers_apex_y() -> float:
    """y (m) of the apex of EPSG:3338's cone, where its meridians meet (x = 0, on lon_0): the
    meridian 10 degrees east of lon_0, through its points at 55 and 65 N, extended to x = 0."""
    to_albers = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True)
    (x1, x2), (y1, y2) = to_albers.transform([-144.0, -144.0], [55.0, 65.0])
    return float(y1 - x1 * (y2 - y1) / (x2 - x1))


def grid_convergence(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Meridian convergence of EPSG:3338 at (x, y) (metres): the angle, degrees clockwise, from
    true north to grid north (float64). +5.4 at Fairbanks, -9.8 at Nome, -28.6 at Attu; 0 on
    154 W. The meridians of a conic projection are straight lines through the cone's apex, so it
    is the angle of the line from the apex to the point (pyproj's ``get_factors`` gives the same
    to 1e-5 degrees)."""
    return np.degrees(np.arctan2(np.asarray(x, dtype=np.float64),
                                 _albers_apex_y() - np.asarray(y, dtype=np.float64)))


@cache
def _scale_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(apex distance, k, h) along the central meridian, by increasing apex distance."""
    lats = np.arange(_LAT_RANGE[0], _LAT_RANGE[1] + 1e-9, 0.01)
    lons = np.full_like(lats, _CENTRAL_LON)
    _, y = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True).transform(lons, lats)
    factors = Proj("EPSG:3338").get_factors(lons, lats)
    rho = _albers_apex_y() - np.asarray(y)
    order = np.argsort(rho)
    return (rho[order], np.asarray(factors.parallel_scale)[order],
            np.asarray(factors.meridional_scale)[order])


def scale_factors(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EPSG:3338's scale factors (k along the parallel, h along the meridian) at (x, y) metres."""
    rho_table, k_table, h_table = _scale_table()
    rho = np.hypot(np.asarray(x, dtype=np.float64), _albers_apex_y() - np.asarray(y, np.float64))
    if rho.size and not (rho_table[0] <= rho.min() and rho.max() <= rho_table[-1]):
        raise ConfigError(
            f"EPSG:3338 ground distances (stack.distances: ground) are tabled for "
            f"{_LAT_RANGE[0]:g} to {_LAT_RANGE[1]:g} degrees N, and this window reaches beyond; "
            "map a region inside that band, or set stack.distances: grid in its region file"
        )
    return np.interp(rho, rho_table, k_table), np.interp(rho, rho_table, h_table)


@dataclass(frozen=True)
class GroundFrame:
    """Per pixel, the Jacobian ``J = [[a, b], [c, d]]`` of grid metres (X east, Y north on the
    grid) by ground metres (true east, true north): float32 arrays of the terrain array's shape."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray

    def interior(self) -> GroundFrame:
        """The frame of the interior pixels (the 3x3 derivatives' shape: one pixel less a side)."""
        inner = (slice(1, -1), slice(1, -1))
        return GroundFrame(self.a[inner], self.b[inner], self.c[inner], self.d[inner])

    def gradient(self, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground (true east, true north) gradient from the grid one: ``J.T @ (gx, gy)``."""
        return self.a * gx + self.c * gy, self.b * gx + self.d * gy

    def hessian(
        self, r: np.ndarray, s: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ground second derivatives (z_ee, z_en, z_nn) from the grid ones: ``J.T @ H @ J``."""
        a, b, c, d = self.a, self.b, self.c, self.d
        return (a * a * r + 2 * a * c * s + c * c * t,
                a * b * r + (a * d + b * c) * s + c * d * t,
                b * b * r + 2 * b * d * s + d * d * t)


def ground_frame(x: np.ndarray, y: np.ndarray) -> GroundFrame:
    """The :class:`GroundFrame` at pixel centres (``x`` a row of columns' x, ``y`` a column of
    rows' y, broadcast to the array's shape; metres in EPSG:3338)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    k, h = scale_factors(x, y)
    gamma = np.radians(grid_convergence(x, y))
    cos, sin = np.cos(gamma), np.sin(gamma)
    del gamma
    f32 = np.float32
    return GroundFrame((k * cos).astype(f32), (-h * sin).astype(f32), (k * sin).astype(f32),
                       (h * cos).astype(f32))
