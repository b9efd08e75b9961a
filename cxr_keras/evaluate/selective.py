"""Selective prediction: what the toolkit's decisions are worth on the films it keeps when it abstains on the
ones it doubts most, by its own confidence or by the out-of-distribution score (a risk-coverage curve)."""

from __future__ import annotations

import numpy as np

COVERAGES = tuple(round(1 - 0.05 * k, 2) for k in range(11))  # 1.00, 0.95, ..., 0.50


def doubt_by_confidence(scores: np.ndarray, threshold: float | None, task: str) -> np.ndarray:
    """Higher for a less confident decision: binary, closeness of the logit to the threshold's logit;
    multi-class, 1 - the top probability."""
    if task == "multiclass":
        return 1 - np.max(scores, axis=1)
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    t = float(np.clip(threshold, 1e-7, 1 - 1e-7))
    return -np.abs(np.log(p / (1 - p)) - np.log(t / (1 - t)))


def correct_decisions(y: np.ndarray, scores: np.ndarray, threshold: float | None, task: str) -> np.ndarray:
    """Per film: does the decision at `threshold` (arg-max for multi-class) match the label?"""
    if task == "multiclass":
        return np.argmax(scores, axis=1) == np.argmax(y, axis=1)
    return (np.asarray(scores) >= threshold) == (np.asarray(y) > 0.5)


def risk_coverage(y: np.ndarray, scores: np.ndarray, threshold: float | None, task: str, doubt: np.ndarray,
                  coverages: tuple[float, ...] = COVERAGES) -> dict:
    """Accuracy (and, binary, sensitivity and specificity) of the films kept at each coverage when the least
    trusted by `doubt` (higher: abstain first) are set aside; ties broken by film order."""
    correct = correct_decisions(y, scores, threshold, task)
    order = np.argsort(-np.asarray(doubt, dtype=np.float64), kind="stable")  # most doubtful first
    n = len(correct)
    curve = {"coverage": list(coverages), "kept": [], "accuracy": []}
    if task == "binary":
        curve.update(sensitivity=[], specificity=[])
    for coverage in coverages:
        kept = np.sort(order[n - int(round(coverage * n)):])
        curve["kept"].append(int(len(kept)))
        curve["accuracy"].append(float(correct[kept].mean()) if len(kept) else None)
        if task == "binary":
            positive = np.asarray(y)[kept] > 0.5
            curve["sensitivity"].append(float(correct[kept][positive].mean()) if positive.any() else None)
            curve["specificity"].append(float(correct[kept][~positive].mean()) if (~positive).any() else None)
    return curve
