"""The evaluation report's figures (:mod:`mapper.report`): the headline metrics per split and
model, the pooled confusion matrices and the reliability panels, each a PNG written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapper.experiment import MODEL_NAMES, MODELS, SPLIT_NAMES, SPLITS, in_order
from mapper.files import atomic_path
from mapper.label_reliability import what_is_binned
from mapper.metrics import confusion
from mapper.tasks import get_task
from mapper.truth import plot_reliability

HEADLINE = {"binary": ["accuracy", "auc", "r1", "macro_f1"],
            "multiclass": ["accuracy", "macro_f1", "weighted_f1"]}
"""The metrics of the splits figure, per kind of task."""


def has_reliability(truth: dict[str, Any] | None) -> bool:
    """Whether the truth agreement (:func:`mapper.truth.truth_agreement`) holds reliability bins
    (a binary task's)."""
    return truth is not None and any(
        "reliability" in t for models in truth["splits"].values() for t in models.values())


def plot_splits(task: str, summary: dict[str, Any], labels: dict[str, str], path: Path,
                synthetic: bool) -> None:
    """Bars of the headline metrics (HEADLINE, titled by ``labels``) per split and model, mean
    ± sd over the folds of ``summary`` (:func:`mapper.report.summarise`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = HEADLINE[get_task(task).kind]
    splits = list(summary)
    models = in_order(sorted({m for s in summary.values() for m in s}), MODELS)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    width = 0.8 / max(len(models), 1)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, model in enumerate(models):
            means = [summary[s].get(model, {}).get(metric, {}).get("mean", np.nan) for s in splits]
            sds = [summary[s].get(model, {}).get(metric, {}).get("sd", np.nan) for s in splits]
            pos = np.arange(len(splits)) + (i - (len(models) - 1) / 2) * width
            ax.bar(pos, means, width, yerr=np.nan_to_num(sds), capsize=2,
                   label=MODEL_NAMES.get(model, model))
        ax.set_xticks(np.arange(len(splits)), [SPLIT_NAMES.get(s, s) for s in splits])
        ax.set_ylim(0, 1)
        ax.set_title(labels[metric])
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{task}: mean ± sd over folds" + (" (SYNTHETIC region)" if synthetic else ""),
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_confusion(task: str, preds: pd.DataFrame, path: Path, synthetic: bool) -> None:
    """Confusion matrices of the held-out predictions pooled over the folds, per split and
    model (rows the true class, coloured normalised per row, with the counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(get_task(task).classes)
    k = len(classes)
    splits = in_order(sorted(preds["split"].unique()), tuple(SPLITS))
    models = in_order(sorted(preds["model"].unique()), MODELS)
    size = 2.4 if k == 2 else 3.6
    fig, axes = plt.subplots(len(splits), len(models), squeeze=False,
                             figsize=(size * len(models) + 0.5, size * len(splits) + 0.5))
    for i, split in enumerate(splits):
        for j, model in enumerate(models):
            ax = axes[i][j]
            g = preds[(preds["split"] == split) & (preds["model"] == model)]
            g = g[g["y_pred"] >= 0]
            cm = confusion(g["y_true"].to_numpy(), g["y_pred"].to_numpy(), k).astype(float)
            rows = cm.sum(axis=1, keepdims=True)
            norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
            ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
            for r in range(k):
                for c in range(k):
                    ax.text(c, r, f"{int(cm[r, c])}", ha="center", va="center", fontsize=6,
                            color="white" if norm[r, c] > 0.6 else "black")
            short = [c[:4] for c in classes]
            ax.set_xticks(range(k), short, fontsize=6, rotation=90 if k > 2 else 0)
            ax.set_yticks(range(k), short, fontsize=6)
            ax.set_title(f"{SPLIT_NAMES.get(split, split)}, {MODEL_NAMES.get(model, model)}",
                         fontsize=7)
            if j == 0:
                ax.set_ylabel("true", fontsize=7)
            if i == len(splits) - 1:
                ax.set_xlabel("predicted", fontsize=7)
    fig.suptitle(f"{task}: confusion pooled over folds (row-normalised colour, counts)"
                 + (" (SYNTHETIC)" if synthetic else ""), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_reliability_panels(task: str, label_rel: dict[str, Any], truth: dict[str, Any] | None,
                            path: Path, synthetic: bool) -> None:
    """Per split, each model against the observed labels and, where there is a truth
    probability, against it too (dashed lines' labels say "vs truth")."""
    panels: dict[str, dict[str, Any]] = {}
    for split, models in label_rel.items():
        curves = panels.setdefault(SPLIT_NAMES.get(split, split), {})
        for m, r in models.items():
            curves[MODEL_NAMES.get(m, m)] = r["reliability"]
    if has_reliability(truth):
        for split, models in truth["splits"].items():
            curves = panels.setdefault(SPLIT_NAMES.get(split, split), {})
            for m, t in models.items():
                curves[f"{MODEL_NAMES.get(m, m)} vs truth"] = t["reliability"]
    x, y = what_is_binned(task)
    plot_reliability(panels, path, f"{task}: held-out predictions pooled over folds"
                     + (" (SYNTHETIC region)" if synthetic else ""), xlabel=x,
                     ylabel=y + (" (or mean truth)" if has_reliability(truth) else ""))
