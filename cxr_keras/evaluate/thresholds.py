"""Threshold sweeps and operating points for a binary output (or one multi-label finding).

A threshold is chosen on validation data by a stated rule and then applied unchanged to test data; the rule
and the value travel with the model (best.json, model card).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.metrics import roc_curve

RULES = ("youden", "f1", "sensitivity", "specificity")


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


def operating_point(y_true: np.ndarray, scores: np.ndarray, rule: str = "youden", target: float | None = None
                    ) -> OperatingPoint:
    """Choose a threshold on (validation) data.

    youden: max sensitivity + specificity - 1. f1: max F1. sensitivity: the highest threshold whose
    sensitivity reaches `target` (so the least specificity is given up; 0.95 is a screening default).
    specificity: the lowest threshold whose specificity reaches `target` (the most sensitivity kept).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    table = sweep(y_true, scores)
    if rule in ("sensitivity", "specificity"):
        if target is None or not 0 < target <= 1:
            raise ValueError(f"rule {rule} needs a target in (0, 1], e.g. 0.95")
        reaching = np.flatnonzero(table[rule] >= target)
        index = reaching[0] if rule == "sensitivity" else reaching[-1]  # thresholds decrease along the sweep
    else:
        index = int(np.argmax(table["youden_j" if rule == "youden" else "f1"]))
    label = f"{rule}>={target:g}" if target is not None and rule in ("sensitivity", "specificity") else rule
    return OperatingPoint(threshold=float(table["threshold"][index]), rule=label,
                          **{k: float(table[k][index]) for k in ("sensitivity", "specificity", "ppv", "npv", "f1",
                                                                  "youden_j")})


def apply_threshold(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV and F1 of a fixed threshold on other (test) data."""
    y = np.asarray(y_true, dtype=float).ravel() > 0.5
    decided = np.asarray(scores, dtype=float).ravel() >= threshold
    tp, fp = np.sum(decided & y), np.sum(decided & ~y)
    fn, tn = np.sum(~decided & y), np.sum(~decided & ~y)
    safe = lambda a, b: float(a / b) if b else 0.0  # noqa: E731
    return {"threshold": float(threshold), "sensitivity": safe(tp, tp + fn), "specificity": safe(tn, tn + fp),
            "ppv": safe(tp, tp + fp), "npv": safe(tn, tn + fn), "f1": safe(2 * tp, 2 * tp + fp + fn)}
