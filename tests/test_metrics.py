"""Evaluation metrics: every figure against scikit-learn (or by hand) on the same arrays."""

import numpy as np
import pytest
from sklearn import metrics as skm

from cxr_keras.evaluate.metrics import (
    bootstrap_weights,
    evaluate_scores,
    expected_calibration_error,
    interval,
    weighted_auc,
)

TOL = dict(rel=1e-9, abs=1e-12)


def binary_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    scores = np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1).round(2)  # rounded: many tied scores
    return y, scores


def test_binary_metrics_equal_scikit_learn():
    y, s = binary_data()
    m = evaluate_scores("binary", ["NORMAL", "PNEUMONIA"], y, s, threshold=0.5, resamples=200)
    pred = (s >= 0.5).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), **TOL)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s), **TOL)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn), **TOL)
    assert m["specificity"] == pytest.approx(tn / (tn + fp), **TOL)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), **TOL)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), **TOL)
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred), **TOL)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, s), **TOL)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    precision, recall, f1, support = skm.precision_recall_fscore_support(y, pred)
    for k, name in enumerate(["NORMAL", "PNEUMONIA"]):
        entry = m["per_class"][name]
        assert (entry["precision"], entry["recall"], entry["f1"], entry["support"]) == pytest.approx(
            (precision[k], recall[k], f1[k], support[k]), **TOL)
    assert m["per_class"]["NORMAL"]["specificity"] == pytest.approx(recall[1], **TOL)  # specificity = other's recall
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=average)
        assert (m["averages"][average]["precision"], m["averages"][average]["recall"],
                m["averages"][average]["f1"]) == pytest.approx((p, r, f), **TOL)
    lo, hi = m["ci"]["roc_auc"]
    assert lo < m["roc_auc"] < hi and hi - lo < 0.2


def test_positive_class_first_is_respected():
    y, s = binary_data()
    m = evaluate_scores("binary", ["PNEUMONIA", "NORMAL"], y, s, positive_index=0, resamples=50)
    assert m["positive_class"] == "PNEUMONIA"
    assert m["per_class"]["PNEUMONIA"]["recall"] == pytest.approx(m["sensitivity"], **TOL)
    assert m["per_class"]["PNEUMONIA"]["support"] == int(y.sum())


def test_multiclass_metrics_equal_scikit_learn():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 3, 240)
    logits = rng.normal(size=(240, 3)) + 1.5 * np.eye(3)[t]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = evaluate_scores("multiclass", ["Covid-19", "No_findings", "Pneumonia"], np.eye(3)[t], p, resamples=100)
    pred = p.argmax(axis=1)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(t, p, multi_class="ovr", average="macro"), **TOL)
    assert m["roc_auc_micro"] == pytest.approx(skm.roc_auc_score(np.eye(3)[t], p, average="micro"), **TOL)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(t, pred), **TOL)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(t, pred), **TOL)
    assert m["confusion_matrix"] == skm.confusion_matrix(t, pred).tolist()
    assert m["brier"] == pytest.approx(skm.brier_score_loss(t, p, scale_by_half=False), **TOL)
    for average in ("macro", "micro", "weighted"):
        pr, rc, f, _ = skm.precision_recall_fscore_support(t, pred, average=average)
        assert (m["averages"][average]["precision"], m["averages"][average]["recall"],
                m["averages"][average]["f1"]) == pytest.approx((pr, rc, f), **TOL)
    cm = skm.confusion_matrix(t, pred)
    for k, name in enumerate(m["classes"]):
        tn = cm.sum() - cm[k].sum() - cm[:, k].sum() + cm[k, k]
        assert m["per_class"][name]["specificity"] == pytest.approx(tn / (cm.sum() - cm[k].sum()), **TOL)


def test_multilabel_metrics_equal_scikit_learn():
    rng = np.random.default_rng(2)
    y = (rng.uniform(size=(200, 4)) < [0.1, 0.3, 0.5, 0.05]).astype(int)
    s = np.clip(0.4 * y + rng.uniform(0, 0.6, y.shape), 0, 1)
    m = evaluate_scores("multilabel", list("abcd"), y, s, threshold=0.5, resamples=100)
    pred = (s >= 0.5).astype(int)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s, average="macro"), **TOL)
    assert m["roc_auc_micro"] == pytest.approx(skm.roc_auc_score(y, s, average="micro"), **TOL)
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s, average="macro"), **TOL)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), **TOL)
    assert m["confusion_matrix"] == skm.multilabel_confusion_matrix(y, pred).tolist()
    for average in ("macro", "micro", "weighted"):
        pr, rc, f, _ = skm.precision_recall_fscore_support(y, pred, average=average)
        assert (m["averages"][average]["precision"], m["averages"][average]["recall"],
                m["averages"][average]["f1"]) == pytest.approx((pr, rc, f), **TOL)


def test_bootstrap_auc_equals_weighted_scikit_learn_per_resample():
    y, s = binary_data(120, seed=3)
    weights = bootstrap_weights(len(y), resamples=20, seed=7)
    ours = weighted_auc(y, s, weights)
    theirs = [skm.roc_auc_score(y, s, sample_weight=w) for w in weights]
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    assert weights.sum(axis=1).tolist() == [len(y)] * 20
    np.testing.assert_array_equal(weights, bootstrap_weights(len(y), resamples=20, seed=7))  # seeded


def test_bootstrap_interval_covers_and_narrows_with_more_data():
    small = evaluate_scores("binary", ["N", "P"], *binary_data(100, seed=4), resamples=500)
    large = evaluate_scores("binary", ["N", "P"], *binary_data(2000, seed=4), resamples=500)
    width = lambda m: m["ci"]["roc_auc"][1] - m["ci"]["roc_auc"][0]  # noqa: E731
    assert width(large) < width(small) / 2.5
    for key in ("sensitivity", "specificity", "f1"):
        lo, hi = large["ci"][key]
        assert lo <= large[key] <= hi
    assert interval(np.array([np.nan, np.nan])) is None


def test_expected_calibration_error_by_hand():
    y = np.array([0, 1, 1, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.55, 0.58, 0.95, 0.99])
    ece, curve = expected_calibration_error(y, p, bins=10)
    # bins: [0,.1): (0.05 | 0) ; [.1,.2): (0.15 | 1) ; [.5,.6): (0.55, 0.58 | 1, 0) ; [.9,1]: (0.95, 0.99 | 1, 1)
    expected = (1 * 0.05 + 1 * 0.85 + 2 * abs(0.5 - 0.565) + 2 * abs(1 - 0.97)) / 6
    assert ece == pytest.approx(expected, **TOL)
    assert curve["count"] == [1, 1, 2, 2]
    assert curve["confidence"] == pytest.approx([0.05, 0.15, 0.565, 0.97], **TOL)
