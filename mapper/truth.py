"""A synthetic region's hidden truth against the evaluation's held-out predictions.

Truth (synthetic regions only): ``resources/<region>/truth/<task>.tif``, a probability for a
binary task (``nsp.tif``) or a class index for a multiclass one (``soilorder.tif``), on the 10 m
lattice, read at each test point's pixel. Binary: AUC of the predicted probability against
``truth > 0.5`` and the Pearson correlation of predicted and true probability (chance: 0.5 and 0),
and the reliability of the predicted probability against the true one in ``RELIABILITY_BINS``
equal-width bins with its expected calibration error (:func:`mapper.metrics.reliability`: a
calibrated model's mean prediction in a bin equals the mean truth there); multiclass: accuracy
against the true class (chance: the share of the most common true class among the test points).
The observed labels' agreement with the truth is given too: labels are noisy draws from it, so
it bounds what a model can reach.

Used by :mod:`mapper.report` and ``scripts/map_vs_truth.py`` (the maps against the truth,
pixelwise, with the same bins and figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.crs import CRS

from mapper.bands import CLASS_NODATA
from mapper.config import Region
from mapper.errors import InputError
from mapper.files import atomic_path
from mapper.metrics import auc, correlation, reliability
from mapper.raster import open_raster, reading
from mapper.tasks import Task, get_task

RELIABILITY_BINS = 10
"""Equal-width probability bins of the reliability curve and its ECE."""


def truth_path(region: Region, task: str) -> Path:
    """A synthetic region's truth raster of ``task``, relative to the working directory (the
    workflow's), where the demo writes it."""
    return Path("resources") / region.name / "truth" / f"{task}.tif"


