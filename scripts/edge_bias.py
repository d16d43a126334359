"""Edge bias of a finished region's NSP map: the outermost pixels against those just inside.

    python scripts/edge_bias.py [--region demo] [--project .] [--band 2] [--inner 30]

Prints, from ``maps/nsp_<region>.tif`` (stored percent):

- per side of the map's grid (top, bottom, left, right): the mean of the outermost ``band``
  pixels' rows or columns that hold mapped pixels and of the ``inner`` ones inside them, and
  their difference (the issue's criterion for a square region like the demo: within 2 points);
- by distance from the edge of the mapped area (boundary buffered by ``buffer_m``; any shape):
  the mapped pixels less than ``band`` pixels from it and those ``band`` to ``band + inner``
  pixels in; and, when the region has a synthetic truth (``resources/<region>/truth/nsp.tif``,
  the demo's), the map minus the truth in both, which separates a bias of the model at the edge
  from a landscape that differs there; and per side, the side comparison made on the truth
  itself (what a map equal to the truth would show) and on the map over the same cells, their
  difference being the map's edge bias proper;
- per side, the same comparison made at every interior line (a ``band``-line strip against the
  ``inner`` lines on its inward side, for every strip at least ``band + inner`` lines from both
  edges): the share of interior strips that differ by more than the side's edge does. A landscape
  that varies at the scale of ``band`` pixels makes the comparison noisy wherever it is made; an
  edge bias shows as an edge figure larger than nearly every interior one.

Exits non-zero when a side's difference exceeds ``--tolerance`` points (default 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import rasterio
import shapely

NODATA = 255


def side_bands(values: np.ndarray, band: int, inner: int) -> dict[str, tuple[float, float]]:
    """Per side: (mean of the outermost ``band`` lines holding data, mean of the next ``inner``);
    ``values``: stored percent (nodata 255), or floats with NaN nodata."""
    data = np.where(values == NODATA, np.nan, values.astype(float))
    rows = np.flatnonzero(np.isfinite(data).any(axis=1))
    cols = np.flatnonzero(np.isfinite(data).any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    cuts = {
        "top": (data[r0:r0 + band], data[r0 + band:r0 + band + inner]),
        "bottom": (data[r1 - band:r1], data[r1 - band - inner:r1 - band]),
        "left": (data[:, c0:c0 + band], data[:, c0 + band:c0 + band + inner]),
        "right": (data[:, c1 - band:c1], data[:, c1 - band - inner:c1 - band]),
    }
    return {side: (float(np.nanmean(e)), float(np.nanmean(i))) for side, (e, i) in cuts.items()}


def interior_shares(values: np.ndarray, band: int, inner: int,
                    edges: dict[str, float]) -> dict[str, tuple[float, int]]:
    """Per side: the share of interior strips whose difference (``band`` lines against the
    ``inner`` lines inward of them, in the side's direction) exceeds the side's edge difference
    in magnitude, and the number of strips."""
    data = np.where(values == NODATA, np.nan, values.astype(float))
    with warnings.catch_warnings():  # lines without mapped pixels are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        row_means, col_means = np.nanmean(data, axis=1), np.nanmean(data, axis=0)
    lines = {"top": row_means, "bottom": row_means[::-1], "left": col_means,
             "right": col_means[::-1]}
    out = {}
    for side, means in lines.items():
        means = means[np.isfinite(means)]
        span = band + inner
        diffs = np.array([means[k:k + band].mean() - means[k + band:k + span].mean()
                          for k in range(span, len(means) - 2 * span)])
        out[side] = (float((np.abs(diffs) > abs(edges[side])).mean()), len(diffs))
    return out


def truth_at(path: Path, x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    """Mean truth (percent) over each map cell centred at (x, y) of side ``cell`` metres."""
    with rasterio.open(path) as ds:
        truth, t = ds.read(1).astype(float), ds.transform
    k = max(1, round(cell / t.a))
    r = np.floor((t.f - y) / -t.e).astype(int) - k // 2
    c = np.floor((x - t.c) / t.a).astype(int) - k // 2
    stack = [truth[r + dr, c + dc] for dr in range(k) for dc in range(k)]
    with warnings.catch_warnings():  # a cell all water (NaN truth) is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(stack), axis=0) * 100.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--region", default="demo")
    ap.add_argument("--band", type=int, default=2)
    ap.add_argument("--inner", type=int, default=30)
    ap.add_argument("--tolerance", type=float, default=2.0)
    args = ap.parse_args()
    os.chdir(args.project)  # the config's paths are relative to the project
    from mapper.config import load_config, load_region

    region = load_region(load_config("config/config.yaml"), args.region)
    with rasterio.open(f"maps/nsp_{args.region}.tif") as ds:
        values, t, res = ds.read(1), ds.transform, ds.res[0]
    worst = 0.0
    sides = side_bands(values, args.band, args.inner)
    shares = interior_shares(values, args.band, args.inner,
                             {side: e - i for side, (e, i) in sides.items()})
    for side, (edge, inside) in sides.items():
        worst = max(worst, abs(edge - inside))
        share, n = shares[side]
        print(f"{side:>6}: outer {args.band} px {edge:5.1f} %, next {args.inner} px "
              f"{inside:5.1f} %, difference {edge - inside:+.1f} points; {100 * share:.0f} % of "
              f"{n} interior strips differ more")
    area = region.area()
    rows, cols = np.nonzero(values != NODATA)
    x, y = t.c + (cols + 0.5) * res, t.f - (rows + 0.5) * res
    depth = shapely.distance(area.boundary, shapely.points(x, y)) / res
    edge = depth < args.band
    inner = (depth >= args.band) & (depth < args.band + args.inner)
    v = values[rows, cols].astype(float)
    print(f"by distance from the mapped area's edge: within {args.band} px {v[edge].mean():.1f} % "
          f"({int(edge.sum())} px), {args.band}-{args.band + args.inner} px in "
          f"{v[inner].mean():.1f} % ({int(inner.sum())} px)")
    truth = Path(f"resources/{args.region}/truth/nsp.tif")
    if truth.exists():
        tv = truth_at(truth, x, y, res)
        d = v - tv
        print(f"map - truth: {np.nanmean(d[edge]):+.1f} points within {args.band} px of the edge, "
              f"{np.nanmean(d[inner]):+.1f} points {args.band}-{args.band + args.inner} px in")
        # The same side comparison made on the truth, over the same cells (those with a truth),
        # and on the map restricted to them: a map equal to the truth would show the first.
        both = np.isfinite(tv)
        on_truth = np.full(values.shape, np.nan)
        on_truth[rows[both], cols[both]] = tv[both]
        on_map = np.full(values.shape, np.nan)
        on_map[rows[both], cols[both]] = v[both]
        t_sides = side_bands(on_truth, args.band, args.inner)
        m_sides = side_bands(on_map, args.band, args.inner)
        for side, (e, i) in t_sides.items():
            me, mi = m_sides[side]
            print(f"{side:>6}: the truth's difference {e - i:+.1f} points, the map's "
                  f"{me - mi:+.1f} on the same cells: edge bias (map minus truth) "
                  f"{(me - mi) - (e - i):+.1f}")
    if worst > args.tolerance:
        sys.exit(1)


if __name__ == "__main__":
    main()
