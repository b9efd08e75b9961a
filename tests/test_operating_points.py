"""The operating-point table behind report.html's slider: counts against scikit-learn at every threshold, and
the chosen threshold's row and intervals equal to metrics.json's."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from cxr_keras.evaluate.metrics import evaluate_scores
from cxr_keras.evaluate.operating_points import MAX_POINTS, operating_points, slider_thresholds


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.4).astype(float)
    return y, np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)


def test_binary_table_matches_scikit_learn_at_every_threshold():
    y, s = _data()
    table = operating_points("binary", ["NORMAL", "PNEUMONIA"], y, s, 0.5, resamples=200)["PNEUMONIA"]
    assert table["threshold"] == sorted(table["threshold"]) and 0.5 in table["threshold"]
    for k, t in enumerate(table["threshold"]):
        tn, fp, fn, tp = confusion_matrix(y, s >= t, labels=[0, 1]).ravel()
        assert (table["tp"][k], table["fp"][k], table["tn"][k], table["fn"][k]) == (tp, fp, tn, fn)
        assert table["sensitivity"][k] == pytest.approx(tp / (tp + fn))
        assert table["specificity"][k] == pytest.approx(tn / (tn + fp))
        low, high = table["sensitivity_ci"][k]
        assert low <= table["sensitivity"][k] + 1e-9 and high >= table["sensitivity"][k] - 1e-9
    assert table["prevalence"] == pytest.approx(y.mean()) and table["n_images"] == len(y)
    assert table["tp"][-1] + table["fp"][-1] == 0 and table["specificity"][-1] == 1  # the slider's top end
    assert table["roc"]["fpr"][0] == 0 and table["roc"]["tpr"][-1] == 1


def test_the_chosen_row_and_its_intervals_are_metrics_json():
    y, s = _data(seed=1)
    threshold = 0.4321  # not a score: the slider still has it
    metrics = evaluate_scores("binary", ["a", "b"], y, s, threshold, resamples=300, seed=4)
    table = operating_points("binary", ["a", "b"], y, s, threshold, resamples=300, seed=4)["b"]
    k = table["threshold"].index(threshold)
    (tn, fp), (fn, tp) = metrics["confusion_matrix"]
    assert (table["tp"][k], table["fp"][k], table["tn"][k], table["fn"][k]) == (tp, fp, tn, fn)
    assert table["sensitivity"][k] == metrics["sensitivity"] and table["specificity"][k] == metrics["specificity"]
    assert table["sensitivity_ci"][k] == pytest.approx(metrics["ci"]["sensitivity"])
    assert table["specificity_ci"][k] == pytest.approx(metrics["ci"]["specificity"])


def test_multilabel_has_one_table_per_finding_with_both_classes_and_multiclass_none():
    y1, s1 = _data(seed=2)
    y2, s2 = _data(seed=3)
    y = np.stack([y1, y2, np.zeros_like(y1)], axis=1)  # the third finding never occurs: no table
    s = np.stack([s1, s2, s1], axis=1)
    tables = operating_points("multilabel", ["x", "y", "z"], y, s, [0.3, 0.6, 0.5], resamples=100)
    assert list(tables) == ["x", "y"] and tables["y"]["chosen"] == 0.6
    k = tables["y"]["threshold"].index(0.6)
    assert tables["y"]["tp"][k] == int(((s2 >= 0.6) & (y2 == 1)).sum())
    assert operating_points("multiclass", ["a", "b", "c"], np.eye(3)[[0, 1, 2]], np.eye(3), 0.5) is None


def test_a_large_set_is_thinned_to_the_slider_size_keeping_the_ends_and_the_chosen_cut():
    s = np.random.default_rng(0).uniform(size=5000)
    cuts = slider_thresholds(s, 0.123456)
    assert len(cuts) <= MAX_POINTS and cuts[0] == s.min() and cuts[-2] == s.max() and 0.123456 in cuts
    assert cuts[-1] > s.max()  # the last position: nothing decided positive
