"""Metrics equal scikit-learn's on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from core import metrics


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    logits = rng.normal(size=(500, 10)) + 3 * np.eye(10)[y] * rng.random((500, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs, probs.argmax(1)


def test_confusion_matrix_counts_and_normalized(predictions):
    y, _, p = predictions
    assert np.array_equal(metrics.confusion_matrix(y, p), skm.confusion_matrix(y, p))
    norm = metrics.confusion_matrix(y, p, normalize="true")
    assert np.allclose(norm.sum(1), 1.0)
    table = metrics.confusion_table(y, p)
    assert table["count"].sum() == 500 and len(table) == 100


def test_per_class_table_matches_sklearn(predictions):
    y, _, p = predictions
    table = metrics.per_class_table(y, p).set_index("class")
    report = skm.classification_report(y, p, output_dict=True)
    for c in range(10):
        assert table.loc[str(c), "precision"] == pytest.approx(report[str(c)]["precision"])
        assert table.loc[str(c), "recall"] == pytest.approx(report[str(c)]["recall"])
        assert table.loc[str(c), "f1"] == pytest.approx(report[str(c)]["f1-score"])
        assert table.loc[str(c), "support"] == report[str(c)]["support"]
        counts = metrics.binary_counts(y, p, c)
        assert table.loc[str(c), "specificity"] == pytest.approx(counts["TN"] / (counts["TN"] + counts["FP"]))
        assert table.loc[str(c), "npv"] == pytest.approx(counts["TN"] / (counts["TN"] + counts["FN"]))
    assert table.loc["macro avg", "f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert table.loc["weighted avg", "precision"] == pytest.approx(report["weighted avg"]["precision"])
    assert metrics.accuracy(y, p) == pytest.approx(report["accuracy"])


def test_roc_auc_per_class_and_averages_match_sklearn(predictions):
    y, probs, _ = predictions
    _, aucs = metrics.roc_curves(y, probs)
    for c in range(10):
        assert aucs[str(c)] == pytest.approx(skm.roc_auc_score(y == c, probs[:, c]))
    assert aucs["macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=2e-3)
    onehot = np.eye(10)[y]
    assert aucs["micro"] == pytest.approx(skm.roc_auc_score(onehot, probs, average="micro"))


def test_average_precision_matches_sklearn(predictions):
    y, probs, _ = predictions
    curves, ap = metrics.pr_curves(y, probs)
    for c in range(10):
        assert ap[str(c)] == pytest.approx(skm.average_precision_score(y == c, probs[:, c]))
    assert set(curves["curve"]) >= {"0", "9", "micro"}


def test_threshold_counts_and_the_course_rate_table(predictions):
    y, probs, _ = predictions
    r = metrics.threshold_counts(y, probs, positive=3, threshold=0.5)
    t, pr = y == 3, probs[:, 3] >= 0.5
    assert r["TP"] == int((t & pr).sum()) and r["FP"] == int((~t & pr).sum())
    assert r["FN"] == int((t & ~pr).sum()) and r["TN"] == int((~t & ~pr).sum())
    assert r["sensitivity (recall, TPR)"] == pytest.approx(skm.recall_score(t, pr))
    assert r["precision (PPV)"] == pytest.approx(skm.precision_score(t, pr))
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(t, pr))
    strict = metrics.threshold_counts(y, probs, positive=3, threshold=0.99)
    assert strict["TP"] + strict["FP"] <= r["TP"] + r["FP"]  # a higher threshold predicts fewer positives
