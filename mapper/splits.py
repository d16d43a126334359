"""Cross-validation folds: Random, SH-1km and SH-10km splits, shared by every model.

Every point of the samples table gets one fold (0..folds-1) per split, stored in the columns
``fold_random``, ``fold_sh1km`` and ``fold_sh10km`` of its folds file (:mod:`mapper.folds`);
:func:`train_test_indices` turns a fold into the training and test rows of a task, and is the
only way models get their data, so the Random Forest and MiSo see identical folds.

How folds are formed (coordinates are EPSG:3338 metres, distances Euclidean):

- ``random``: a seeded permutation of the points, dealt round-robin into the folds (sizes differ
  by at most one). Points on the same lattice pixel (a site visited twice, a record entered again
  under a new id) have the same stack values: they are dealt together, as one, so that no fold
  tests on a pixel it trained on (without such points, the folds are those of the points alone).
- ``sh1km`` / ``sh10km`` (spatial holdout at ``d`` = 1 km / 10 km):
  1. *Groups*: the connected components of the graph joining every two points at most ``d``
     apart, i.e. DBSCAN with ``eps = d`` and ``min_samples = 1`` (single-linkage clusters cut at
     ``d``), as the reference does. No two points of different components are within ``d``.
  2. *Blocks*: a component larger than ``n / folds`` points could not be balanced into folds
     (along a road or river, or in a region smaller than ``d``, one component holds most points),
     so it is cut into ``ceil(size / (n / folds))`` compact spatial blocks of equal counts by
     recursive median bisection (:func:`kd_blocks`). Hence there are always at least ``folds``
     groups.
  3. *Folds*: groups in order of decreasing size (ties in a seeded random order) each go to the
     fold holding the fewest points so far (greedy balancing of counts).
  4. *Dead zone*: for fold k, the training set excludes every point within ``d`` of any of that
     fold's test points (the test points of the task at hand). This is what guarantees the
     holdout distance even where step 2 cut a component: no test point lies within ``d`` of a
     training point. Where ``d`` is large against the region (SH-10km on a 20 km region), the dead
     zone can leave few or no training points; the count is logged and reported.

All randomness comes from ``numpy.random.default_rng([seed, split number])``: the folds are a pure
function of the coordinates, the fold count and the seed.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from mapper.errors import ConfigError, InputError
from mapper.experiment import SPLITS
from mapper.tasks import get_task

logger = logging.getLogger(__name__)


def fold_column(split: str) -> str:
    check_split(split)
    return f"fold_{split}"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


# -- groups ---------------------------------------------------------------------------------------


def distance_components(xy: np.ndarray, d: float) -> np.ndarray:
    """Component label per point of the graph linking points at most ``d`` apart ([N, 2] metres).

    Equal to DBSCAN(eps=d, min_samples=1) labels up to renumbering; labels are numbered in order
    of each component's first point. Scales to statewide tables: points are binned in square
    cells of side ``d / sqrt(2)`` (any two points of a cell are within ``d``, so a cell is joined
    whole), and only cells up to 2 cells apart are compared, by a nearest-neighbour query between
    their points.
    """
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cell = d / math.sqrt(2.0)
    ij = np.floor((xy - xy.min(axis=0)) / cell).astype(np.int64)
    keys, cell_of = np.unique(ij, axis=0, return_inverse=True)
    cell_of = cell_of.ravel()
    order = np.argsort(cell_of, kind="stable")
    bounds = np.searchsorted(cell_of[order], np.arange(len(keys) + 1))
    members = [order[bounds[c] : bounds[c + 1]] for c in range(len(keys))]
    lookup = {(int(i), int(j)): c for c, (i, j) in enumerate(keys)}
    parent = np.arange(len(keys))

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    trees: dict[int, cKDTree] = {}
    offsets = [(0, 1), (0, 2)] + [(di, dj) for di in (1, 2) for dj in range(-2, 3)]
    bound = d * (1.0 + 1e-12)  # "at most d", as DBSCAN's eps
    for c, (i, j) in enumerate(keys):
        for di, dj in offsets:
            other = lookup.get((int(i) + di, int(j) + dj))
            if other is None:
                continue
            a, b = find(c), find(other)
            if a == b:
                continue
            if other not in trees:
                trees[other] = cKDTree(xy[members[other]])
            dist, _ = trees[other].query(xy[members[c]], k=1, distance_upper_bound=bound)
            if np.isfinite(dist).any():
                parent[max(a, b)] = min(a, b)
    roots = np.array([find(c) for c in range(len(keys))])[cell_of]
    _, first = np.unique(roots, return_index=True)
    renumber = {int(roots[p]): k for k, p in enumerate(np.sort(first))}
    return np.array([renumber[int(r)] for r in roots], dtype=np.int64)


def kd_blocks(xy: np.ndarray, m: int) -> np.ndarray:
    """Cut [N, 2] points into ``m`` compact blocks of equal counts (within one); labels 0..m-1.

    Recursive bisection, as a k-d tree builds: the points are split across their longer extent
    at the count quantile that gives the two halves floor(m/2) and ceil(m/2) blocks' worth of
    points, and each half is cut again. Equal counts keep the folds balanced; compact blocks keep
    the dead zones (see the module doc) small. Deterministic: ties in a coordinate are broken by
    the other coordinate, then by row order.
    """
    xy = np.asarray(xy, dtype=np.float64)
    labels = np.zeros(len(xy), dtype=np.int64)

    def cut(idx: np.ndarray, m: int, first: int) -> None:
        if m <= 1 or len(idx) <= 1:
            labels[idx] = first
            return
        pts = xy[idx]
        axis = int(np.ptp(pts[:, 1]) > np.ptp(pts[:, 0]))
        order = np.lexsort((np.arange(len(idx)), pts[:, 1 - axis], pts[:, axis]))
        m_left = m // 2
        n_left = int(round(len(idx) * m_left / m))
        cut(idx[order[:n_left]], m_left, first)
        cut(idx[order[n_left:]], m - m_left, first + m_left)

    cut(np.arange(len(xy)), int(m), 0)
    return labels


def spatial_groups(xy: np.ndarray, d: float, folds: int) -> tuple[np.ndarray, int]:
    """Group id per point (distance components at ``d``, large ones cut into equal-count
    blocks by :func:`kd_blocks`) and the number of components."""
    n = len(xy)
    comp = distance_components(xy, d)
    n_comp = int(comp.max()) + 1 if n else 0
    target = n / folds
    groups = np.empty(n, dtype=np.int64)
    order = np.argsort(comp, kind="stable")
    bounds = np.searchsorted(comp[order], np.arange(n_comp + 1))
    next_id = 0
    for label in range(n_comp):
        idx = order[bounds[label] : bounds[label + 1]]
        if len(idx) > target:
            m = math.ceil(len(idx) / target)
            groups[idx] = next_id + kd_blocks(xy[idx], m)
            next_id += m
        else:
            groups[idx] = next_id
            next_id += 1
    return groups, n_comp


def assign_folds(groups: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold per point: groups by decreasing size (seeded tie order) to the emptiest fold."""
    ids, sizes = np.unique(groups, return_counts=True)
    tie = rng.permutation(len(ids))
    order = np.lexsort((tie, -sizes))
    counts = np.zeros(folds, dtype=np.int64)
    fold_of_group = {}
    for g in order:
        f = int(np.argmin(counts))
        fold_of_group[int(ids[g])] = f
        counts[f] += sizes[g]
    return np.array([fold_of_group[int(g)] for g in groups], dtype=np.int8)


