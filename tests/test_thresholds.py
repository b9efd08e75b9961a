"""Threshold sweeps and operating-point rules, checked by brute force over every candidate threshold."""

import numpy as np
import pytest

from cxr_keras.evaluate.thresholds import apply_threshold, operating_point, sweep


def data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.25 * y + rng.uniform(0, 0.75, n), 0, 1).round(3)


def brute_force(y, s):
    """Rates at every distinct score, by counting."""
    rows = []
    for t in np.unique(s):
        r = apply_threshold(y, s, t)
        rows.append({**r, "youden_j": r["sensitivity"] + r["specificity"] - 1})
    return rows


def test_sweep_matches_counting_at_every_threshold():
    y, s = data()
    table = sweep(y, s)
    for row in brute_force(y, s):
        i = int(np.flatnonzero(table["threshold"] == row["threshold"])[0])
        for key in ("sensitivity", "specificity", "ppv", "npv", "f1", "youden_j"):
            assert table[key][i] == pytest.approx(row[key], abs=1e-12), key


def test_rules_pick_the_best_threshold_by_brute_force():
    y, s = data()
    rows = brute_force(y, s)
    youden = operating_point(y, s, "youden")
    assert youden.youden_j == pytest.approx(max(r["youden_j"] for r in rows), abs=1e-12)
    assert operating_point(y, s, "f1").f1 == pytest.approx(max(r["f1"] for r in rows), abs=1e-12)

    screening = operating_point(y, s, "sensitivity", 0.95)
    reaching = [r for r in rows if r["sensitivity"] >= 0.95]
    best = max(reaching, key=lambda r: (r["specificity"], r["threshold"]))
    assert screening.sensitivity >= 0.95 and screening.specificity == pytest.approx(best["specificity"], abs=1e-12)
    assert screening.rule == "sensitivity>=0.95"

    confirm = operating_point(y, s, "specificity", 0.9)
    reaching = [r for r in rows if r["specificity"] >= 0.9]
    assert confirm.specificity >= 0.9
    assert confirm.sensitivity == pytest.approx(max(r["sensitivity"] for r in reaching), abs=1e-12)


def test_threshold_chosen_on_validation_is_applied_unchanged_to_test():
    y_val, s_val = data(seed=1)
    y_test, s_test = data(seed=2)
    point = operating_point(y_val, s_val, "sensitivity", 0.9)
    on_test = apply_threshold(y_test, s_test, point.threshold)
    decided = s_test >= point.threshold
    assert on_test["sensitivity"] == pytest.approx(decided[y_test == 1].mean(), abs=1e-12)
    assert on_test["specificity"] == pytest.approx((~decided)[y_test == 0].mean(), abs=1e-12)


def test_bad_requests():
    y, s = data()
    with pytest.raises(ValueError, match="needs a target"):
        operating_point(y, s, "sensitivity")
    with pytest.raises(ValueError, match="rule must be one of"):
        operating_point(y, s, "accuracy")
    with pytest.raises(ValueError, match="both positive and negative"):
        sweep(np.ones(5), np.linspace(0, 1, 5))
