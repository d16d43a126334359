"""Wall-to-wall agreement of a synthetic region's maps with its hidden truth maps.

    python scripts/map_vs_truth.py [--region demo] [--maps maps] [--json out.json]
                                   [--figure nsp_reliability.png]

Only synthetic regions have truth (``resources/<region>/truth/{nsp,soilorder}.tif``, on the
10 m lattice): the demo's labels were drawn from it, so it says how well the maps recover what
the observations only sample. Printed per map, over every pixel valid in both:

- NSP: AUC of the mapped probability against ``truth > 0.5``, accuracy of ``map > 0.5`` against
  it (with the majority-class rate beside it as the chance level), Pearson correlation of map
  and truth probabilities, and the mean absolute difference; on a last line of its own (the
  lines above keep their format and order, for figures quoted before it existed), the expected
  calibration error (ECE, 10 equal-width bins of the map's probability, pixelwise against the
  truth probability; :func:`mapper.metrics.reliability`), and with ``--figure`` the reliability
  figure as a PNG;
- soil order: accuracy, macro and weighted F1, per-class F1 and area shares (map vs truth),
  with the majority class's share as the chance level.

Maps are read on the truth's grid (both are on the lattice: the overlap window is exact). A
coarser map (a region with ``prediction.out_res`` 20 m) is compared with the truth aggregated to
its cells: the mean truth probability (NSP), the most frequent class (soil order; GDAL's mode,
which breaks a tie in a fixed order); truth cells without data are left out; a line says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import from_bounds
from sklearn.metrics import f1_score, roc_auc_score

from mapper.bands import CLASS_NODATA, SOIL_ORDERS
from mapper.files import atomic_path
from mapper.metrics import correlation, reliability
from mapper.report import strict_json
from mapper.truth import RELIABILITY_BINS, plot_reliability


def _overlap(map_path: Path, truth_path: Path, classes: bool
             ) -> tuple[np.ndarray, np.ndarray, float, int]:
    """(map band 1 as stored, truth band 1 on the map's cells, map scale, cell factor) over the
    maps' extent. A coarser map (``prediction.out_res`` 20 m: factor 2) is compared with the
    truth aggregated to its cells as the uncertainty report aggregates it
    (:func:`mapper.uncertainty_report.read_on_grid`: the mean of the valid values, or for
    ``classes`` the most frequent class, the lowest on a tie)."""
    from mapper.errors import InputError
    from mapper.uncertainty_report import read_on_grid

    with rasterio.open(map_path) as m, rasterio.open(truth_path) as t:
        factor = m.res[0] / t.res[0]
        win = from_bounds(*m.bounds, transform=t.transform)
        aligned = (m.crs == t.crs and m.res[0] == m.res[1] and t.res[0] == t.res[1]
                   and round(factor) >= 1 and abs(factor - round(factor)) < 1e-9
                   and all(abs(v - round(v)) < 1e-6 for v in (win.col_off, win.row_off)))
        if not aligned:
            raise SystemExit(f"error: {map_path}: not on the grid of {truth_path} (nor on whole "
                             f"multiples of its {t.res[0]:g} m cells); give the map of this "
                             "region's lattice")
        try:
            truth = read_on_grid(truth_path, m, classes=classes)
        except InputError as exc:
            raise SystemExit(f"error: {exc}") from None
        mapped = m.read(1)
        scale = m.scales[0]
    return mapped, truth, scale, int(round(factor))


def nsp_figures(map_path: Path, truth_path: Path) -> dict:
    mapped, truth, scale, factor = _overlap(map_path, truth_path, classes=False)
    ok = (mapped != 255) & np.isfinite(truth)
    p = mapped[ok].astype(np.float64) * scale
    t = truth[ok]
    present = t > 0.5
    curve = reliability(p, t, RELIABILITY_BINS)
    return {
        "pixels": int(ok.sum()),
        "pixels_total": int(mapped.size),
        "truth_cells_per_pixel": factor * factor,
        "auc_vs_truth": float(roc_auc_score(present, p)),
        "accuracy_at_0.5": float(((p > 0.5) == present).mean()),
        "chance_accuracy": float(max(present.mean(), 1 - present.mean())),
        "truth_present_share": float(present.mean()),
        "map_present_share": float((p > 0.5).mean()),
        "corr_vs_truth": correlation(p, t),
        "mean_abs_diff": float(np.abs(p - t).mean()),
        "ece": curve["ece"],
        "reliability": curve,
    }


def soilorder_figures(map_path: Path, truth_path: Path) -> dict:
    mapped, truth, _, factor = _overlap(map_path, truth_path, classes=True)
    ok = (mapped != CLASS_NODATA) & np.isfinite(truth)
    y_pred = mapped[ok].astype(np.int64)
    y_true = truth[ok].astype(np.int64)
    labels = list(range(len(SOIL_ORDERS)))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    truth_share = np.bincount(y_true, minlength=len(labels)) / len(y_true)
    map_share = np.bincount(y_pred, minlength=len(labels)) / len(y_pred)
    return {
        "pixels": int(ok.sum()),
        "pixels_total": int(mapped.size),
        "truth_cells_per_pixel": factor * factor,
        "accuracy": float((y_pred == y_true).mean()),
        "chance_accuracy": float(truth_share.max()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro",
                                   zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted",
                                      zero_division=0)),
        "per_class": {name: {"f1": float(per_class[k]), "truth_share": float(truth_share[k]),
                             "map_share": float(map_share[k])}
                      for k, name in enumerate(SOIL_ORDERS)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--region", default="demo")
    ap.add_argument("--maps", type=Path, default=Path("maps"))
    ap.add_argument("--truth", type=Path, help="default: resources/<region>/truth")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--figure", type=Path, help="also write the NSP reliability figure (PNG) here")
    args = ap.parse_args()
    truth = args.truth or Path("resources") / args.region / "truth"
    paths = {task: (args.maps / f"{task}_{args.region}.tif", truth / f"{task}.tif")
             for task in ("nsp", "soilorder")}
    for mapped, true in paths.values():
        if not mapped.is_file():
            sys.exit(f"error: {mapped}: no such map; make it first (make demo for the demo region)")
        if not true.is_file():
            sys.exit(f"error: {true}: no such truth raster; only a synthetic region has one "
                     f"(python -m mapper demo writes the demo's; --truth DIR)")
    nsp = nsp_figures(*paths["nsp"])
    soil = soilorder_figures(*paths["soilorder"])
    print(f"NSP map vs truth ({nsp['pixels']:,} of {nsp['pixels_total']:,} pixels valid): "
          f"AUC {nsp['auc_vs_truth']:.3f}, accuracy at 0.5 {nsp['accuracy_at_0.5']:.3f} "
          f"(chance {nsp['chance_accuracy']:.3f}), corr {nsp['corr_vs_truth']:.3f}, "
          f"mean |map - truth| {nsp['mean_abs_diff']:.3f}; "
          f"present share map {nsp['map_present_share']:.3f} vs truth "
          f"{nsp['truth_present_share']:.3f}")
    print(f"soil order map vs truth ({soil['pixels']:,} pixels): accuracy {soil['accuracy']:.3f} "
          f"(chance {soil['chance_accuracy']:.3f}), macro F1 {soil['macro_f1']:.3f}, "
          f"weighted F1 {soil['weighted_f1']:.3f}")
    print(f"  {'order':<12} {'F1':>6} {'truth %':>8} {'map %':>7}")
    for name, f in soil["per_class"].items():
        print(f"  {name:<12} {f['f1']:6.3f} {100 * f['truth_share']:8.1f} "
              f"{100 * f['map_share']:7.1f}")
    if nsp["truth_cells_per_pixel"] > 1 or soil["truth_cells_per_pixel"] > 1:
        print(f"(maps coarser than the truth: each map pixel against the mean truth probability "
              f"of its {nsp['truth_cells_per_pixel']} truth cells, and their most frequent class)")
    print(f"NSP map calibration vs truth probability: ECE {nsp['ece']:.3f} "
          f"({RELIABILITY_BINS} equal-width bins)")
    if args.figure:
        plot_reliability({f"NSP map, {nsp['pixels']:,} pixels": {"map": nsp["reliability"]}},
                         args.figure, f"{args.region}: NSP map vs hidden truth probability")
    if args.json:
        figures = strict_json({"nsp": nsp, "soilorder": soil})  # empty bins: null, not NaN
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
