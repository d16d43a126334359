"""Reliability of the held-out predictions against the observed labels, for every region.

The evaluation's pooled held-out predictions (all folds of a split and model), in
:data:`mapper.truth.RELIABILITY_BINS` equal-width bins (:func:`mapper.metrics.reliability`):

- binary task (NSP): the predicted probability of present against the observed outcome (1
  present, 0 absent): a calibrated model's mean prediction in a bin equals the share of present
  points there;
- multiclass task (soil order): the top-label confidence (the probability of the predicted
  class) against whether the prediction is right: a calibrated model's mean confidence in a bin
  equals its accuracy there (Guo et al. 2017, "On calibration of modern neural networks").

ECE (expected calibration error) = sum over bins of n_b / N x |mean predicted - observed|. With
a few hundred test points a bin holds tens of them, so a bin's observed share carries a binomial
error of several points: the table gives the counts to read it by. A synthetic region's report
adds the reliability against the hidden truth probability (:mod:`mapper.truth`), free of that
noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapper.experiment import MODELS, SPLITS, in_order
from mapper.metrics import reliability
from mapper.tasks import get_task
from mapper.truth import RELIABILITY_BINS


def label_reliability(task: str, preds: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """Per split and model (in the report's order, :func:`mapper.experiment.in_order`): the
    reliability curve of the pooled held-out predictions against the observed labels (module
    doc), with ``n``, ``ece``, ``mean_pred`` and ``mean_observed``. The predictions are taken
    in fold and obs_id order, so the figures do not depend on the order of the fold files."""
    spec = get_task(task)
    columns = spec.probability_columns
    out: dict[str, dict[str, dict[str, Any]]] = {}
    groups = dict(iter(preds.groupby(["split", "model"], sort=False)))
    splits = in_order(sorted({s for s, _ in groups}), tuple(SPLITS))
    models = in_order(sorted({m for _, m in groups}), MODELS)
    for split, model in ((s, m) for s in splits for m in models if (s, m) in groups):
        g = groups[(split, model)].sort_values(["fold", "obs_id"], kind="stable")
        g = g[g["y_pred"] >= 0]
        if not len(g):
            continue
        if spec.binary:
            p = g[columns[1]].to_numpy(dtype=np.float64)
            observed = (g["y_true"].to_numpy() == 1).astype(np.float64)
        else:
            p = g[columns].to_numpy(dtype=np.float64).max(axis=1)
            observed = (g["y_pred"].to_numpy() == g["y_true"].to_numpy()).astype(np.float64)
        curve = reliability(p, observed, RELIABILITY_BINS)
        out.setdefault(split, {})[model] = {
            "n": curve["n"], "ece": curve["ece"], "mean_pred": float(p.mean()),
            "mean_observed": float(observed.mean()), "reliability": curve,
        }
    return out


def what_is_binned(task: str) -> tuple[str, str]:
    """(x, y) of the label reliability of ``task``: what is predicted and what is observed."""
    spec = get_task(task)
    if spec.binary:
        return (f"predicted probability of {spec.subject}",
                f"observed share of {spec.subject}")
    return "confidence (probability of the predicted class)", "accuracy"


def label_reliability_markdown(task: str, rel: dict[str, dict[str, dict[str, Any]]],
                               figure: Path, names: tuple[dict, dict]) -> list[str]:
    """The report's section: ECE per split and model, then the bins of each split; ``names``:
    display names of splits and models."""
    split_names, model_names = names
    x, y = what_is_binned(task)
    lines = [
        "", "## Reliability against the observed labels", "",
        f"The pooled held-out points of each split and model, their {x} in {RELIABILITY_BINS} "
        f"equal-width bins against the {y} there: a calibrated model's mean in a bin equals the "
        "observed one. ECE (expected calibration error) = sum over bins of n_b / N × |mean "
        "predicted − observed| (0: calibrated); a bin of n points carries a sampling error of "
        f"about 0.5/√n. Figure: `{figure.name}`.", "",
        "| split | model | points | ECE | mean predicted | observed |",
        "|---|---|---|---|---|---|",
    ]
    for split, models in rel.items():
        for model, r in models.items():
            lines.append(f"| {split_names.get(split, split)} | {model_names.get(model, model)} | "
                         f"{r['n']} | {r['ece']:.3f} | {r['mean_pred']:.3f} | "
                         f"{r['mean_observed']:.3f} |")
    for split, models in rel.items():
        lines += bin_table(f"{split_names.get(split, split)}: mean predicted / observed (points) "
                           "per bin", {model_names.get(m, m): r["reliability"]
                                       for m, r in models.items()})
    return lines


def bin_table(caption: str, curves: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines: ``caption``, then a table of the bins (rows) of each curve (columns,
    :func:`mapper.metrics.reliability`): mean predicted / mean observed or truth (points)."""
    lines = ["", caption, "", "| bin | " + " | ".join(curves) + " |",
             "|" + "---|" * (1 + len(curves))]
    edges = next(iter(curves.values()))["edges"]
    for b in range(len(edges) - 1):
        cells = [f"{c['mean_pred'][b]:.3f} / {c['mean_truth'][b]:.3f} ({c['count'][b]})"
                 if c["count"][b] else "– (0)" for c in curves.values()]
        close = "]" if b == len(edges) - 2 else ")"
        lines.append(f"| [{edges[b]:.1f}, {edges[b + 1]:.1f}{close} | " + " | ".join(cells)
                     + " |")
    return lines
