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

from mapper.metrics import auc, classification_metrics


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
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
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


def test_auc_undefined_with_one_class() -> None:
    assert math.isnan(auc(np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9])))
    m = classification_metrics(np.array([0, 0]), np.array([0, 1]), ["a", "p"], np.array([.1, .7]))
    assert math.isnan(m["r1"]) and math.isnan(m["auc"])
