"""Building blocks of the SYNTHETIC demo world: its grid, its layout, and seeded random fields.

Each named random field has its own numpy random stream (``SeedSequence([seed, 10, stream])``),
so a field is the same whatever order the code asks for it in, and fields can be made just before
they are used and dropped just after (the whole demo world stays well under 1 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from scipy import ndimage, sparse
from scipy.special import ndtri

DEMO_HALF_WIDTH = 10_240.0
"""Half-width (m) of the demo region: the size the layout's relief and widths are drawn for."""

# name: (stream, feature size in world pixels, spline order of the upsampling)
NOISES: dict[str, tuple[int, float, int]] = {
    "hill": (1, 150.0, 3),  # regional upland relief
    "hill2": (2, 40.0, 3),  # upland knolls
    "low": (3, 50.0, 3),  # lowland micro-relief
    "fine": (4, 15.0, 3),  # metre-scale ground roughness
    "bluff": (5, 80.0, 3),  # bluff height and floodplain width along the river
    "warp": (6, 120.0, 3),  # wandering of lowland streams
    "cover": (7, 30.0, 1),  # vegetation patches
    "cover_fine": (8, 12.0, 1),  # small vegetation patches
    "fen": (9, 60.0, 1),  # fen complexes
    "wet": (10, 90.0, 1),  # lowland wetness regime (tundra vs black spruce)
    "pond": (11, 10.0, 1),  # thermokarst ponds
    "polygon": (12, 40.0, 1),  # ice-wedge polygon fields
    "nsp": (13, 80.0, 1),  # unobserved controls of permafrost
    "tundra": (14, 25.0, 1),  # smooth wetness variation of tussock tundra
    "texture": (15, 8.0, 1),  # within-class spectral variation
}
STREAM_PHASES, STREAM_BRAIDS, STREAM_CREEKS = 1, 2, 3
STREAM_POLYGONS, STREAM_SENSOR, STREAM_SURVEY = 4, 5, 6
"""Streams of the other random draws (``SeedSequence([seed, stream])``)."""


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """0 below ``e0``, 1 above ``e1``, a C1 cubic in between (works for ``e0 > e1`` too)."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float, order: int = 1
) -> np.ndarray:
    """Gaussian-like random field of unit variance with features about ``scale_px`` pixels wide.

    White noise on a coarse grid (step ``scale_px / 3``), blurred, then upsampled with B-spline
    weights of ``order`` 1 (linear) or 3 (cubic: C2, where derivatives matter, e.g. elevation),
    separably through sparse matrices. float32, mean 0, std 1 over the array.
    """
    step = max(1, int(round(scale_px / 3.0)))
    pad = 4
    coarse = rng.standard_normal((shape[0] // step + 2 * pad, shape[1] // step + 2 * pad))
    coarse = ndimage.gaussian_filter(coarse, 1.0, mode="wrap")
    if step == 1:
        out = np.array(coarse[pad : pad + shape[0], pad : pad + shape[1]], dtype="float32")
    else:
        rows = _upsampler(shape[0], step, pad, coarse.shape[0], order)
        cols = _upsampler(shape[1], step, pad, coarse.shape[1], order)
        out = np.asarray((cols @ (rows @ coarse).T).T, dtype="float32")
    out -= out.mean()
    out /= out.std()
    return out


def _upsampler(n_out: int, step: int, pad: int, n_in: int, order: int) -> sparse.csr_matrix:
    """[n_out, n_in] B-spline interpolation weights from a coarse axis (``pad`` cells of margin,
    one cell per ``step`` fine pixels, cell centres at the centres of the fine pixel blocks)."""
    pos = (np.arange(n_out) + 0.5) / step - 0.5 + pad
    i0 = np.floor(pos).astype(int)
    t = pos - i0
    if order == 1:
        idx = np.stack([i0, i0 + 1], axis=1)
        w = np.stack([1.0 - t, t], axis=1)
    else:
        idx = np.stack([i0 - 1, i0, i0 + 1, i0 + 2], axis=1)
        w = np.stack(
            [(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], axis=1
        ) / 6.0
    rows = np.repeat(np.arange(n_out), idx.shape[1])
    return sparse.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(n_out, n_in))


def noise(seed: int, shape: tuple[int, int], name: str) -> np.ndarray:
    """The world's random field ``name`` (see :data:`NOISES`), float32, mean 0, std 1."""
    stream, scale, order = NOISES[name]
    return smooth_noise(rng_for(seed, 10, stream), shape, scale, order)


def gaussianize(values: np.ndarray) -> np.ndarray:
    """Map values to standard-normal quantiles by rank (ties broken by position): exact N(0, 1)."""
    ranks = np.empty(values.size, dtype="float64")
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    return ndtri((ranks + 0.5) / values.size).astype("float32")


def blur(a: np.ndarray, sigma_px: float, factor: int = 5) -> np.ndarray:
    """Gaussian mean of ``a`` (sigma in pixels), computed on a ``factor`` x coarser grid."""
    h, w = a.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.pad(a, ((0, hp - h), (0, wp - w)), mode="edge")
    coarse = padded.reshape(hp // factor, factor, wp // factor, factor).mean(axis=(1, 3))
    coarse = ndimage.gaussian_filter(coarse, sigma_px / factor, mode="nearest")
    fine = ndimage.zoom(coarse, factor, order=1, grid_mode=True, mode="nearest")
    return fine[:h, :w].astype("float32")


@dataclass(frozen=True)
class WorldGrid:
    """A north-up grid in EPSG:3338; ``(x0, y0)`` is its upper-left corner (on the lattice)."""

    x0: float
    y0: float
    res: float
    shape: tuple[int, int]

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre x of every column and y of every row (1-D, metres)."""
        xs = self.x0 + (np.arange(self.shape[1]) + 0.5) * self.res
        ys = self.y0 - (np.arange(self.shape[0]) + 0.5) * self.res
        return xs, ys

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, col) array coordinates of points, pixel centres at whole numbers."""
        return (self.y0 - y) / self.res - 0.5, (x - self.x0) / self.res - 0.5


@dataclass(frozen=True)
class Layout:
    """Where the landscape sits: centre ``(cx, cy)`` and half-width ``half`` of the region (m)."""

    cx: float
    cy: float
    half: float

    @property
    def k(self) -> float:
        """Scale of widths (floodplain, bluffs, cone) relative to the demo region."""
        return float(np.clip(self.half / DEMO_HALF_WIDTH, 0.15, 1.0))

    @property
    def kz(self) -> float:
        """Scale of relief relative to the demo region (kept from flattening tiny regions)."""
        return float(np.clip(self.half / DEMO_HALF_WIDTH, 0.3, 1.0))

    def uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x - self.cx) / self.half, (y - self.cy) / self.half
