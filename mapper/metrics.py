"""Classification metrics of the evaluation, with scikit-learn's conventions.

Classes are integer indices 0..K-1 into a list of names. Per class: precision, recall, F1 and
support; a class that is neither true nor predicted in the set has no defined value (NaN). The
macro and weighted averages are over the classes of the test points (support above 0), the same
set for every model scored on them (scikit-learn's ``labels=`` those classes, not its default
union of true and predicted labels, which differs by model); a precision or recall with a zero
denominator counts as 0 there (``zero_division=0``); per class it is NaN (a class never
predicted has no precision, one absent from the test points no recall: a fold without it says
nothing of them). Macro averages weigh those classes equally; weighted averages by support.
AUC (binary only): the probability that a random positive scores above a random negative, ties
counting half (Mann-Whitney U / (n_pos n_neg)); NaN if a class is missing.
R1 (binary only): recall of class 1, permafrost present, the reference's headline figure.
Reliability and expected calibration error (ECE): predicted probabilities against a reference
probability (a synthetic region's hidden truth) or 0/1 outcomes, in equal-width bins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [K, K]: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for binary ``y_true`` (0/1); NaN if one class."""
    y_true = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)  # average ranks for ties
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b``; NaN (undefined) where either is constant, as the
    labels of test points of one class are."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: list[str],
    score: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every figure of the report for one set of predictions (plain floats, lists and dicts).

    ``score``: for two classes, the predicted probability of class 1 (for AUC).

    Macro averages are over the classes of the test points (``y_true``), whatever was
    predicted: every model scored on the same points averages over the same classes, so a
    wrong prediction costs the same whether it lands in a class the points hold or in one they
    do not (with sklearn's default, over the classes true or predicted, the second adds a class
    of F1 0 and can reverse two models' order). A class never predicted has precision 0 there.
    """
    k = len(classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = confusion(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (support + predicted) > 0
    n = len(y_true)
    out: dict[str, Any] = {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "per_class": {
            name: {
                # undefined, not 0, where the class is never predicted (precision) or not in
                # the test points (recall): a fold without it says nothing of its recall
                "precision": float(precision[i]) if predicted[i] else float("nan"),
                "recall": float(recall[i]) if support[i] else float("nan"),
                "f1": float(f1[i]) if present[i] else float("nan"),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion": cm.tolist(),
    }
    tested = support > 0
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"macro_{name}"] = float(values[tested].mean()) if tested.any() else float("nan")
        out[f"weighted_{name}"] = (
            float((values * support).sum() / support.sum()) if support.sum() else float("nan")
        )
    if k == 2:
        out["r1"] = float(recall[1]) if support[1] else float("nan")
        out["auc"] = auc(y_true, score) if score is not None else float("nan")
    return out


def reliability(p: np.ndarray, truth: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Reliability curve and expected calibration error of probabilities ``p`` against ``truth``.

    ``truth`` is what ``p`` should equal on average: a true probability (a synthetic region's
    hidden truth, in [0, 1]) or 0/1 outcomes. ``n_bins`` equal-width bins over [0, 1]; bin b holds
    ``b/n <= p < (b+1)/n`` (``p == 1`` in the last; ``p`` is clipped to [0, 1] for binning only).
    Pairs where either value is NaN are left out. Returns plain lists for JSON: ``edges``
    (n_bins + 1), per bin ``count``, ``mean_pred`` and ``mean_truth`` (NaN for an empty bin),
    ``n`` (pairs used) and ``ece`` = sum over bins of count_b / n * |mean_pred_b - mean_truth_b|
    (NaN when n is 0). 0 is perfectly calibrated; a constant offset c gives c.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, not {n_bins}")
    p = np.asarray(p, dtype=np.float64).ravel()
    truth = np.asarray(truth, dtype=np.float64).ravel()
    if p.shape != truth.shape:
        raise ValueError(f"p and truth differ in length: {p.shape[0]} vs {truth.shape[0]}")
    ok = np.isfinite(p) & np.isfinite(truth)
    p, truth = p[ok], truth[ok]
    # floor(p n), not digitize on linspace edges: linspace(0, 1, 11)[3] is 0.30000000000000004,
    # which would put p = 0.3 in the bin below
    bins = np.minimum(np.floor(np.clip(p, 0.0, 1.0) * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(bins, weights=p, minlength=n_bins) / count
        mean_truth = np.bincount(bins, weights=truth, minlength=n_bins) / count
    n = int(count.sum())
    gap = np.where(count > 0, np.abs(mean_pred - mean_truth), 0.0)
    ece = float((count * gap).sum() / n) if n else float("nan")
    return {
        "edges": [b / n_bins for b in range(n_bins + 1)],
        "count": count.astype(np.int64).tolist(),
        "mean_pred": mean_pred.tolist(),
        "mean_truth": mean_truth.tolist(),
        "n": n,
        "ece": ece,
    }