def truth_at(path: Path, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Truth raster values at EPSG:3338 points (NaN outside it or on its nodata); a raster in
    another CRS is one InputError (its pixels would hold no point: an empty comparison)."""
    with open_raster(path) as ds:
        if ds.crs is None or ds.crs != CRS.from_epsg(3338):
            raise InputError(f"{path}: a truth raster in {ds.crs or 'no CRS'}, not EPSG:3338 (the "
                             "lattice's); give the truth the demo's sources wrote "
                             "(resources/<region>/truth/<task>.tif)")
        t = ds.transform  # north-up: pixel (row, col) holds x in [c + col a, c + (col+1) a)
        cols = np.floor((np.asarray(x) - t.c) / t.a).astype(np.int64)
        rows = np.floor((np.asarray(y) - t.f) / t.e).astype(np.int64)
        with reading(path, "make the demo's sources again (rule demo_sources)"):
            data = ds.read(1)
        nodata = ds.nodata
    ok = (rows >= 0) & (rows < data.shape[0]) & (cols >= 0) & (cols < data.shape[1])
    out = np.full(len(x), np.nan)
    out[ok] = data[rows[ok], cols[ok]]
    if nodata is not None and np.isfinite(nodata):
        out[out == nodata] = np.nan
    return out


def check_truth_kind(path: str | Path, task: Task, hint: str) -> None:
    """Refuse a truth raster of the other kind than ``task`` (a class index for a binary task, a
    probability for a multiclass one): read anyway, it would give figures of no meaning.
    ``hint`` ends the message (what was given with it, the fix)."""
    with open_raster(path) as ds:
        floating = np.issubdtype(np.dtype(ds.dtypes[0]), np.floating)
    if floating != task.binary:
        kind = "a probability" if floating else "a class index"
        raise InputError(f"{path}: {kind} raster, not the truth of {task.name}{hint}")


def truth_agreement(task: str, preds: pd.DataFrame, path: Path) -> dict[str, Any]:
    """Agreement of pooled held-out predictions with the truth raster, per split and model."""
    out: dict[str, Any] = {"path": str(path), "splits": {}}
    spec = get_task(task)
    check_truth_kind(path, spec, f"; give its own truth (resources/<region>/truth/{task}.tif)")
    values = truth_at(path, preds["x"].to_numpy(), preds["y"].to_numpy())
    if spec.multiclass:
        values[values == CLASS_NODATA] = np.nan
    preds = preds.assign(truth=values)
    for (split, model), g in preds.groupby(["split", "model"], sort=False):
        g = g[g["truth"].notna() & (g["y_pred"] >= 0)]
        if not len(g):
            continue
        if spec.binary:
            t = g["truth"].to_numpy()
            p = g[spec.probability_columns[1]].to_numpy()
            curve = reliability(p, t, RELIABILITY_BINS)
            entry = {
                "n": len(g),
                "auc_vs_truth": auc(t > 0.5, p),
                "corr_vs_truth": correlation(p, t),
                "labels_auc_vs_truth": auc(t > 0.5, g["y_true"].to_numpy()),
                "labels_corr_vs_truth": correlation(g["y_true"].to_numpy(), t),
                "chance_auc": 0.5,
                "chance_corr": 0.0,
                "truth_present_share": float((t > 0.5).mean()),
                "mean_pred": float(p.mean()),
                "mean_truth": float(t.mean()),
                "ece": curve["ece"],
                "reliability": curve,
            }
        else:
            t = g["truth"].to_numpy().astype(np.int64)
            entry = {
                "n": len(g),
                "accuracy_vs_truth": float((g["y_pred"].to_numpy() == t).mean()),
                "labels_accuracy_vs_truth": float((g["y_true"].to_numpy() == t).mean()),
                "chance_accuracy": float(np.bincount(t).max() / len(t)),
            }
        out["splits"].setdefault(split, {})[model] = entry
    return out


def plot_reliability(panels: dict[str, dict[str, dict[str, Any]]], path: Path, title: str,
                     xlabel: str = "predicted probability",
                     ylabel: str = "mean truth probability") -> None:
    """Reliability figure: one column per panel (``{panel title: {line label: curve}}``, curves
    from :func:`mapper.metrics.reliability`); above, mean predicted (x) against mean truth or
    observed outcome (y) per non-empty bin with the diagonal of perfect calibration (a line
    labelled "... vs truth" dashed); below, the share of points per bin (log scale). Labels carry
    each curve's ECE. Used by the report and ``scripts/map_vs_truth.py``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(panels), 1)
    fig, axes = plt.subplots(
        2,
        n,
        squeeze=False,
        figsize=(3.4 * n + 0.4, 5.4),
        gridspec_kw={"height_ratios": [3, 1]},
        sharex="col",
    )
    for j, (name, curves) in enumerate(panels.items()):
        top, bottom = axes[0][j], axes[1][j]
        top.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        colours: dict[str, str] = {}  # a model's lines against labels and truth share one
        for label, r in curves.items():
            model = label.removesuffix(" vs truth")
            against_truth = model != label
            colour = colours.setdefault(model, f"C{len(colours)}")
            count = np.asarray(r["count"], dtype=np.float64)
            used = count > 0
            pred = np.asarray(r["mean_pred"], dtype=np.float64)[used]
            true = np.asarray(r["mean_truth"], dtype=np.float64)[used]
            top.plot(pred, true, marker="o", ms=3, lw=1, color=colour,
                     ls="--" if against_truth else "-", label=f"{label} (ECE {r['ece']:.3f})")
            if not against_truth or model not in curves:  # one histogram per model
                edges = np.asarray(r["edges"])
                bottom.stairs(count / max(count.sum(), 1), edges, color=colour)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_aspect("equal")
        top.set_title(name, fontsize=9)
        top.legend(fontsize=6, loc="upper left")
        bottom.set_yscale("log")
        bottom.set_xlabel(xlabel, fontsize=8)
        if j == 0:
            top.set_ylabel(ylabel, fontsize=8)
            bottom.set_ylabel("share of points", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
