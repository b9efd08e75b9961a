"""Threshold sweeps and operating-point rules, checked by brute force over every candidate threshold."""

import numpy as np
import pytest

from cxr_keras.evaluate.thresholds import apply_threshold, choose, operating_point, parse_rule, sweep


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


def test_plateau_middle_on_separable_scores_is_the_middle_of_the_gap_in_logit_space():
    negatives, positives = np.linspace(0.01, 0.05, 50), np.linspace(0.9, 0.99, 50)
    y, s = np.r_[np.zeros(50), np.ones(50)], np.r_[negatives, positives]
    assert operating_point(y, s, "youden").threshold == pytest.approx(0.9)  # Youden sits on the plateau's edge
    point = choose(y, s, "plateau:0")
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    by_hand = 1 / (1 + np.exp(-(logit(0.05) + logit(0.9)) / 2))  # (0.05, 0.9] all separate perfectly
    assert point.threshold == pytest.approx(by_hand, abs=1e-12)
    assert point.sensitivity == 1 and point.specificity == 1


def test_plateau_takes_near_best_thresholds_within_the_tolerance_and_the_widest_best_interval():
    # negatives 0.1..0.45 and one at 0.5; positives 0.48 and 0.9..0.99: J = 1 - 1/20 on (0.45, 0.48] and (0.5, 0.9]
    negatives = np.r_[np.linspace(0.1, 0.45, 19), 0.5]
    positives = np.r_[0.48, np.linspace(0.9, 0.99, 19)]
    y, s = np.r_[np.zeros(20), np.ones(20)], np.r_[negatives, positives]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    widest = 1 / (1 + np.exp(-(logit(0.5) + logit(0.9)) / 2))
    assert choose(y, s, "plateau:0").threshold == pytest.approx(widest, abs=1e-12)
    # within 0.06 of the best (J >= 0.89), thresholds 0.905 (J 0.9) down to 0.45 (J 0.9) join
    below, top = negatives[-3], positives[2]  # the score under 0.45 (J 0.85 there); 0.905
    assert choose(y, s, "plateau:0.06").threshold == pytest.approx(
        1 / (1 + np.exp(-(logit(below) + logit(top)) / 2)), abs=1e-12)


def test_plateau_on_logits_is_the_arithmetic_middle():
    y, s = np.r_[np.zeros(10), np.ones(10)], np.r_[np.linspace(-9, -3, 10), np.linspace(5, 8, 10)]
    assert choose(y, s, "plateau:0").threshold == pytest.approx(1.0)


def test_margin_fixed_and_parse_errors():
    y, s = data()
    assert choose(y, s, "sensitivity:0.9+0.05").threshold == operating_point(y, s, "sensitivity", 0.95).threshold
    assert choose(y, s, "sensitivity:0.9+0.05").rule == "sensitivity:0.9+0.05"
    fixed = choose(y, s, "fixed:0.5")
    assert fixed.threshold == 0.5 and fixed.sensitivity == apply_threshold(y, s, 0.5)["sensitivity"]
    for bad, message in [("plateau:x", "not a number"), ("fixed", "needs a threshold"), ("youden:1", "no argument"),
                         ("sensitivity:1.5", "target in"), ("median", "must be one of"), ("fixed:nan", "finite"),
                         ("fixed:1.5", r"in \[0, 1\]"), ("fixed:-0.1", r"in \[0, 1\]"),
                         ("sensitivity:0.9+0.2", r"target \+ margin included"), ("sensitivity:0.9+-0.5", "not below 0"),
                         ("plateau:0.1+0.1", "one tolerance")]:
        with pytest.raises(ValueError, match=message):
            parse_rule(bad)


def test_balanced_cuts_at_the_training_prior_whatever_validation_says():
    y, s = data()
    assert choose(y, s, "balanced", prior=0.3).threshold == 0.3
    point = choose(y, s, "balanced")
    assert point.threshold == 0.5 and "unknown" in point.rule
    assert point.specificity == apply_threshold(y, s, 0.5)["specificity"]


def test_shift_mean_takes_the_cut_that_holds_on_the_shifted_copy_too():
    """By hand: clean validation is perfect for t in (0.3, 0.7], its shifted copy (normals pushed up) for t in
    (0.6, 0.75]; both for (0.6, 0.7], whose middle in logit space is 0.6516. `balanced` (0.5) loses 2 of the 3
    shifted normals."""
    y = np.array([0, 0, 0, 1, 1, 1])
    clean = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    shifted = [(y, np.array([0.4, 0.5, 0.6, 0.75, 0.85, 0.95]))]
    middle = 1 / (1 + np.exp(-(np.log(0.6 / 0.4) + np.log(0.7 / 0.3)) / 2))
    for rule in ("shift-mean", "shift-worst"):
        point = choose(y, clean, rule, shifted=shifted)
        assert point.threshold == pytest.approx(middle) and point.rule == rule
        assert (point.sensitivity, point.specificity) == (1.0, 1.0)
    assert apply_threshold(*shifted[0], 0.5)["specificity"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="needs the model"):
        choose(y, clean, "shift-mean")


def test_shift_mean_and_worst_are_the_best_mean_and_worst_balanced_accuracy_by_brute_force():
    rng = np.random.default_rng(5)
    y = (rng.random(60) < 0.6).astype(int)
    clean = np.clip(0.35 * y + 0.4 * rng.random(60), 0, 1)
    shifted = [(y, np.clip(clean + shift + 0.1 * rng.random(60), 0, 1)) for shift in (0.05, 0.15, 0.3)]

    def balanced(truth, scores, t):
        rates = apply_threshold(truth, scores, t)
        return (rates["sensitivity"] + rates["specificity"]) / 2

    grid = np.linspace(0, 1, 4001)
    conditions = [(y, clean), *shifted]
    for statistic, reduce in (("mean", np.mean), ("worst", np.min)):
        best = max(reduce([balanced(t_, s, g) for t_, s in conditions]) for g in grid)
        point = choose(y, clean, f"shift-{statistic}", shifted=shifted)
        assert reduce([balanced(t_, s, point.threshold) for t_, s in conditions]) == pytest.approx(best)
    assert choose(y, clean, "shift-worst", shifted=shifted).threshold != choose(y, clean, "shift-mean",
                                                                                 shifted=shifted).threshold
