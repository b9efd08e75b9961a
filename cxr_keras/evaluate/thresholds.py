"""Threshold sweeps and operating points for a binary output (or one multi-label finding).

A threshold is chosen on validation data by a stated rule and then applied unchanged to test data; the rule
and the value travel with the model (best.json, model card).

Rules, as written on the command line (`RULE[:ARG]`):
  balanced        the positive rate the training loss saw (`training_prior` in the model's metadata): 0.5 for
                  a model trained with balanced class weights, the training prevalence without weighting; the
                  equal-cost decision on balanced classes. It takes nothing from validation, so validation's
                  near-separability cannot drag it to an extreme. The default: on the proxies for external data
                  it was best or tied (docs/results.md, "Thresholds that transfer").
  plateau[:TOL]   the middle (in logit space) of Youden's optimal plateau: the run of thresholds whose
                  sensitivity + specificity - 1 is within TOL (default 0.01) of its maximum.
  youden          max sensitivity + specificity - 1 (the plateau's first point reached from above).
  f1              max F1.
  sensitivity:T[+M]  the highest threshold whose sensitivity reaches T + M (M: a safety margin).
  specificity:T[+M]  the lowest threshold whose specificity reaches T + M.
  fixed:T         T itself (e.g. fixed:0.5 after calibrating the probabilities on validation).
  shift-mean      the threshold whose balanced accuracy, averaged over validation and its copies under the held-in
                  acquisition shifts (data/shifts.py, `shift_conditions`), is highest: a cut that also holds when
                  another scanner moves the scores. Needs the model (a run's evaluation scores the copies).
  shift-worst     the same, maximising the worst condition's balanced accuracy instead of the mean.
Where several thresholds tie, each rule that searches takes the middle (in logit space for probabilities) of the
widest run of tying thresholds, not its edge.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import roc_curve

from cxr_keras.choices import DEFAULT_RULE, THRESHOLD_RULES

if TYPE_CHECKING:  # annotations only: the rules need no Keras
    from cxr_keras.models.contract import ModelSpec

RULES = THRESHOLD_RULES
SHIFT_RULES = ("shift-mean", "shift-worst")
PLATEAU_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """A threshold (decide positive when score >= threshold), the rule that chose it and its rates there."""

    threshold: float
    rule: str
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    f1: float
    youden_j: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sweep(y_true: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV, F1 and Youden's J at every distinct score used as the threshold
    (scikit-learn's `roc_curve` without dropping points), thresholds in decreasing order."""
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.min() == y.max():
        raise ValueError("a threshold sweep needs both positive and negative examples")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    thresholds = np.minimum(thresholds, 1.0) if s.max() <= 1 else thresholds  # sklearn puts +inf first
    positives, negatives = y.sum(), len(y) - y.sum()
    tp, fp = tpr * positives, fpr * negatives
    fn, tn = positives - tp, negatives - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = np.where(tp + fp > 0, tp / (tp + fp), 0.0)  # undefined -> 0, as zero_division=0
        npv = np.where(tn + fn > 0, tn / (tn + fn), 0.0)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return {"threshold": thresholds, "sensitivity": tpr, "specificity": 1 - fpr, "ppv": ppv, "npv": npv,
            "f1": f1, "youden_j": tpr - fpr}


def parse_rule(text: str) -> tuple[str, float | None]:
    """'sensitivity:0.95+0.02' -> ('sensitivity', 0.97); 'plateau' -> ('plateau', None). One clear error else."""
    name, _, arg = text.partition(":")
    if name not in RULES:
        raise ValueError(f"threshold rule must be one of {', '.join(RULES)} (e.g. plateau, sensitivity:0.95+0.02),"
                         f" got {text!r}")
    try:
        parts = [float(part) for part in arg.split("+")] if arg else []
    except ValueError:
        raise ValueError(f"threshold rule {text!r}: {arg!r} is not a number (e.g. sensitivity:0.95+0.02)") from None
    if not all(np.isfinite(parts)) or any(p < 0 for p in parts[1:]) or len(parts) > 2:
        raise ValueError(f"threshold rule {text!r}: give finite numbers, and at most one margin, not below 0")
    value = sum(parts) if parts else None
    if name in ("sensitivity", "specificity") and (value is None or not 0 < value <= 1):
        raise ValueError(f"rule {name} needs a target in (0, 1] (target + margin included), e.g. {name}:0.95 "
                         f"(got {text!r})")
    if name == "fixed" and (value is None or not 0 <= value <= 1):
        raise ValueError(f"rule fixed needs a threshold in [0, 1], e.g. fixed:0.5 (got {text!r})")
    if name == "plateau" and len(parts) > 1:
        raise ValueError(f"rule plateau takes one tolerance, e.g. plateau:0.02 (got {text!r})")
    if name in ("youden", "f1", "balanced", *SHIFT_RULES) and value is not None:
        raise ValueError(f"rule {name} takes no argument (got {text!r})")
    return name, value


