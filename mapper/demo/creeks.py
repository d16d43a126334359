"""Dissected uplands of the SYNTHETIC demo world: a branching creek network carved into a surface.

Noise alone makes hills with closed basins and no coherent drainage, which leaves a wetness index
meaningless. Here the uplands are built around a drainage network instead: main creeks start at
the foot of the river bluffs and wander upslope; tributaries branch off at wide angles and curve
upslope; smaller ones branch off those. Each channel's bed rises monotonically upstream from its
junction, and the ground between channels rises from the nearest bed towards a smooth regional
surface over a few hundred metres. So every point drains to a channel and every channel drains to
the river, as in real dissected terrain (and flow accumulation concentrates along the creeks).

Works in world-grid pixel units (10 m, rows southward); elevations in metres.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CELL = 6
"""Occupancy cell (pixels): a channel stops when it comes this close to another channel."""


def _walk(
    rng: np.random.Generator,
    start: tuple[float, float],
    heading: float,
    length: int,
    pull: float,
    allowed: np.ndarray,
    occupied: np.ndarray,
    ident: int,
    parent: int,
) -> np.ndarray:
    """Positions (row, col) of a channel walked upstream one pixel per step.

    ``heading`` is radians clockwise from north; each step turns it by a little noise and pulls
    it towards north by ``pull``. The walk ends at ``length`` steps, outside ``allowed``, or on
    reaching a cell held by another channel than itself and its parent.
    """
    h, w = allowed.shape
    r, c = start
    pts = []
    for _ in range(length):
        heading += -pull * heading + rng.normal(0.0, 0.09)
        r -= np.cos(heading)
        c += np.sin(heading)
        ir, ic = int(round(r)), int(round(c))
        if not (0 <= ir < h and 0 <= ic < w) or not allowed[ir, ic]:
            break
        owner = occupied[ir // CELL, ic // CELL]
        if owner not in (0, ident, parent):
            break
        occupied[ir // CELL, ic // CELL] = ident
        pts.append((r, c))
    return np.array(pts, dtype="float64").reshape(-1, 2)


def _beds(
    pts: np.ndarray, start_bed: float, surface: np.ndarray, base: np.ndarray, share: float,
    gradient: float,
) -> np.ndarray:
    """Bed elevations along a channel: rising at least ``gradient`` per pixel, and to at least
    ``share`` of the way from ``base`` up to the regional ``surface`` (never above it)."""
    ir = np.round(pts[:, 0]).astype(int)
    ic = np.round(pts[:, 1]).astype(int)
    target = base[ir, ic] + share * (surface[ir, ic] - base[ir, ic])
    beds = np.empty(len(pts))
    bed = start_bed
    for i, t in enumerate(target):
        bed = max(bed + gradient, t)
        beds[i] = bed
    return beds


def carve_uplands(
    rng: np.random.Generator,
    surface: np.ndarray,
    base: np.ndarray,
    allowed: np.ndarray,
    starts: list[tuple[float, float]],
    valley_px: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Elevation of dissected uplands and the distance (pixels) to the nearest channel.

    ``surface``: the smooth regional upland surface (m); ``base``: the elevation where the main
    creeks leave the uplands (m); ``allowed``: where channels may run; ``starts``: (row, col) of
    the main creeks' mouths; ``valley_px``: how far from a bed the ground takes to rise most of
    the way to the surface.
    """
    h, w = surface.shape
    occupied = np.zeros((h // CELL + 1, w // CELL + 1), dtype="int32")
    channels: list[tuple[np.ndarray, np.ndarray]] = []
    ident = 0
    # queue items: (start, heading, length, pull, order, id, parent id, bed at start or None)
    queue: list[tuple[tuple[float, float], float, int, float, int, int, int, float | None]] = []
    for start in starts:
        ident += 1
        queue.append((start, 0.0, 10**6, 0.02, 1, ident, 0, None))
    while queue:
        start, heading, length, pull, order, me, parent, start_bed = queue.pop(0)
        pts = _walk(rng, start, heading, length, pull, allowed, occupied, me, parent)
        if len(pts) < 5:
            continue
        if start_bed is None:
            r0, c0 = int(round(start[0])), int(round(start[1]))
            start_bed = float(base[min(max(r0, 0), h - 1), min(max(c0, 0), w - 1)])
        share, gradient = {1: (0.3, 0.02), 2: (0.5, 0.05), 3: (0.65, 0.08)}[order]
        beds = _beds(pts, start_bed, surface, base, share, gradient)
        channels.append((pts, beds))
        if order == 3:
            continue
        gap_lo, gap_hi, len_lo, len_hi = (35, 90, 120, 420) if order == 1 else (22, 50, 40, 150)
        i = int(rng.integers(gap_lo // 2, gap_hi))
        while i < len(pts) - 10:
            side = 1.0 if rng.random() < 0.5 else -1.0
            turn = np.radians(rng.uniform(55.0, 85.0))
            prev = pts[max(i - 3, 0)]
            heading_here = np.arctan2(pts[i, 1] - prev[1], -(pts[i, 0] - prev[0]))
            ident += 1
            length = int(rng.integers(len_lo, len_hi))
            queue.append(
                (tuple(pts[i]), heading_here + side * turn, length, 0.005, order + 1, ident, me,
                 beds[i])
            )
            i += int(rng.integers(gap_lo, gap_hi))
    bed_img = np.full((h, w), np.inf, dtype="float32")
    for pts, beds in channels:
        ir = np.round(pts[:, 0]).astype(int)
        ic = np.round(pts[:, 1]).astype(int)
        np.minimum.at(bed_img, (ir, ic), beds.astype("float32"))
    on = np.isfinite(bed_img)
    if not on.any():
        return surface.astype("float32"), np.full((h, w), np.inf, dtype="float32")
    dist = ndimage.distance_transform_edt(~on).astype("float32")
    bed = _spread(np.where(on, bed_img, 0.0), on, valley_px)
    rise = np.maximum(surface - bed, 0.0) * np.tanh(dist / valley_px)
    # soften the creases where valley sides meet (ridges, channel bottoms) over ~20 m
    elev = ndimage.gaussian_filter(np.minimum(bed, surface) + rise, 2.0, mode="nearest")
    return elev.astype("float32"), dist


def _spread(values: np.ndarray, mask: np.ndarray, sigma_px: float) -> np.ndarray:
    """Smooth field through the ``mask`` pixels' values (normalised Gaussian convolution).

    Used for the bed under the valley sides: a nearest-channel bed would jump where two channels'
    catchments meet, leaving cliffs; a smooth one blends the beds of nearby channels.
    """
    f = 4
    h, w = values.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    v = np.pad(values * mask, ((0, hp - h), (0, wp - w))).reshape(hp // f, f, wp // f, f)
    m = np.pad(mask.astype("float32"), ((0, hp - h), (0, wp - w))).reshape(hp // f, f, wp // f, f)
    num = ndimage.gaussian_filter(v.sum(axis=(1, 3)), sigma_px / f, mode="nearest")
    den = ndimage.gaussian_filter(m.sum(axis=(1, 3)), sigma_px / f, mode="nearest")
    # far from every channel the ratio is 0/0: take the widest blur there
    wide_num = ndimage.gaussian_filter(v.sum(axis=(1, 3)), 4 * sigma_px / f, mode="nearest")
    wide_den = ndimage.gaussian_filter(m.sum(axis=(1, 3)), 4 * sigma_px / f, mode="nearest")
    weak = den < 1e-3
    coarse = np.where(weak, wide_num / np.maximum(wide_den, 1e-12), num / np.maximum(den, 1e-12))
    fine = ndimage.zoom(coarse, f, order=1, grid_mode=True, mode="nearest")
    return fine[:h, :w].astype("float32")

