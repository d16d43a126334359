"""Metrics against scikit-learn and against figures worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from mapper.metrics import auc, classification_metrics, reliability


def test_binary_hand_example() -> None:
    #            TP TP FN  TN TN FP TN
    y_true = np.array([1, 1, 1, 0, 0, 0, 0])
    y_pred = np.array([1, 1, 0, 0, 0, 1, 0])
    score = np.array([0.9, 0.8, 0.3, 0.1, 0.4, 0.6, 0.3])
    m = classification_metrics(y_true, y_pred, ["absent", "present"], score)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["per_class"]["present"]["precision"] == pytest.approx(2 / 3)
    assert m["r1"] == m["per_class"]["present"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["absent"]["recall"] == pytest.approx(3 / 4)
    assert m["per_class"]["present"]["f1"] == pytest.approx(2 / 3)
    # AUC by hand: 12 positive/negative pairs; the positive 0.3 beats 0.1, ties 0.3 (half),
    # loses to 0.4 and 0.6: (4 + 4 + 1.5) / 12
    assert m["auc"] == pytest.approx(9.5 / 12)
    assert m["auc"] == pytest.approx(roc_auc_score(y_true, score))
    assert m["confusion"] == [[3, 1], [1, 2]]


def test_multiclass_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 300)  # class 6 never true
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 5, 300))  # 5, 6 rare/never
    classes = [f"c{i}" for i in range(7)]
    m = classification_metrics(y_true, y_pred, classes)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0,
                                                     labels=np.unique(y_true))
        assert (m[f"{avg}_precision"], m[f"{avg}_recall"], m[f"{avg}_f1"]) == pytest.approx(
            (p, r, f))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(6), zero_division=0)
    for i in range(6):
        got = m["per_class"][f"c{i}"]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert got["support"] == s[i]
    assert math.isnan(m["per_class"]["c6"]["f1"])  # neither true nor predicted: undefined
    np.testing.assert_array_equal(m["confusion"], confusion_matrix(y_true, y_pred, labels=range(7)))
    assert "auc" not in m and "r1" not in m


def test_macro_averages_take_the_classes_of_the_test_points_for_every_model() -> None:
    """Two models with the same errors on the same points: one wrong prediction into a class the
    points do not hold costs as much as one into a class they do (sklearn's default set, the
    classes true or predicted, would add a class of F1 0 to the first and reverse the order)."""
    y_true = np.array([0, 0, 0, 1, 1, 1])
    into_absent = classification_metrics(y_true, np.array([0, 0, 0, 1, 1, 2]), list("abc"))
    into_present = classification_metrics(y_true, np.array([0, 0, 0, 1, 1, 0]), list("abc"))
    assert into_absent["accuracy"] == into_present["accuracy"]
    assert into_absent["macro_f1"] == pytest.approx((1.0 + 0.8) / 2)  # a: 1; b: P 1, R 2/3
    assert into_present["macro_f1"] == pytest.approx((6 / 7 + 0.8) / 2)  # a: P 3/4, R 1
    assert into_absent["macro_f1"] > into_present["macro_f1"]
    for m, pred in ((into_absent, [0, 0, 0, 1, 1, 2]), (into_present, [0, 0, 0, 1, 1, 0])):
        p, r, f, _ = precision_recall_fscore_support(y_true, pred, average="macro",
                                                     labels=[0, 1], zero_division=0)
        assert (m["macro_precision"], m["macro_recall"], m["macro_f1"]) == pytest.approx((p, r, f))
    assert into_absent["per_class"]["c"]["f1"] == 0.0  # predicted, never true: still listed
    # NSP on a fold of absent points only: one false "present" is one error in 100, not F1 0
    absent = np.zeros(100, dtype=np.int64)
    one_wrong = classification_metrics(absent, np.r_[np.ones(1), np.zeros(99)], ["no", "yes"])
    assert one_wrong["macro_f1"] == pytest.approx(2 * 0.99 / 1.99)


def test_per_class_recall_and_precision_are_undefined_without_support_or_prediction() -> None:
    """A spatial fold without a present point: its recall of present is undefined (NaN, as R1),
    not 0, so the per-class table's mean over folds leaves it out as the summary's R1 does; a
    class never predicted has no precision."""
    y_true = np.zeros(100, dtype=int)
    y_pred = np.zeros(100, dtype=int)
    y_pred[0] = 1  # one false "present"
    m = classification_metrics(y_true, y_pred, ["absent", "present"])
    present, absent = m["per_class"]["present"], m["per_class"]["absent"]
    assert math.isnan(present["recall"]) and math.isnan(m["r1"])
    assert present["precision"] == 0.0 and present["f1"] == 0.0 and present["support"] == 0
    assert (absent["precision"], absent["recall"]) == (1.0, pytest.approx(0.99))
    never = classification_metrics(np.array([0, 1, 1]), np.array([0, 0, 0]), ["absent", "present"])
    assert math.isnan(never["per_class"]["present"]["precision"])
    assert never["per_class"]["present"]["recall"] == 0.0


def test_auc_undefined_with_one_class() -> None:
    assert math.isnan(auc(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9])))
    m = classification_metrics(np.array([0, 0]), np.array([0, 1]), ["a", "p"], np.array([.1, .7]))
    assert math.isnan(m["r1"]) and math.isnan(m["auc"])


def test_reliability_hand_example() -> None:
    p = np.array([0.05, 0.15, 0.12, 0.95, 1.0, np.nan, 0.5])
    t = np.array([0.0, 0.2, 0.3, 1.0, 0.8, 0.4, np.nan])  # the last two pairs are left out
    r = reliability(p, t)
    # bin 0: 0.05 vs 0 (gap 0.05); bin 1: 0.135 vs 0.25 (0.115); bin 9 (1.0 included): 0.975 vs
    # 0.9 (0.075); ECE = (1 * 0.05 + 2 * 0.115 + 2 * 0.075) / 5
    assert r["n"] == 5
    assert r["count"] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert r["mean_pred"][1] == pytest.approx(0.135) and r["mean_truth"][1] == pytest.approx(0.25)
    assert r["mean_pred"][9] == pytest.approx(0.975) and r["mean_truth"][9] == pytest.approx(0.9)
    assert math.isnan(r["mean_pred"][4]) and math.isnan(r["mean_truth"][4])
    assert r["ece"] == pytest.approx(0.43 / 5)
    assert r["edges"] == pytest.approx(np.linspace(0, 1, 11))


def test_reliability_bin_edges() -> None:
    # b/10 opens bin b (not the one below, as digitize on linspace edges would put 0.3); 1 in bin 9
    p = np.arange(11) / 10
    assert reliability(p, p)["count"] == [1] * 9 + [2]
    assert reliability(np.array([-0.2, 1.3]), np.array([0.0, 1.0]))["count"] == [1] + [0] * 8 + [1]


def test_ece_perfect_and_offset() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.9, 5000)
    assert reliability(p, p)["ece"] == pytest.approx(0.0, abs=1e-12)
    assert reliability(p, p + 0.1)["ece"] == pytest.approx(0.1)
    assert reliability(p + 0.1, p)["ece"] == pytest.approx(0.1)
    # outcomes drawn from p: calibrated up to sampling noise (about 0.5 / sqrt(500) per bin)
    y = (rng.random(len(p)) < p).astype(float)
    assert reliability(p, y)["ece"] < 0.03
    assert math.isnan(reliability(np.array([np.nan]), np.array([0.5]))["ece"])


def test_reliability_agrees_with_sklearn_calibration_curve() -> None:
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(4)
    p = rng.beta(2, 5, 2000)  # continuous: no value on a bin edge, where conventions differ
    y = (rng.random(len(p)) < p**0.7).astype(int)
    r = reliability(p, y, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    used = np.array(r["count"]) > 0
    np.testing.assert_allclose(np.array(r["mean_truth"])[used], prob_true)
    np.testing.assert_allclose(np.array(r["mean_pred"])[used], prob_pred)
    # ECE by a plain loop over the bins
    edges = np.linspace(0, 1, 11)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        b = (p >= lo) & ((p < hi) | (hi == 1.0))
        if b.any():
            ece += b.sum() / len(p) * abs(p[b].mean() - y[b].mean())
    assert r["ece"] == pytest.approx(ece)


def test_correlation_is_pearsons_and_undefined_for_a_constant() -> None:
    import warnings

    from scipy.stats import pearsonr

    from mapper.metrics import correlation

    rng = np.random.default_rng(3)
    a, b = rng.random(50), rng.random(50)
    assert correlation(a, b) == pytest.approx(pearsonr(a, b).statistic)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(correlation(np.zeros(50), b)) and np.isnan(correlation(a, np.ones(50)))
        assert np.isnan(correlation(a[:1], b[:1]))