def choose(y_true: np.ndarray, scores: np.ndarray, rule: str = DEFAULT_RULE, prior: float | None = None,
           shifted: list[tuple[np.ndarray, np.ndarray]] | None = None) -> OperatingPoint:
    """An operating point on (validation) data from a rule as written on the command line; `prior` is the
    training prior the `balanced` rule cuts at (unknown: 0.5, and the rule's label says so); `shifted`, the
    (truth, scores) of validation's shifted copies that the shift rules also weigh."""
    name, value = parse_rule(rule)
    if name in SHIFT_RULES:
        if not shifted:
            raise ValueError(f"rule {name} weighs validation under acquisition shifts: it needs the model (use it "
                             "with cxr evaluate --run or cxr train)")
        return shift_robust(y_true, scores, shifted, name.split("-")[1], label=rule)
    if name == "balanced":
        label = f"balanced (prior {prior:.3g})" if prior is not None else "balanced (prior unknown: 0.5)"
        return _point_at(y_true, scores, 0.5 if prior is None else float(prior), label)
    if name == "plateau":
        return plateau_middle(y_true, scores, PLATEAU_TOLERANCE if value is None else value, label=rule)
    if name == "fixed":
        return _point_at(y_true, scores, value, rule)
    return operating_point(y_true, scores, name, value, label=rule if "+" in rule else None)


def operating_point(y_true: np.ndarray, scores: np.ndarray, rule: str = "youden", target: float | None = None,
                    label: str | None = None) -> OperatingPoint:
    """Choose a threshold that is one of the scores.

    youden: max sensitivity + specificity - 1. f1: max F1. sensitivity: the highest threshold whose
    sensitivity reaches `target` (so the least specificity is given up; 0.95 is a screening default).
    specificity: the lowest threshold whose specificity reaches `target` (the most sensitivity kept).
    """
    if rule not in ("youden", "f1", "sensitivity", "specificity"):
        raise ValueError(f"rule must be one of youden, f1, sensitivity, specificity, got {rule!r}")
    table = sweep(y_true, scores)
    if rule in ("sensitivity", "specificity"):
        if target is None or not 0 < target <= 1:
            raise ValueError(f"rule {rule} needs a target in (0, 1], e.g. 0.95")
        reaching = np.flatnonzero(table[rule] >= target - 1e-12)
        index = reaching[0] if rule == "sensitivity" else reaching[-1]  # thresholds decrease along the sweep
    else:
        index = int(np.argmax(table["youden_j" if rule == "youden" else "f1"]))
    label = label or (f"{rule}>={target:g}" if target is not None else rule)
    return OperatingPoint(threshold=float(table["threshold"][index]), rule=label,
                          **{k: float(table[k][index]) for k in ("sensitivity", "specificity", "ppv", "npv", "f1",
                                                                  "youden_j")})


def plateau_middle(y_true: np.ndarray, scores: np.ndarray, tolerance: float = PLATEAU_TOLERANCE,
                   label: str | None = None) -> OperatingPoint:
    """The middle of Youden's optimal plateau: of the intervals of thresholds whose J is within `tolerance` of
    the best, the widest that holds a best point, and its middle, taken in logit space for probabilities (an
    interval from 0.07 to 0.93 gives 0.5; one from 0.001 to 0.5 gives 0.03, not 0.25).

    A sweep threshold t_i makes the same decisions as every threshold in (t_(i+1), t_i], t_(i+1) being the next
    lower score, so on separable data (negatives <= 0.05 < 0.9 <= positives) the plateau is (0.05, 0.9], not the
    single point 0.9 that Youden's argmax returns."""
    if not 0 <= tolerance < 1:
        raise ValueError(f"plateau tolerance must be in [0, 1), got {tolerance}")
    table = sweep(y_true, scores)
    threshold = _middle_of_best(table["threshold"], table["youden_j"], np.asarray(scores, dtype=float), tolerance)
    return _point_at(y_true, scores, threshold, label or f"plateau middle (J within {tolerance:g} of best)")


def shift_robust(y_true: np.ndarray, scores: np.ndarray, shifted: list[tuple[np.ndarray, np.ndarray]],
                 statistic: str = "mean", label: str | None = None) -> OperatingPoint:
    """The threshold with the best mean (or worst-case) balanced accuracy over the conditions: (y_true, scores)
    itself and each (truth, scores) of `shifted`; the middle of the widest run of best thresholds. The
    operating point reported is the unshifted one's, at that threshold."""
    conditions = [(np.asarray(y_true, dtype=float).ravel() > 0.5, np.asarray(scores, dtype=float).ravel())]
    conditions += [(np.asarray(y, dtype=float).ravel() > 0.5, np.asarray(s, dtype=float).ravel()) for y, s in shifted]
    if any(y.all() or not y.any() for y, _ in conditions):
        raise ValueError("a shift-aware threshold needs positive and negative examples in every condition")
    every = np.concatenate([s for _, s in conditions])
    candidates = np.r_[np.inf, np.unique(every)[::-1]]  # decreasing, as a sweep: the first decides all negative
    balanced = np.array([_balanced_accuracy_at(candidates, y, s) for y, s in conditions])
    value = balanced.mean(axis=0) if statistic == "mean" else balanced.min(axis=0)
    threshold = _middle_of_best(candidates, value, every, 0.0)
    return _point_at(y_true, scores, threshold, label or f"shift-{statistic}")


