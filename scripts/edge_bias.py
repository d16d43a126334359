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
  difference being the map's edge bias proper, and the share of interior strips at which the
  truth itself differs by more than ``--tolerance`` (how often the landscape alone fails the
  criterion);
- per side, the same comparison made at every interior line (a ``band``-line strip against the
  ``inner`` lines on its inward side, for every strip at least ``band + inner`` lines from both
  edges): the share of interior strips that differ by more than the side's edge does. A landscape
  that varies at the scale of ``band`` pixels makes the comparison noisy wherever it is made; an
  edge bias shows as an edge figure larger than nearly every interior one.

With ``--across`` (a synthetic region whose workflow has run: its stacks and NSP model are read
from ``results/<region>/``), the context tiles along each side are predicted as if the region had
no boundary, and the map minus the truth is printed per side in the ``band`` lines on either side
of the edge and the ``inner`` lines beyond those: a bias made by the edge shows as a step there,
a model that errs in a landscape straddling the edge as the same error on both sides. The map's
out cells must be the lattice's pixels (``prediction.out_res`` 10 m). A region without a truth
is one error line.

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
    ap.add_argument("--across", action="store_true",
                    help="predict the context tiles along each side without the boundary and "
                         "compare map minus truth on either side of the edge")
    args = ap.parse_args()
    os.chdir(args.project)  # the config's paths are relative to the project
    from mapper.config import load_config, load_region
    from mapper.errors import MapperError

    try:
        region = load_region(load_config("config/config.yaml"), args.region)
    except MapperError as err:
        sys.exit(f"error: {err} (--project: the project's folder, default the current one)")
    map_path = Path(f"maps/nsp_{args.region}.tif")
    if not map_path.is_file():
        sys.exit(f"error: {args.project / map_path}: no such map; make it first "
                 f"(snakemake --cores 2 {map_path}, or make demo for the demo region)")
    truth = Path(f"resources/{args.region}/truth/nsp.tif")
    if args.across and not truth.is_file():
        sys.exit(f"error: {args.project / truth}: no such truth raster; --across needs a "
                 "synthetic region's truth (only a synthetic region has one: make demo for the "
                 "demo's)")
    with rasterio.open(map_path) as ds:
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
        # How often the truth itself, at interior lines, differs by more than the tolerance:
        # how often a map equal to the truth would fail the side criterion by its landscape alone.
        t_shares = interior_shares(on_truth, args.band, args.inner,
                                   dict.fromkeys(t_sides, args.tolerance))
        for side, (e, i) in t_sides.items():
            me, mi = m_sides[side]
            share, n = t_shares[side]
            print(f"{side:>6}: the truth's difference {e - i:+.1f} points, the map's "
                  f"{me - mi:+.1f} on the same cells: edge bias (map minus truth) "
                  f"{(me - mi) - (e - i):+.1f}; the truth differs by more than "
                  f"{args.tolerance:g} points at {100 * share:.0f} % of {n} interior strips")
        if args.across:
            across(region, values, t, truth, args.band, args.inner)
    if worst > args.tolerance:
        sys.exit(1)


def across(region, values: np.ndarray, t, truth: Path, band: int, inner: int) -> None:
    """Per side: map minus truth in the ``band`` and ``inner`` lines on either side of the map's
    edge, the lines beyond it predicted by the region's NSP model without the boundary."""
    import torch

    from mapper.models.checkpoint import load_checkpoint
    from mapper.normalise import Normaliser
    from mapper.predictor import TilePredictor
    from mapper.windows import StackReader, stacks_by_tile

    lat, res, reach = region.lattice, t.a, band + inner
    if abs(res - lat.res) > 1e-9:
        sys.exit(f"--across needs a map at the lattice's {lat.res:g} m, not {res:g} m")
    h, w = values.shape
    ext = np.full((h + 2 * reach, w + 2 * reach), np.nan)
    ext[reach:reach + h, reach:reach + w] = np.where(values == NODATA, np.nan, values)
    left, top = t.c - reach * res, t.f + reach * res
    strips = [(0, reach, reach, reach + w), (reach + h, h + 2 * reach, reach, reach + w),
              (reach, reach + h, 0, reach), (reach, reach + h, reach + w, w + 2 * reach)]
    model, meta = load_checkpoint(f"results/{region.name}/models/nsp.pt", expect_task="nsp",
                                  expect_size=region.settings["model"]["size"])
    prediction = region.settings["prediction"]
    predictor = TilePredictor(model, Normaliser.from_dict(meta.normalisation), lat,
                              region.crop_lattice(), "nsp", area=None, progress=False,
                              precision=prediction["precision"],
                              min_weight=prediction["min_weight"])
    stacks = stacks_by_tile(sorted(Path(f"results/{region.name}/stack").glob("*.tif")))
    torch.set_num_threads(os.cpu_count() or 1)
    for tile in sorted(set(region.stacked_tiles()) - set(region.tiles())):
        b = lat.tile_bounds(tile)
        r0, c0 = round((top - b[3]) / res), round((b[0] - left) / res)
        n = lat.tile_px
        if not any(r0 < s[1] and r0 + n > s[0] and c0 < s[3] and c0 + n > s[2] for s in strips):
            continue  # a corner tile, or one beyond the lines compared
        with StackReader(stacks, lat) as reader:
            data, _ = predictor.predict(reader, tile)
        for rr0, rr1, cc0, cc1 in strips:
            a0, a1, b0, b1 = max(rr0, r0), min(rr1, r0 + n), max(cc0, c0), min(cc1, c0 + n)
            if a0 < a1 and b0 < b1:
                ext[a0:a1, b0:b1] = data[0, a0 - r0:a1 - r0, b0 - c0:b1 - c0] * 100.0
    rows, cols = np.mgrid[0:ext.shape[0], 0:ext.shape[1]]
    d = ext - truth_at(truth, left + (cols + 0.5) * res, top - (rows + 0.5) * res, res)
    with warnings.catch_warnings():  # lines without a truth are NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        lines = {"top": np.nanmean(d[:, reach:reach + w], axis=1),
                 "bottom": np.nanmean(d[::-1, reach:reach + w], axis=1),
                 "left": np.nanmean(d[reach:reach + h], axis=0),
                 "right": np.nanmean(d[reach:reach + h, ::-1], axis=0)}
    print("map minus truth across the edge (points; outside: predicted without the boundary):")
    for side, m in lines.items():
        out_far, out_near = m[:inner].mean(), m[inner:reach].mean()
        in_near, in_far = m[reach:reach + band].mean(), m[reach + band:2 * reach].mean()
        print(f"{side:>6}: outside {inner} px {out_far:+.1f}, {band} px {out_near:+.1f} | edge | "
              f"inside {band} px {in_near:+.1f}, {inner} px {in_far:+.1f}")


if __name__ == "__main__":
    main()
