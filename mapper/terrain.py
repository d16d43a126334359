"""Terrain covariates from a DEM array on the 10 m lattice: local derivatives and flow accumulation.

Conventions (shared by every function here):

- Arrays are north-up rasters: row 0 is the northern edge, column 0 the western edge; ``res`` is the
  square pixel size in metres. Elevations are metres; NaN marks no data (ocean, outside the DEM).
- Every function computes each output pixel from a fixed neighbourhood of input pixels with
  arithmetic that does not depend on where the pixel sits in the array. That is what makes the stack
  seamless: a tile computed from a DEM window with a large enough halo gives, pixel for pixel, the
  values a single pass over the whole region would give (see :mod:`mapper.stack`).
- Outputs have the input's shape; pixels whose neighbourhood leaves the array or holds no data are
  NaN (the caller reads a halo and crops it away).

Covariates and their definitions:

- slope: Horn (1981) 3x3 gradient, degrees.
- aspect: the compass direction the slope faces (downslope), degrees clockwise from grid north in
  [0, 360); a plane rising to the east faces west: 270. Flat pixels (zero gradient) have no aspect
  and are NaN (xarray-spatial flags them -1, which would read as an angle). The stack's band is
  from true north by default (``stack.aspect_from``): grid north of EPSG:3338 departs from it by
  the meridian convergence, -29 to +19 degrees across the state.
  Slope and aspect are xarray-spatial's Horn formulas and conventions, computed here in float64
  numpy: its numba kernels compile at the first call in every process, about 6 s per tile job
  (measured), more than the derivatives of a whole 512 px tile; the tests check agreement.
- Ground or grid: with a ``frame`` (:mod:`mapper.ground`; ``stack.distances: ground``, the
  default), slope, aspect (then from true north) and curvature are those of the ground, whose
  metres EPSG:3338 scales by k east-west and 1/k north-south (k = 1 on 55 and 65 N, 1.025 at
  Utqiagvik); without, of the grid's metres (and :func:`true_aspect` turns the aspect).
- curvature: maximal principal curvature k_max = H + sqrt(H^2 - K) of the surface (Shary 1995;
  Florinsky 2016), from Evans-Young 3x3 derivatives, 1/m, positive on convex forms (ridges), 0 along
  valley floors. xarray-spatial's ``curvature`` is the ArcGIS standard (Laplacian) curvature in
  1/100 m, not this one, so it is computed here (float64).
- tpi: elevation minus the mean elevation of the valid pixels in a DISC (centre included) of radius
  ``radius_px`` pixels (pixel centres with dx^2 + dy^2 <= r^2). Disc sums use exact integer
  arithmetic on elevations quantised to 2^-16 m, so they do not depend on the array's extent.
- Hydrology (:func:`specific_catchment_area`): depressions filled (spill elevation = minimax path
  over the 8 neighbours to the window edge, via a minimum spanning tree: priority-flood as Barnes
  et al. 2014 with the connectivity the flow has), flats drained along the shortest path over the
  flat to its outlet, then multiple-flow-direction accumulation (Quinn et al. 1991: the flow is
  split over the lower neighbours in proportion to tan(beta_k) times the contour length, 0.5 cell
  towards an edge and sqrt(2)/4 towards a corner neighbour) solved as one sparse triangular
  system. Specific catchment area a = upslope area / contour width (res).
- twi = ln(a / tan(beta)), spi = ln(a * tan(beta)) with beta the local (Horn) slope and tan(beta)
  floored at :data:`MIN_TAN_SLOPE` so flats stay finite (Beven & Kirkby 1979; Moore et al. 1991).

xarray-spatial 0.5 (the version used) has no hydrology (flow direction/accumulation), hence the
compact scipy implementation below.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, dijkstra, minimum_spanning_tree
from scipy.sparse.linalg import spsolve_triangular

if TYPE_CHECKING:
    from mapper.ground import GroundFrame

logger = logging.getLogger(__name__)

CONTOUR_LENGTHS = (0.5, math.sqrt(2.0) / 4)
"""Quinn et al. (1991) contour lengths (in cells) towards an edge and a corner neighbour."""

MIN_TAN_SLOPE = 1e-3
"""Floor of tan(slope) in TWI and SPI (about 0.057 degrees) so that flat pixels stay finite."""

TPI_QUANTUM = 2.0**-16
"""Elevation quantum (m) of the exact integer disc sums of the TPI."""

# the 8 neighbours (row offset, column offset), clockwise from north
_OFFSETS: list[tuple[int, int]] = [
    (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)
]


def _neighbourhood(z: np.ndarray) -> list[np.ndarray]:
    """The 3x3 neighbours z1..z9 (row-major from the north-west) of every interior pixel."""
    return [z[r : r + z.shape[0] - 2, c : c + z.shape[1] - 2] for r in range(3) for c in range(3)]


def horn_gradient(dem: np.ndarray, res: float) -> tuple[np.ndarray, np.ndarray]:
    """Horn (1981) dz/dx (east) and dz/dy (north) of the interior pixels (float64, shape - 2)."""
    z1, z2, z3, z4, _, z6, z7, z8, z9 = _neighbourhood(np.asarray(dem, dtype=np.float64))
    dzdx = ((z3 + 2 * z6 + z9) - (z1 + 2 * z4 + z7)) / (8 * res)
    dzdy = ((z1 + 2 * z2 + z3) - (z7 + 2 * z8 + z9)) / (8 * res)
    return dzdx, dzdy


def slope(dem: np.ndarray, res: float, frame: GroundFrame | None = None) -> np.ndarray:
    """Horn slope in degrees (float32); outermost rows/columns and NaN neighbourhoods are NaN.
    With ``frame`` (:func:`mapper.ground.ground_frame`, the array's shape), of the ground."""
    out = np.full(np.shape(dem), np.nan, dtype=np.float32)
    if min(out.shape) >= 3:
        dzdx, dzdy = horn_gradient(dem, res)
        if frame is not None:
            dzdx, dzdy = frame.interior().gradient(dzdx, dzdy)
        out[1:-1, 1:-1] = np.degrees(np.arctan(np.hypot(dzdx, dzdy)))
    return out


def aspect(dem: np.ndarray, frame: GroundFrame | None = None) -> np.ndarray:
    """Horn aspect, degrees clockwise from north the slope faces (float32); flat and edges NaN.
    From grid north; with ``frame`` (the array's shape), from true north, of the ground (the
    grid's scale differs east-west and north-south, which turns a diagonal slope's direction)."""
    out = np.full(np.shape(dem), np.nan, dtype=np.float32)
    if min(out.shape) >= 3:
        dzdx, dzdy = horn_gradient(dem, 1.0)
        if frame is not None:
            dzdx, dzdy = frame.interior().gradient(dzdx, dzdy)
        azimuth = np.degrees(np.arctan2(-dzdx, -dzdy)) % 360.0  # the downslope direction
        azimuth[(dzdx == 0) & (dzdy == 0)] = np.nan
        out[1:-1, 1:-1] = azimuth
        out[out >= 360.0] = 0.0  # -1e-15 % 360 rounds to 360 in float32
    return out


def true_aspect(grid_aspect: np.ndarray, convergence: np.ndarray) -> np.ndarray:
    """Aspect from true north (degrees in [0, 360), float32) from the aspect on the EPSG:3338 grid
    (:func:`aspect`) and :func:`mapper.ground.grid_convergence` at each pixel; NaN stays NaN."""
    out = ((np.asarray(grid_aspect, dtype=np.float64) + convergence) % 360.0).astype(np.float32)
    out[out >= 360.0] = 0.0
    return out


def max_curvature(dem: np.ndarray, res: float, frame: GroundFrame | None = None) -> np.ndarray:
    """Maximal principal curvature (1/m, float32; positive on ridges), Evans-Young derivatives;
    with ``frame`` (the array's shape), of the ground."""
    z = np.asarray(dem, dtype=np.float64)
    out = np.full(z.shape, np.nan, dtype=np.float32)
    if min(z.shape) < 3:
        return out
    z1, z2, z3, z4, z5, z6, z7, z8, z9 = _neighbourhood(z)
    w = float(res)
    p = (z3 + z6 + z9 - z1 - z4 - z7) / (6 * w)  # dz/dx, x east
    q = (z1 + z2 + z3 - z7 - z8 - z9) / (6 * w)  # dz/dy, y north
    r = (z1 + z3 + z4 + z6 + z7 + z9 - 2 * (z2 + z5 + z8)) / (3 * w * w)
    t = (z1 + z2 + z3 + z7 + z8 + z9 - 2 * (z4 + z5 + z6)) / (3 * w * w)
    s = (z3 + z7 - z1 - z9) / (4 * w * w)
    if frame is not None:
        inner = frame.interior()
        p, q = inner.gradient(p, q)
        r, s, t = inner.hessian(r, s, t)
    g = 1 + p * p + q * q
    mean = -((1 + q * q) * r - 2 * p * q * s + (1 + p * p) * t) / (2 * g**1.5)
    gauss = (r * t - s * s) / (g * g)
    kmax = mean + np.sqrt(np.maximum(mean * mean - gauss, 0.0))
    out[1:-1, 1:-1] = kmax
    return out


def tpi_radius_px(radius_m: float, res: float) -> int:
    """Half-width in pixels of the TPI disc of ``radius_m`` metres (the halo it needs)."""
    return int(math.floor(radius_m / res + 1e-9))


def tpi(dem: np.ndarray, radius_px: float) -> np.ndarray:
    """Elevation minus the mean of the valid pixels in a disc of ``radius_px`` pixels (float32).

    The disc holds the pixel centres with dx^2 + dy^2 <= radius_px^2 (centre included). Pixels
    closer than ``floor(radius_px)`` to the array edge are NaN. Sums are exact int64 sums of
    elevations quantised to :data:`TPI_QUANTUM`, built from row-wise running sums, so a pixel's
    value does not depend on the array's extent (floating-point running sums would).
    """
    z = np.asarray(dem, dtype=np.float64)
    rad = int(math.floor(radius_px + 1e-9))
    h, w = z.shape
    out = np.full(z.shape, np.nan, dtype=np.float32)
    oh, ow = h - 2 * rad, w - 2 * rad
    if oh <= 0 or ow <= 0:
        return out
    valid = np.isfinite(z)
    q = np.where(valid, np.rint(np.where(valid, z, 0.0) / TPI_QUANTUM), 0).astype(np.int64)
    csum = np.zeros((h, w + 1), dtype=np.int64)
    np.cumsum(q, axis=1, out=csum[:, 1:])
    ccount = np.zeros((h, w + 1), dtype=np.int64)
    np.cumsum(valid, axis=1, out=ccount[:, 1:])
    total = np.zeros((oh, ow), dtype=np.int64)
    count = np.zeros((oh, ow), dtype=np.int64)
    for dy in range(-rad, rad + 1):
        half = int(math.floor(math.sqrt(max(radius_px * radius_px - dy * dy, 0.0)) + 1e-9))
        rows = slice(rad + dy, rad + dy + oh)
        hi = slice(rad + half + 1, rad + half + 1 + ow)
        lo = slice(rad - half, rad - half + ow)
        total += csum[rows, hi] - csum[rows, lo]
        count += ccount[rows, hi] - ccount[rows, lo]
    centre = z[rad : rad + oh, rad : rad + ow]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total.astype(np.float64) * TPI_QUANTUM / count
    res = centre - mean
    res[(count == 0) | ~np.isfinite(centre)] = np.nan
    out[rad : rad + oh, rad : rad + ow] = res
    return out


# -- hydrology ----------------------------------------------------------------------------------


def _shifted(a: np.ndarray, dr: int, dc: int, fill: float | bool) -> np.ndarray:
    """``out[i, j] = a[i + dr, j + dc]``, ``fill`` where that leaves the array."""
    out = np.full(a.shape, fill, dtype=a.dtype)
    h, w = a.shape
    rs_dst = slice(max(-dr, 0), h - max(dr, 0))
    cs_dst = slice(max(-dc, 0), w - max(dc, 0))
    rs_src = slice(max(dr, 0), h - max(-dr, 0))
    cs_src = slice(max(dc, 0), w - max(-dc, 0))
    out[rs_dst, cs_dst] = a[rs_src, cs_src]
    return out


def fill_depressions(dem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spill elevations: every pixel raised to the lowest level at which water leaves the window.

    Returns ``(filled, edge)``: ``filled`` (float64, NaN where the DEM is NaN) is, for each pixel,
    the minimum over 8-connected paths to the outside of the maximum elevation along the path (the
    priority-flood result for flow over the 8 neighbours, as :func:`_flow_fractions` routes it: a
    valley floor running diagonally is no pit), computed exactly as the maximum elevation on the
    pixel's path to the
    root of a minimum spanning tree whose edge weights are max(z_u, z_v) and whose root is the
    outside; ``edge`` marks the valid pixels that drain to the outside directly (on the window
    border or next to a NaN pixel, 8-connected: the sea and the window edge are sinks).
    """
    z = np.asarray(dem, dtype=np.float64)
    h, w = z.shape
    n = h * w
    valid = np.isfinite(z)
    filled = np.full(z.shape, np.nan)
    edge = np.zeros(z.shape, dtype=bool)
    if not valid.any():
        return filled, edge
    edge[0, :] = edge[-1, :] = True
    edge[:, 0] = edge[:, -1] = True
    for dr, dc in _OFFSETS:
        edge |= ~_shifted(valid, dr, dc, True)
    edge &= valid
    # shift elevations to >= 1 (scipy's sparse graphs drop zero weights); exact for float32 input
    zs = np.where(valid, z - np.nanmin(z) + 1.0, 0.0)
    # one CSR row per pixel with up to 5 edges (east, south, south-east, south-west, outside),
    # built in row order: with the edges of the pixels before it, each pixel meets all 8
    idx = np.arange(n, dtype=np.int32).reshape(h, w)
    targets = np.full((h, w, 5), -1, dtype=np.int32)
    weights = np.zeros((h, w, 5))
    for k, (src_r, src_c, dst_r, dst_c) in enumerate((
        (np.s_[:], np.s_[:-1], np.s_[:], np.s_[1:]),  # east
        (np.s_[:-1], np.s_[:], np.s_[1:], np.s_[:]),  # south
        (np.s_[:-1], np.s_[:-1], np.s_[1:], np.s_[1:]),  # south-east
        (np.s_[:-1], np.s_[1:], np.s_[1:], np.s_[:-1]),  # south-west
    )):
        ok = valid[src_r, src_c] & valid[dst_r, dst_c]
        targets[src_r, src_c, k] = np.where(ok, idx[dst_r, dst_c], -1)
        weights[src_r, src_c, k] = np.maximum(zs[src_r, src_c], zs[dst_r, dst_c])
    targets[:, :, 4] = np.where(edge, n, -1)
    weights[:, :, 4] = zs
    keep = targets.reshape(n, 5) >= 0
    indptr = np.zeros(n + 2, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1 : n + 1])
    indptr[n + 1] = indptr[n]
    graph = sparse.csr_matrix(
        (weights.reshape(n, 5)[keep], targets.reshape(n, 5)[keep], indptr), shape=(n + 1, n + 1)
    )
    del targets, weights, keep
    tree = minimum_spanning_tree(graph)
    del graph
    _, pred = breadth_first_order(tree, n, directed=False, return_predecessors=True)
    del tree
    # max of zs along the path to the root by pointer doubling (log2(depth) passes)
    anc = np.where(pred >= 0, pred, n).astype(np.int64)
    anc[n] = n
    best = np.append(zs.ravel(), 0.0)
    while True:
        nxt = anc[anc]
        best = np.maximum(best, best[anc])
        if np.array_equal(nxt, anc):
            break
        anc = nxt
    filled[valid] = best[:n].reshape(h, w)[valid] + (np.nanmin(z) - 1.0)
    return filled, edge


def _flow_fractions(
    filled: np.ndarray, edge: np.ndarray, res: float
) -> tuple[np.ndarray, np.ndarray]:
    """MFD fractions ``frac[k, i, j]`` of pixel (i, j) towards neighbour k, and a topological order.

    Pixels with a strictly lower neighbour split their flow over all lower neighbours in proportion
    to ``tan(beta_k) * L_k`` (:data:`CONTOUR_LENGTHS`). Pixels on a flat of the filled surface (no
    lower neighbour, not at an edge) send everything to the next pixel on the shortest path across
    the flat to its outlet. Edge pixels without a lower neighbour drain out of the window. The
    order (flat pixel indices) puts every donor before its receivers (filled elevation descending,
    then distance to the flat's outlet descending).
    """
    h, w = filled.shape
    n = h * w
    valid = np.isfinite(filled)
    high = np.where(valid, filled, np.inf)  # no data is never a lower neighbour
    has_lower = np.zeros((h, w), dtype=bool)
    for dr, dc in _OFFSETS:
        has_lower |= high > _shifted(high, dr, dc, np.inf)
    has_lower &= valid
    flat = valid & ~has_lower & ~edge
    del has_lower
    # flats first (before the 8 fraction planes exist, to bound peak memory)
    flat_idx, flat_dir, flat_dist = _drain_flats(high, flat)
    frac = np.empty((8, h, w))
    for k, (dr, dc) in enumerate(_OFFSETS):
        diagonal = bool(dr and dc)
        coef = CONTOUR_LENGTHS[diagonal] / (res * (math.sqrt(2.0) if diagonal else 1.0))
        with np.errstate(invalid="ignore"):  # inf - inf at no-data pixels: NaN, dropped by fmax
            np.fmax(high - _shifted(high, dr, dc, np.inf), 0.0, out=frac[k])
        frac[k] *= coef
    frac[:, ~valid] = 0.0
    total = frac.sum(axis=0)
    np.divide(frac, total, out=frac, where=total > 0)
    del total
    frac.reshape(8, n)[flat_dir, flat_idx] = 1.0
    order = np.lexsort((-flat_dist, -np.where(valid, filled, -np.inf).ravel()))
    return frac, order


def _drain_flats(high: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Route flat pixels along the shortest path (8-connected, over equal filled elevation) to an
    outlet of their flat: ``(flat pixel indices, direction index k of each, distance of every
    pixel to its outlet in cells (0 off flats))``. Flat pixels without an outlet are left out.
    """
    h, w = high.shape
    n = h * w
    flat_dist = np.zeros(n)
    if not flat.any():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), flat_dist
    idx = np.arange(n).reshape(h, w)
    us, vs, ws = [], [], []
    for dr, dc in [(0, 1), (1, 0), (1, 1), (1, -1)]:
        pair = np.isfinite(high) & (high == _shifted(high, dr, dc, np.inf))
        pair &= flat | _shifted(flat, dr, dc, False)
        us.append(idx[pair])
        vs.append(_shifted(idx, dr, dc, -1)[pair])
        ws.append(np.full(len(us[-1]), math.sqrt(2.0) if dr and dc else 1.0))
    del idx, pair
    u, v, wt = np.concatenate(us), np.concatenate(vs), np.concatenate(ws)
    del us, vs, ws
    # the graph holds only pixels on or next to flats (Dijkstra's heap is per node)
    on_graph = np.zeros(n, dtype=bool)
    on_graph[u] = True
    on_graph[v] = True
    nodes = np.flatnonzero(on_graph)
    del on_graph
    local = np.full(n, -1, dtype=np.int64)
    local[nodes] = np.arange(nodes.size)
    graph = sparse.csr_matrix((wt, (local[u], local[v])), shape=(nodes.size, nodes.size))
    del u, v, wt
    sources = np.flatnonzero(~flat.ravel()[nodes])
    flat_nodes = np.flatnonzero(flat.ravel()[nodes])
    if sources.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), flat_dist
    dist, pred, _ = dijkstra(
        graph, directed=False, indices=sources, return_predecessors=True, min_only=True
    )
    ok = pred[flat_nodes] >= 0
    if (~ok).any():
        logger.debug("%d flat pixels without an outlet drain out of the window", (~ok).sum())
    flat_idx = nodes[flat_nodes[ok]]
    rcv = nodes[pred[flat_nodes[ok]]]
    drow, dcol = rcv // w - flat_idx // w, rcv % w - flat_idx % w
    flat_dir = np.full(flat_idx.size, -1, dtype=np.int64)
    for k, (dr, dc) in enumerate(_OFFSETS):
        flat_dir[(drow == dr) & (dcol == dc)] = k
    flat_dist[flat_idx] = dist[flat_nodes[ok]]
    keep = flat_dir >= 0
    return flat_idx[keep], flat_dir[keep], flat_dist


def specific_catchment_area(dem: np.ndarray, res: float) -> np.ndarray:
    """Upslope area per unit contour width (m, float64; NaN where the DEM is NaN) over the window.

    Area upslope of the window's edge is not seen: callers read a halo wide enough for the use and
    keep the centre (see :mod:`mapper.stack`, hydrology blocks). Accumulation solves
    ``A = cell_area + F^T A`` (F the flow fractions) as one sparse lower-triangular system in
    donor-before-receiver order, which is exact up to floating-point rounding and has no loop over
    pixels in Python.
    """
    z = np.asarray(dem, dtype=np.float64)
    h, w = z.shape
    n = h * w
    valid = np.isfinite(z)
    out = np.full(z.shape, np.nan)
    if not valid.any():
        return out
    filled, edge = fill_depressions(z)
    frac, order = _flow_fractions(filled, edge, res)
    del filled
    rank = np.empty(n, dtype=np.int32)
    rank[order] = np.arange(n, dtype=np.int32)
    # L = I - F^T in rank order: column rank[i] (donor i) holds 1 on the diagonal and -fraction at
    # the row of each receiver; donors come first in the order, so L is lower triangular
    rows, cols, vals = [np.arange(n, dtype=np.int32)], [np.arange(n, dtype=np.int32)], [np.ones(n)]
    for k, (dr, dc) in enumerate(_OFFSETS):
        f = frac[k].ravel()
        donors = np.flatnonzero(f)
        rows.append(rank[donors + (dr * w + dc)])
        cols.append(rank[donors])
        vals.append(-f[donors])
    del frac, f, donors
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    matrix = sparse.coo_matrix((vals, (rows, cols)), shape=(n, n))
    del rows, cols, vals
    matrix = matrix.tocsc()
    cell = np.where(valid.ravel()[order], res * res, 0.0)
    # the diagonal is stored (all ones): unit_diagonal only overwrites it, no rescaling pass
    area_ranked = spsolve_triangular(
        matrix, cell, lower=True, overwrite_A=True, overwrite_b=True, unit_diagonal=True
    )
    area = np.empty(n)
    area[order] = area_ranked
    out[valid] = area.reshape(h, w)[valid] / res
    return out


def wetness_and_stream_power(
    sca: np.ndarray, slope_deg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """TWI = ln(a / tan b) and SPI = ln(a * tan b) (float32), tan b floored at MIN_TAN_SLOPE."""
    tan_b = np.maximum(np.tan(np.deg2rad(np.asarray(slope_deg, dtype=np.float64))), MIN_TAN_SLOPE)
    with np.errstate(invalid="ignore", divide="ignore"):
        twi = np.log(sca / tan_b)
        spi = np.log(sca * tan_b)
    return twi.astype(np.float32), spi.astype(np.float32)