def _balanced_accuracy_at(thresholds: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(sensitivity + specificity) / 2 of `score >= t` at each threshold t, by sorted search."""
    pos, neg = np.sort(scores[positive]), np.sort(scores[~positive])
    sensitivity = 1 - np.searchsorted(pos, thresholds, side="left") / len(pos)
    specificity = np.searchsorted(neg, thresholds, side="left") / len(neg)
    return (sensitivity + specificity) / 2


def _middle_of_best(thresholds: np.ndarray, values: np.ndarray, scores: np.ndarray, tolerance: float) -> float:
    """Of the runs of consecutive sweep thresholds (decreasing) whose value is within `tolerance` of the best,
    the widest that holds a best point, and its middle, in logit space for probabilities (an interval from 0.07 to
    0.93 gives 0.5; one from 0.001 to 0.5 gives 0.03, not 0.25). Threshold t_i decides as every threshold in
    (t_(i+1), t_i], so a run spans from the next lower threshold to its first."""
    probabilities = scores.min() >= 0 and scores.max() <= 1
    space = _logit if probabilities else (lambda v: np.asarray(v, dtype=float))
    thresholds = np.minimum(thresholds, scores.max())  # the first point (+inf or 1.0) decides nothing positive
    near = values >= values.max() - tolerance - 1e-12
    runs = np.split(np.arange(len(values)), np.flatnonzero(np.diff(near.astype(int))) + 1)
    runs = [r for r in runs if near[r[0]] and np.any(values[r] >= values.max() - 1e-12)]

    def ends(run: np.ndarray) -> tuple[float, float]:
        upper, below = thresholds[run[0]], run[-1] + 1
        lower = thresholds[below] if below < len(values) else thresholds[run[-1]]
        return float(space(lower)), float(space(upper))

    low, high = max((ends(r) for r in runs), key=lambda e: e[1] - e[0])
    middle = (low + high) / 2
    return float(1 / (1 + np.exp(-middle))) if probabilities else float(middle)


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _point_at(y_true: np.ndarray, scores: np.ndarray, threshold: float, rule: str) -> OperatingPoint:
    rates = apply_threshold(y_true, scores, threshold)
    return OperatingPoint(threshold=float(threshold), rule=rule, youden_j=rates["sensitivity"] +
                          rates["specificity"] - 1, **{k: rates[k] for k in ("sensitivity", "specificity", "ppv",
                                                                               "npv", "f1")})


def apply_threshold(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV and F1 of a fixed threshold on other (test) data."""
    y = np.asarray(y_true, dtype=float).ravel() > 0.5
    decided = np.asarray(scores, dtype=float).ravel() >= threshold
    tp, fp = np.sum(decided & y), np.sum(decided & ~y)
    fn, tn = np.sum(~decided & y), np.sum(~decided & ~y)
    safe = lambda a, b: float(a / b) if b else 0.0  # noqa: E731
    return {"threshold": float(threshold), "sensitivity": safe(tp, tp + fn), "specificity": safe(tn, tn + fp),
            "ppv": safe(tp, tp + fp), "npv": safe(tn, tn + fn), "f1": safe(2 * tp, 2 * tp + fp + fn)}


def choose_threshold(y: np.ndarray, scores: np.ndarray, rule: str, prior: float | None = None,
                     shifted: list[tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """An operating point on (validation) data from a rule such as 'balanced', 'youden' or 'sensitivity:0.95'."""
    return choose(y, scores, rule, prior, shifted).to_dict()


def choose_thresholds(spec: ModelSpec, y: np.ndarray, scores: np.ndarray, rule: str,
                      priors: list[float] | None = None, shifted: list[tuple[np.ndarray, np.ndarray]] | None = None
                      ) -> tuple[float | list, list]:
    """The model's threshold(s) by `rule` on validation: one for a binary model, one per finding for a multi-label
    one (a finding without both kinds of example keeps 0.5, and says so); returns (thresholds, points).
    `priors`: the training prior of each output, for the `balanced` rule; `shifted`: (truth, scores) of
    validation's shifted copies, for the shift rules."""
    prior = (lambda k: priors[k] if priors else None)  # noqa: E731
    column = (lambda k: [(t[:, k], s[:, k]) for t, s in shifted] if shifted else None)  # noqa: E731
    if spec.task == "binary":
        point = choose_threshold(y, scores, rule, prior(0), shifted)
        return point["threshold"], [point]
    points = []
    for k, name in enumerate(spec.classes):
        if y[:, k].min() == y[:, k].max() and not rule.startswith(("balanced", "fixed")):
            points.append({"class": name, "threshold": 0.5, "rule": "default 0.5: validation lacks positives or "
                                                                     "negatives of this finding"})
        else:
            points.append({"class": name, **choose_threshold(y[:, k], scores[:, k], rule, prior(k), column(k))})
    return [p["threshold"] for p in points], points
