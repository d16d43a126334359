"""Per-pixel uncertainty of a map: the measures, and the error rate by decile of uncertainty.

The measures, each in [0, 1], NaN where the probabilities are nodata (NaN):

- **normalised entropy** of the blended class probabilities, ``H(p) / ln K`` with ``H(p) = -sum_k
  p_k ln p_k`` (``0 ln 0 = 0``) over the task's K classes; a binary task's classes are
  ``(1 - p, p)``, so its entropy is the binary entropy of the probability over ``ln 2``. 0: one
  class is certain; 1: every class is equally likely (p = 0.5 for NSP, 1/7 each for soil order).
  It says how sure the map's own model is, and needs no other model.
- **ensemble spread** (binary task): the standard deviation (population, ``ddof=0``) of the
  probability across the ensemble's models, the map's model and its members (``prediction.
  ensemble``): how much models trained alike but for their seed disagree. At most 0.5.
- **ensemble disagreement** (multiclass task): the share of the members (the map's model
  excluded, it always agrees with itself) whose most probable class differs from the map's class.

Error by decile (:func:`error_by_decile`): the pixels sorted by uncertainty and cut into ten groups
of equal count, with each group's uncertainty range and mean and its error rate (mean error). The
stored percent values repeat, so an edge often cuts a run of equal values: each side takes its
share of the run's pixels at the run's mean error, not the pixels that come first in raster order
(each decile still holds a tenth of the pixels). An uncertainty that means something has an error
rate that rises across the deciles.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

DECILES = 10


def class_probabilities(p: np.ndarray, binary: bool) -> np.ndarray:
    """[K, ...] class probabilities from a predicted raster's bands: a binary task's single band
    ``p`` (probability of presence) becomes ``(1 - p, p)``; a multiclass task's K bands are
    returned as they are."""
    p = np.asarray(p, dtype=np.float64)
    if binary:
        band = p[0] if p.ndim >= 1 and p.shape[0] == 1 else p
        return np.stack([1.0 - band, band])
    return p


def normalised_entropy(p: np.ndarray) -> np.ndarray:
    """``-sum_k p_k ln p_k / ln K`` over axis 0 of [K, ...] class probabilities (K >= 2), in
    [0, 1]; NaN where any class probability is NaN. Probabilities are clipped to [0, 1] first
    (blending keeps them there up to rounding)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    k = p.shape[0]
    if k < 2:
        raise ValueError(f"normalised entropy needs at least 2 classes, got {k}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    h = -terms.sum(axis=0) / math.log(k)
    h[~np.isfinite(p).all(axis=0)] = np.nan
    return np.clip(h, 0.0, 1.0)


def ensemble_spread(probabilities: np.ndarray) -> np.ndarray:
    """Standard deviation (``ddof=0``) over axis 0 of [M, ...] probabilities of M models (the
    map's model and its members); NaN where any model's probability is NaN."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape[0] < 2:
        raise ValueError(f"an ensemble spread needs at least 2 models, got {p.shape[0]}")
    return p.std(axis=0)  # NaN propagates


def most_probable(p: np.ndarray) -> np.ndarray:
    """Class index (int16) of [K, ...] probabilities; -1 where any class is NaN."""
    p = np.asarray(p)
    bad = ~np.isfinite(p).all(axis=0)
    idx = np.argmax(np.where(np.isfinite(p), p, -np.inf), axis=0).astype(np.int16)
    idx[bad] = -1
    return idx


def disagreement(map_class: np.ndarray, member_classes: np.ndarray) -> np.ndarray:
    """Share of the members whose class differs from the map's: ``map_class`` [...] and
    ``member_classes`` [M, ...] class indices, -1 for nodata; NaN where any of them is -1."""
    map_class = np.asarray(map_class)
    members = np.asarray(member_classes)
    if members.shape[0] < 1:
        raise ValueError("an ensemble disagreement needs at least 1 member")
    out = (members != map_class[None]).mean(axis=0)
    out[(map_class < 0) | (members < 0).any(axis=0)] = np.nan
    return out


def error_by_decile(uncertainty: np.ndarray, error: np.ndarray,
                    n: int = DECILES) -> list[dict[str, Any]]:
    """Per decile of ``uncertainty`` (equal-count groups of the pixels sorted by it, the least
    uncertain first): pixel count, uncertainty min, max and mean, and mean ``error`` (an error
    rate for 0/1 errors). Pixels where either is NaN are left out.

    Pixels of one uncertainty value are alike to the table, wherever they lie: a run of equal
    values that a decile edge cuts gives each side its share of the run's pixels at the run's
    mean error, so the table does not depend on the pixels' order (a raster's rows)."""
    u = np.asarray(uncertainty, dtype=np.float64).ravel()
    e = np.asarray(error, dtype=np.float64).ravel()
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    values, run, counts = np.unique(u, return_inverse=True, return_counts=True)
    run_error = np.bincount(run, weights=e, minlength=len(values))
    starts = np.concatenate([[0], np.cumsum(counts)])  # run g holds sorted places starts[g]..
    sizes = [len(part) for part in np.array_split(np.arange(len(u)), n)]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    rows = []
    for k in range(n):
        lo, hi = edges[k], edges[k + 1]
        if hi == lo:
            continue
        first = np.searchsorted(starts, lo, side="right") - 1
        last = np.searchsorted(starts, hi, side="left")  # runs first..last-1 meet the decile
        g = np.arange(first, last)
        share = np.minimum(starts[g + 1], hi) - np.maximum(starts[g], lo)
        rows.append({
            "decile": k + 1,
            "pixels": int(hi - lo),
            "uncertainty_min": float(values[first]),
            "uncertainty_max": float(values[last - 1]),
            "uncertainty_mean": float((share * values[g]).sum() / (hi - lo)),
            "error": float((share * run_error[g] / counts[g]).sum() / (hi - lo)),
        })
    return rows


def rank_correlation(rows: list[dict[str, Any]]) -> float:
    """Spearman correlation of decile rank and error rate over a decile table: 1 when the error
    rises at every decile (NaN for fewer than 2 deciles or a constant error). Equal errors share
    their average rank: deciles inside one run of equal stored values all take the run's mean
    error, and ranking them in decile order would read a flat error as a rising one."""
    from scipy.stats import rankdata

    err = np.array([r["error"] for r in rows], dtype=np.float64)
    if len(err) < 2 or np.all(err == err[0]):
        return float("nan")
    return float(np.corrcoef(np.arange(len(err), dtype=np.float64), rankdata(err))[0, 1])
