"""The cross-validation results by zone: the report's "Results by zone" sections.

For each zone layer (:mod:`mapper.zones`) the held-out predictions of every split and model are
grouped by the zone of their point and scored *pooled over the folds*: within a split each point
is predicted once, by the model of the fold that held it out, so a zone's figures are those of
the predictions at its points (a zone holds too few points per fold for a mean +- sd over folds).
Predictions of folds without training points are left out, as in the summary table.

Per zone: points (distinct observations), for a binary task the share of present, and per split
and model: n, accuracy, AUC, R1 and macro F1 (binary) or accuracy and macro F1 (multiclass)
(:mod:`mapper.metrics`).
A zone with fewer than :data:`THIN_ZONE` points is marked in the points table, and in a split's
table a zone whose figures rest on fewer than :data:`THIN_ZONE` scored predictions (a split whose
folds left out most of the zone's points, having no training point, scores fewer): its figures
say little.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mapper.experiment import MODELS, SPLITS, in_order
from mapper.metrics import classification_metrics
from mapper.tasks import get_task
from mapper.zones import OUTSIDE, ZoneLayer

THIN_ZONE = 30
"""Zones with fewer points than this are marked in the tables."""
ZONE_METRICS = {"binary": ["accuracy", "auc", "r1", "macro_f1"],
                "multiclass": ["accuracy", "macro_f1"]}
SHOWN_MODELS = ("rf", "miso")
"""Models side by side in the Markdown tables (every model is in the JSON)."""


def zone_results(task: str, preds: pd.DataFrame, layer: ZoneLayer) -> dict[str, Any]:
    """``{name, title, path, synthetic, source, zones: {zone: {points, present?, splits:
    {split: {model: {n, accuracy, ...}}}}}}`` of the pooled held-out predictions ``preds``
    (:func:`mapper.report.collect`'s table: obs_id, x, y, y_true, probabilities, y_pred, model,
    split, fold). Zones in the layer's order, then :data:`OUTSIDE` when points fall there."""
    spec = get_task(task)
    classes = list(spec.classes)
    preds = preds.assign(zone=layer.assign(preds["x"].to_numpy(), preds["y"].to_numpy()))
    points = preds.drop_duplicates("obs_id")
    zones = list(layer.zones) + ([OUTSIDE] if (points["zone"] == OUTSIDE).any() else [])
    out: dict[str, Any] = {"name": layer.name, "title": layer.title, "path": layer.path,
                           "synthetic": layer.synthetic, "source": layer.source,
                           "labels": dict(layer.labels), "zones": {}}
    usable = preds[preds["y_pred"] >= 0]
    splits = in_order(sorted(preds["split"].unique()), tuple(SPLITS))
    models = in_order(sorted(preds["model"].unique()), MODELS)
    for zone in zones:
        here = points[points["zone"] == zone]
        entry: dict[str, Any] = {"points": int(len(here)), "splits": {}}
        if spec.binary:
            entry["present"] = int((here["y_true"] == 1).sum())
        for split in splits:
            for model in models:
                g = usable[(usable["zone"] == zone) & (usable["split"] == split)
                           & (usable["model"] == model)]
                cell: dict[str, Any] = {"n": int(len(g))}
                if len(g):
                    score = g[spec.probability_columns[1]].to_numpy() if spec.binary else None
                    m = classification_metrics(g["y_true"].to_numpy(), g["y_pred"].to_numpy(),
                                               classes, score)
                    cell.update({k: m[k] for k in ZONE_METRICS[spec.kind]})
                else:
                    cell.update({k: float("nan") for k in ZONE_METRICS[spec.kind]})
                entry["splits"].setdefault(split, {})[model] = cell
        out["zones"][zone] = entry
    return out


def _cell(value: float) -> str:
    return f"{value:.3f}" if value is not None and np.isfinite(value) else "–"


def zone_markdown(task: str, results: dict[str, Any], split_names: dict[str, str],
                  model_names: dict[str, str], labels: dict[str, str]) -> list[str]:
    """The Markdown section of one layer's :func:`zone_results`."""
    spec = get_task(task)
    metrics = ZONE_METRICS[spec.kind]
    title = results["title"]
    lines = ["", f"## Results by zone: {title}", ""]
    if results["synthetic"]:
        lines += ["**SYNTHETIC zones**: they describe no real place.", ""]
    lines += [
        f"Each test point is placed by its coordinates (EPSG:3338) in a polygon of "
        f"`{results['path']}` (from `{results['source']}`); a point in none is counted as "
        f"*{OUTSIDE}*. Figures are pooled over the folds: within a split every point is "
        "predicted once, by the model of the fold that held it out (folds without training "
        f"points left out). Zones with fewer than {THIN_ZONE} points (in a split's table: "
        f"scored predictions, n) are marked *; their figures say little.", "",
    ]
    zones = results["zones"]
    named = {z: f"{z} ({results['labels'][z]})" if z in results.get("labels", {}) else z
             for z in zones}
    head = "| zone | points | share |" + (" present |" if spec.binary else "")
    lines += [head, "|" + "---|" * (4 if spec.binary else 3)]
    total = sum(z["points"] for z in zones.values())
    for zone, z in zones.items():
        row = (f"| {named[zone]}{' *' if z['points'] < THIN_ZONE else ''} | {z['points']} | "
               f"{z['points'] / total:.1%} |" if total else f"| {zone} | 0 | – |")
        if spec.binary:
            row += (f" {z['present']} ({z['present'] / z['points']:.0%}) |" if z["points"]
                    else " 0 |")
        lines.append(row)
    shown = [m for m in SHOWN_MODELS
             if any(m in s for z in zones.values() for s in z["splits"].values())]
    splits = list(next(iter(zones.values()))["splits"]) if zones else []
    for split in splits:
        cols = [f"{model_names.get(m, m)} {labels.get(k, k)}" for k in metrics for m in shown]
        lines += ["", f"{split_names.get(split, split)}:", "",
                  "| zone | n | " + " | ".join(cols) + " |",
                  "|" + "---|" * (2 + len(cols))]
        for zone, z in zones.items():
            cells = z["splits"][split]
            n = min((cells[m]["n"] for m in shown if m in cells), default=0)
            values = [_cell(cells[m][k]) if m in cells else "–" for k in metrics for m in shown]
            lines.append(f"| {named[zone]}{' *' if n < THIN_ZONE else ''} | {n} | "
                         + " | ".join(values) + " |")
    return lines