def same_pixel_groups(pixels: np.ndarray | None, n: int) -> np.ndarray:
    """Group per point ([N] int64, numbered in order of each group's first point): points on the
    same pixel (rows of ``pixels`` [N, 2], lattice row and col) share one; None: one per point."""
    if pixels is None:
        return np.arange(n, dtype=np.int64)
    _, first, inverse = np.unique(np.asarray(pixels), axis=0, return_index=True,
                                  return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def make_folds(xy: np.ndarray, folds: int, seed: int,
               pixels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Fold per point for every split: ``{"fold_random": [N], "fold_sh1km": [N], ...}`` int8.
    ``pixels`` ([N, 2] lattice row, col): points on one pixel share their Random fold."""
    n = len(xy)
    if n < folds:
        raise InputError(f"{n} points cannot fill {folds} folds; add observations or lower "
                         "evaluation.folds")
    out = {}
    for number, (split, d) in enumerate(SPLITS.items()):
        rng = np.random.default_rng([seed, number])
        if d is None:
            group = same_pixel_groups(pixels, n)
            n_groups = int(group.max()) + 1
            if n_groups < folds:
                raise InputError(f"{n} points on {n_groups} pixels cannot fill {folds} folds (the "
                                 "Random split keeps a pixel's points together); add "
                                 "observations or lower evaluation.folds")
            fold_of_group = np.empty(n_groups, dtype=np.int8)
            fold_of_group[rng.permutation(n_groups)] = np.arange(n_groups) % folds
            fold = fold_of_group[group]
        else:
            groups, n_comp = spatial_groups(xy, d, folds)
            fold = assign_folds(groups, folds, rng)
            logger.info(
                "split %s: %d components at %.0f m, %d groups, fold sizes %s", split, n_comp,
                d, len(np.unique(groups)), np.bincount(fold, minlength=folds).tolist(),
            )
        out[fold_column(split)] = fold
    return out


# -- train / test rows ----------------------------------------------------------------------------


def labelled(table: pd.DataFrame, task: str) -> np.ndarray:
    """Bool [N]: rows with a label for ``task`` (its label column is not missing)."""
    return table[get_task(task).label_column].notna().to_numpy()


def train_test_indices(
    table: pd.DataFrame, split: str, fold: int, task: str
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (int64, ascending) of the training and test points of one fold and task.

    Test: the fold's points labelled for the task. Training: the other folds' labelled points,
    minus, for a spatial split at distance d, every point within d of a test point (dead zone).
    """
    col = fold_column(split)
    if col not in table.columns:
        raise InputError(f"table has no fold column {col!r}; read the samples with their folds "
                         "(mapper.folds.samples_with_folds)")
    folds = table[col].to_numpy()
    if not 0 <= fold <= int(folds.max()):
        raise ConfigError(f"fold {fold} does not exist (folds 0..{int(folds.max())})")
    has = labelled(table, task)
    test = np.flatnonzero(has & (folds == fold))
    train = np.flatnonzero(has & (folds != fold))
    d = SPLITS[split]
    if d is not None and len(test) and len(train):
        xy = table[["x", "y"]].to_numpy(np.float64)
        dist, _ = cKDTree(xy[test]).query(xy[train], k=1)
        dropped = int((dist <= d).sum())
        train = train[dist > d]
        logger.info("%s fold %d (%s): %d test, %d training, %d in the %.0f m dead zone",
                    split, fold, task, len(test), len(train), dropped, d)
    return train.astype(np.int64), test.astype(np.int64)
