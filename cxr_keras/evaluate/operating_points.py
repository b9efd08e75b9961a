"""The operating-point table behind report.html's threshold slider: for each finding of a binary or multi-label
evaluation, the confusion counts at every threshold the slider can take, with bootstrap intervals of sensitivity
and specificity, and the ROC and PR curves to mark the point on. Saved in metrics.json (`operating_points`), so
the page shows numbers that can be checked against the file and against scikit-learn.

Decisions are `score >= threshold`, as everywhere in the toolkit (`metrics.predictions`).
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from cxr_keras.evaluate.metrics import as_columns, bootstrap_weights, confusion_counts, interval, rates

MAX_POINTS = 201  # slider positions per finding: every distinct score up to this many, else evenly spaced ranks
CURVE_POINTS = 300  # points kept of each ROC / PR curve drawn on the page


def operating_points(task: str, classes: list[str], y_true: np.ndarray, scores: np.ndarray,
                     threshold: float | list[float], positive_index: int = 1, resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict | None:
    """{finding: table} for binary and multi-label data whose findings have both classes; None for multi-class
    data (decided by arg-max: there is no threshold to move). Each table: `threshold` (increasing), `tp`, `fp`,
    `tn`, `fn`, `sensitivity`, `specificity`, their intervals (`sensitivity_ci`, `specificity_ci`: [low, high]
    or None), `chosen` (the threshold in use; always one of the slider's points), `prevalence`, `roc` and `pr`."""
    if task == "multiclass":
        return None
    y, s = as_columns(task, y_true, scores)
    names = [classes[positive_index]] if task == "binary" else list(classes)
    cuts = np.broadcast_to(np.asarray(threshold, dtype=float).reshape(-1), (s.shape[1],))
    tables = {}
    for k, name in enumerate(names):
        if 0 < y[:, k].sum() < len(y):
            tables[name] = finding_table(y[:, k], s[:, k], float(cuts[k]), resamples, seed, level)
    return tables or None


def slider_thresholds(scores: np.ndarray, chosen: float, max_points: int = MAX_POINTS) -> np.ndarray:
    """The thresholds a slider offers: every distinct score (each changes one decision), thinned to evenly spaced
    ranks past `max_points`, plus the chosen threshold itself and one just above the highest score; increasing."""
    distinct = np.unique(np.asarray(scores, dtype=float))
    if len(distinct) > max_points - 2:
        distinct = distinct[np.unique(np.linspace(0, len(distinct) - 1, max_points - 2).round().astype(int))]
    above = np.nextafter(distinct[-1], np.inf)  # the last position decides nothing positive: specificity 1
    return np.unique(np.append(distinct, [chosen, above]))


def finding_table(y: np.ndarray, s: np.ndarray, chosen: float, resamples: int, seed: int, level: float) -> dict:
    """The operating-point table of one finding (see `operating_points`)."""
    thresholds = slider_thresholds(s, chosen)
    truth = np.repeat(y.reshape(-1, 1), len(thresholds), axis=1)
    decided = (s.reshape(-1, 1) >= thresholds.reshape(1, -1)).astype(float)
    counts = confusion_counts(truth, decided)
    point = rates(counts)
    w = bootstrap_weights(len(y), resamples, seed)  # the resamples of metrics.json's intervals: equal at `chosen`
    resampled = rates(confusion_counts(truth, decided, w))
    fpr, tpr, _ = skm.roc_curve(y, s)
    precision, recall, _ = skm.precision_recall_curve(y, s)
    return {
        "threshold": thresholds.tolist(), "chosen": chosen, "prevalence": float(y.mean()), "n_images": int(len(y)),
        **{key: counts[key].astype(int).tolist() for key in ("tp", "fp", "tn", "fn")},
        "sensitivity": point["sensitivity"].tolist(), "specificity": point["specificity"].tolist(),
        "sensitivity_ci": [interval(resampled["sensitivity"][:, g], level) for g in range(len(thresholds))],
        "specificity_ci": [interval(resampled["specificity"][:, g], level) for g in range(len(thresholds))],
        "roc": _thin({"fpr": fpr, "tpr": tpr}), "pr": _thin({"recall": recall, "precision": precision}),
    }


def _thin(curve: dict[str, np.ndarray], points: int = CURVE_POINTS) -> dict[str, list[float]]:
    """A curve with at most `points` points (evenly spaced along it, both ends kept), rounded for the page."""
    n = len(next(iter(curve.values())))
    keep = np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(int))
    return {key: np.round(values[keep], 5).tolist() for key, values in curve.items()}
