"""CV folds: DBSCAN-equal components, balanced blocks, the holdout distance of every fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist
from sklearn.cluster import DBSCAN

from mapper.errors import ConfigError, InputError
from mapper.splits import (
    SPLITS,
    distance_components,
    kd_blocks,
    make_folds,
    train_test_indices,
)


def _survey(seed: int = 0, n: int = 600, size: float = 30_000.0) -> pd.DataFrame:
    """Clustered points like a real survey: a road (a dense line), sites, scattered stops."""
    rng = np.random.default_rng(seed)
    road = np.column_stack([np.full(n // 3, size * 0.4) + rng.normal(0, 50, n // 3),
                            rng.uniform(0, size, n // 3)])
    sites = np.concatenate([c + rng.normal(0, 200, (n // 6, 2)) for c in
                            ([5000, 5000], [25000, 24000])])
    scattered = rng.uniform(0, size, (n - len(road) - len(sites), 2))
    xy = np.concatenate([road, sites, scattered])
    nsp = (rng.random(n) < 0.3).astype(float)
    nsp[rng.random(n) < 0.2] = np.nan
    soil = rng.integers(0, 7, n).astype(float)
    soil[rng.random(n) < 0.1] = np.nan
    table = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1],
                          "nsp": pd.array(nsp, dtype="Float64").astype("Int8"),
                          "soil_order": pd.array(soil, dtype="Float64").astype("Int8")})
    for col, fold in make_folds(xy, 5, seed=7).items():
        table[col] = fold
    return table


@pytest.mark.parametrize("d", [150.0, 800.0, 3000.0])
def test_components_equal_dbscan_min_samples_1(d: float) -> None:
    rng = np.random.default_rng(1)
    xy = np.concatenate([rng.uniform(0, 10_000, (400, 2)),
                         rng.normal(3000, 100, (100, 2))])
    ours = distance_components(xy, d)
    ref = DBSCAN(eps=d, min_samples=1).fit(xy).labels_
    # the same partition: a one-to-one map between labels
    pairs = set(zip(ours.tolist(), ref.tolist(), strict=True))
    assert len(pairs) == len(set(ours)) == len(set(ref))


def test_kd_blocks_have_equal_counts_and_are_compact() -> None:
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 1000, (503, 2))
    for m in (2, 3, 5, 7):
        labels = kd_blocks(xy, m)
        counts = np.bincount(labels)
        assert len(counts) == m and counts.max() - counts.min() <= 1
    labels = kd_blocks(xy, 4)  # 4 blocks of a square: quadrant-like, each far smaller
    for k in range(4):
        box = np.ptp(xy[labels == k], axis=0)
        assert (box < 800).any()


@pytest.mark.parametrize("task", ["nsp", "soilorder"])
@pytest.mark.parametrize("split", ["sh1km", "sh10km"])
def test_no_test_point_within_the_holdout_distance_of_a_training_point(
    task: str, split: str
) -> None:
    table = _survey()
    d = SPLITS[split]
    xy = table[["x", "y"]].to_numpy()
    label = "nsp" if task == "nsp" else "soil_order"
    seen_test = []
    for fold in range(5):
        train, test = train_test_indices(table, split, fold, task)
        assert len(test) > 0 and len(train) > 0
        assert cdist(xy[test], xy[train]).min() > d
        assert table[label].iloc[np.concatenate([train, test])].notna().all()
        assert (table[f"fold_{split}"].iloc[test] == fold).all()
        assert not set(train) & set(test)
        seen_test.extend(test.tolist())
    # every labelled point is tested exactly once
    assert sorted(seen_test) == np.flatnonzero(table[label].notna().to_numpy()).tolist()


def test_folds_are_balanced_and_deterministic() -> None:
    a, b = _survey(), _survey()
    for split in SPLITS:
        col = f"fold_{split}"
        np.testing.assert_array_equal(a[col], b[col])
        counts = np.bincount(a[col], minlength=5)
        assert counts.min() >= 0.8 * len(a) / 5, (split, counts)
    other = make_folds(a[["x", "y"]].to_numpy(), 5, seed=8)
    assert not np.array_equal(other["fold_random"], a["fold_random"])


def test_random_split_has_no_dead_zone_and_bad_arguments_are_refused() -> None:
    table = _survey()
    train, test = train_test_indices(table, "random", 2, "nsp")
    labelled = int(table["nsp"].notna().sum())
    assert len(train) + len(test) == labelled
    with pytest.raises(ConfigError, match="unknown split"):
        train_test_indices(table, "sh5km", 0, "nsp")
    with pytest.raises(ConfigError, match="fold 9 does not exist"):
        train_test_indices(table, "random", 9, "nsp")
    with pytest.raises(ConfigError, match="unknown task"):
        train_test_indices(table, "random", 0, "ph")


def test_points_on_one_pixel_share_their_random_fold() -> None:
    """Two records of one site (one pixel: the same stack values) are never split between
    training and test by the Random split; without shared pixels the folds are those drawn from
    the points alone (so tables without them keep their folds)."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 20_000, (300, 2))
    pixels = np.floor(xy / 10.0).astype(np.int64)
    alone = make_folds(xy, 5, seed=7)
    np.testing.assert_array_equal(make_folds(xy, 5, seed=7, pixels=pixels)["fold_random"],
                                  alone["fold_random"])
    twice = np.concatenate([xy, xy[:40] + 0.5])  # 40 sites recorded again, 0.5 m off
    pixels = np.concatenate([pixels, pixels[:40]])  # on the pixel of their first record
    drawn = make_folds(twice, 5, seed=7, pixels=pixels)["fold_random"]
    np.testing.assert_array_equal(drawn[:40], drawn[300:])
    assert np.bincount(drawn, minlength=5).min() >= 300 // 5  # still balanced over sites
    unaware = make_folds(twice, 5, seed=7)["fold_random"]
    assert (unaware[:40] != unaware[300:]).sum() > 10  # what it guards against


def test_fewer_pixels_than_folds_is_one_error() -> None:
    """Points on one pixel stay together in the Random split: 5 points on 4 pixels cannot fill
    5 folds, and say so rather than leave a fold empty."""
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0]])
    pixels = np.floor(xy / 10.0).astype(np.int64)
    with pytest.raises(InputError, match=r"5 points on 4 pixels cannot fill 5 folds"):
        make_folds(xy, 5, seed=1, pixels=pixels)
