"""Classification metrics for binary, multi-class and multi-label chest X-ray models, with bootstrap CIs.

Point estimates come from scikit-learn. Confidence intervals are a seeded bootstrap done as weights: each of the
B resamples is a row of multinomial counts over the N images, so every resampled confusion count is one
matrix product and every resampled ROC-AUC one pass over the score-sorted images (weighted Mann-Whitney). That
vectorised form is written here because scikit-learn has no bootstrap and a Python loop of 1,000 `roc_auc_score`
calls is slow on large test sets.

Shapes: `y_true` and `scores` are (N,) or (N, 1) for binary data (scores = probability of the positive class),
(N, K) one-hot / probabilities for multi-class data, (N, K) multi-hot / probabilities for multi-label data.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

DEFAULT_RESAMPLES = 1000


def as_columns(task: str, y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C) 0/1 truth and scores, one column per class (binary: one column, the positive class)."""
    y, s = np.asarray(y_true, dtype=float), np.asarray(scores, dtype=float)
    if task == "binary":
        return y.reshape(-1, 1), s.reshape(-1, 1)
    if task == "multiclass" and y.ndim == 1:
        y = np.eye(s.shape[1])[y.astype(int)]
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} do not match for {task} data")
    return y, s


def predictions(task: str, scores: np.ndarray, threshold: float | np.ndarray = 0.5) -> np.ndarray:
    """0/1 decisions per column: score >= threshold (binary, multi-label), or the arg-max class (multi-class)."""
    s = np.asarray(scores, dtype=float)
    if task == "multiclass":
        return np.eye(s.shape[1])[s.argmax(axis=1)]
    return (s.reshape(len(s), -1) >= np.asarray(threshold)).astype(float)


def confusion_counts(y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """tp, fp, fn, tn per column of (N, C) 0/1 arrays; with (B, N) `weights`, per resample: (B, C) each."""
    w = np.ones((1, len(y))) if weights is None else np.asarray(weights, dtype=float)
    counts = {"tp": w @ (y * pred), "fp": w @ ((1 - y) * pred), "fn": w @ (y * (1 - pred)),
              "tn": w @ ((1 - y) * (1 - pred))}
    return {k: v[0] for k, v in counts.items()} if weights is None else counts


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0 convention)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def rates(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sensitivity (recall), specificity, precision (PPV), NPV and F1 from confusion counts."""
    tp, fp, fn, tn = (counts[k] for k in ("tp", "fp", "fn", "tn"))
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp), "precision": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def weighted_auc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of one column under each row of (B, N) sample weights: (B,), NaN where a class is absent.

    AUC = sum over positives i and negatives j of w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W+ W-), the
    weighted Mann-Whitney statistic, which equals `roc_auc_score(..., sample_weight=w)` (tested).
    """
    order = np.argsort(s, kind="mergesort")
    s_sorted, positive = s[order], y[order] > 0.5
    w = np.asarray(weights, dtype=float)[:, order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # groups of tied scores
    pos = np.add.reduceat(w * positive, starts, axis=1)
    neg = np.add.reduceat(w * ~positive, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)


def bootstrap_weights(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) multinomial counts: how often each image is drawn in each bootstrap resample."""
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)


def interval(values: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Percentile interval of bootstrap values (NaNs from resamples that lack a class are left out)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return None
    alpha = (1 - level) / 2
    return [float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[float, dict]:
    """ECE over `bins` equal-width confidence bins, and the reliability curve (per non-empty bin: mean
    confidence, observed frequency, count). `y` and `p` are 1-D: outcomes 0/1 and predicted probabilities."""
    y, p = np.asarray(y, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    confidence = _ratio(np.bincount(index, weights=p, minlength=bins), count)
    frequency = _ratio(np.bincount(index, weights=y, minlength=bins), count)
    ece = float(np.sum(count / len(p) * np.abs(frequency - confidence)))
    keep = count > 0
    curve = {"confidence": confidence[keep].tolist(), "frequency": frequency[keep].tolist(),
             "count": count[keep].tolist()}
    return ece, curve


def evaluate_scores(task: str, classes: list[str], y_true: np.ndarray, scores: np.ndarray,
                    threshold: float | list[float] = 0.5, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                    level: float = 0.95, positive_index: int = 1) -> dict:
    """Every metric of the metrics.json schema (docs/metrics.md) for one set of predictions.

    Binary data: `scores` are probabilities of `classes[positive_index]`; sensitivity, specificity and the
    CIs are of that class, and `per_class` lists both classes.
    """
    y, s = as_columns(task, y_true, scores)
    pred = predictions(task, s, threshold)
    result: dict = {"task": task, "classes": list(classes), "n_images": int(len(y)),
                    "threshold": threshold if np.isscalar(threshold) else list(threshold)}
    if task == "binary":
        result["positive_class"] = classes[positive_index]
        order = [1 - positive_index, positive_index]  # columns (negative, positive) put back in class order
        y2, s2, p2 = (np.hstack([1 - a, a])[:, np.argsort(order)] for a in (y, s, pred))
        result["per_class"] = _per_class(classes, y2, s2, p2)
    else:
        result["per_class"] = _per_class(classes, y, s, pred)
    auc = np.array([_safe(skm.roc_auc_score, y[:, k], s[:, k]) for k in range(y.shape[1])])
    pr_auc = np.array([_safe(skm.average_precision_score, y[:, k], s[:, k]) for k in range(y.shape[1])])
    result.update(_summary(task, y, s, pred, auc, pr_auc))
    if task == "binary":
        result["averages"] = _averages(y2, p2)  # over both classes, as scikit-learn's average= does
    result["ci"] = _bootstrap(task, y, s, pred, resamples, seed, level)
    result["ci"]["resamples"], result["ci"]["level"], result["ci"]["seed"] = resamples, level, seed
    if task == "binary":  # a rate of a class the data lacks is undefined, not 0
        for key, missing in (("sensitivity", y.sum() == 0), ("specificity", y.sum() == len(y))):
            if missing:
                result[key], result["ci"][key] = None, None
    return result


def _per_class(classes: list[str], y: np.ndarray, s: np.ndarray, pred: np.ndarray) -> dict:
    per_column = rates(confusion_counts(y, pred))
    support = y.sum(axis=0)
    return {
        name: {"precision": float(per_column["precision"][k]), "recall": float(per_column["sensitivity"][k]),
               "sensitivity": float(per_column["sensitivity"][k]),
               "specificity": float(per_column["specificity"][k]), "f1": float(per_column["f1"][k]),
               "npv": float(per_column["npv"][k]), "support": int(support[k]),
               "roc_auc": _float(_safe(skm.roc_auc_score, y[:, k], s[:, k])),
               "pr_auc": _float(_safe(skm.average_precision_score, y[:, k], s[:, k]))}
        for k, name in enumerate(classes)}

def _safe(metric, y: np.ndarray, s: np.ndarray) -> float:
    return float(metric(y, s)) if 0 < y.sum() < len(y) else float("nan")


def _float(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _summary(task: str, y: np.ndarray, s: np.ndarray, pred: np.ndarray, auc: np.ndarray, pr_auc: np.ndarray) -> dict:
    out: dict = {}
    if task == "binary":
        t, p = y[:, 0], pred[:, 0]
        out["roc_auc"], out["pr_auc"] = _float(auc[0]), _float(pr_auc[0])
        out["accuracy"] = float(skm.accuracy_score(t, p))
        with warnings.catch_warnings():  # one class only (another dataset's normals): the mean recall of it
            warnings.simplefilter("ignore", UserWarning)
            out["balanced_accuracy"] = float(skm.balanced_accuracy_score(t, p))
        r = rates(confusion_counts(y, pred))
        out.update(sensitivity=float(r["sensitivity"][0]), specificity=float(r["specificity"][0]),
                   f1=float(r["f1"][0]), ppv=float(r["precision"][0]), npv=float(r["npv"][0]))
        out["confusion_matrix"] = skm.confusion_matrix(t, p, labels=[0, 1]).tolist()
        out["brier"] = float(skm.brier_score_loss(t, s[:, 0]))
        out["ece"], out["reliability"] = expected_calibration_error(t, s[:, 0])
    elif task == "multiclass":
        t, p = y.argmax(axis=1), pred.argmax(axis=1)
        out["roc_auc"] = _float(np.nanmean(auc)) if not np.isnan(auc).all() else None
        out["roc_auc_micro"] = float(skm.roc_auc_score(y, s, average="micro"))
        out["pr_auc"] = _float(np.nanmean(pr_auc))
        out["accuracy"] = float(skm.accuracy_score(t, p))
        out["balanced_accuracy"] = float(skm.balanced_accuracy_score(t, p))
        out["confusion_matrix"] = skm.confusion_matrix(t, p, labels=list(range(y.shape[1]))).tolist()
        out["brier"] = float(np.mean(np.sum((s - y) ** 2, axis=1)))
        confidence = s.max(axis=1)
        out["ece"], out["reliability"] = expected_calibration_error((t == p).astype(float), confidence)
    else:
        out["roc_auc"] = _float(np.nanmean(auc)) if not np.isnan(auc).all() else None
        out["roc_auc_micro"] = float(skm.roc_auc_score(y, s, average="micro"))
        out["pr_auc"] = _float(np.nanmean(pr_auc))
        out["accuracy"] = float(skm.accuracy_score(y, pred))  # exact match of the whole label set
        out["hamming_accuracy"] = float(np.mean(y == pred))
        out["confusion_matrix"] = skm.multilabel_confusion_matrix(y, pred).tolist()
        out["brier"] = float(np.mean((s - y) ** 2))
        out["ece"], out["reliability"] = expected_calibration_error(y.ravel(), s.ravel())
    out["averages"] = _averages(y, pred)
    return out


def _averages(y: np.ndarray, pred: np.ndarray) -> dict:
    """Macro, micro and support-weighted precision, recall, specificity and F1 over the columns."""
    per = rates(confusion_counts(y, pred))
    micro = rates({k: v.sum(keepdims=True) for k, v in confusion_counts(y, pred).items()})
    support = y.sum(axis=0)
    weights = support / support.sum() if support.sum() else np.full(len(support), 1 / len(support))
    keys = {"precision": "precision", "recall": "sensitivity", "specificity": "specificity", "f1": "f1"}
    return {
        "macro": {k: float(per[v].mean()) for k, v in keys.items()},
        "micro": {k: float(micro[v][0]) for k, v in keys.items()},
        "weighted": {k: float(np.sum(per[v] * weights)) for k, v in keys.items()},
    }


def _bootstrap(task: str, y: np.ndarray, s: np.ndarray, pred: np.ndarray, resamples: int, seed: int,
               level: float) -> dict:
    """Percentile intervals of ROC-AUC (binary; macro otherwise) and, per class, sensitivity, specificity, F1."""
    w = bootstrap_weights(len(y), resamples, seed)
    aucs = np.stack([weighted_auc(y[:, k], s[:, k], w) for k in range(y.shape[1])], axis=1)
    per = rates(confusion_counts(y, pred, w))
    out = {"roc_auc": interval(aucs[:, 0] if task == "binary" else np.nanmean(aucs, axis=1), level)}
    if task == "binary":
        for key in ("sensitivity", "specificity", "f1"):
            out[key] = interval(per[key][:, 0], level)
    out["per_class"] = [
        {"roc_auc": interval(aucs[:, k], level),
         **{key: interval(per[key][:, k], level) for key in ("sensitivity", "specificity", "f1")}}
        for k in range(y.shape[1])]
    return out


def summary_at_threshold(task: str, y: np.ndarray, scores: np.ndarray, threshold) -> dict:
    """Counts, ROC-AUC (macro over outputs with both classes) and, at the threshold(s), sensitivity, specificity
    and accuracy (multi-class: accuracy of the arg-max only); a rate without examples to count is None."""
    y2, s2 = y.reshape(len(y), -1), scores.reshape(len(scores), -1)
    counts = {"n_images": int(len(y2)), "n_positive": int((y2 > 0.5).any(axis=1).sum())}
    if task == "multiclass":
        truth, decided = y2.argmax(axis=1), s2.argmax(axis=1)
        present = [k for k in range(y2.shape[1]) if 0 < y2[:, k].mean() < 1]
        auc = float(np.mean([skm.roc_auc_score(y2[:, k], s2[:, k]) for k in present])) if present else None
        return {**counts, "roc_auc": auc, "accuracy": float(np.mean(truth == decided))}
    cut = np.broadcast_to(np.asarray(threshold, dtype=float).reshape(-1), (s2.shape[1],))
    decided, positive = s2 >= cut, y2 > 0.5
    columns = [k for k in range(y2.shape[1]) if 0 < positive[:, k].mean() < 1]
    mean = lambda values: float(np.mean(values)) if len(values) else None  # noqa: E731
    return {**counts, "roc_auc": mean([skm.roc_auc_score(positive[:, k], s2[:, k]) for k in columns]),
            "sensitivity": mean([decided[positive[:, k], k].mean() for k in range(s2.shape[1])
                                 if positive[:, k].any()]),
            "specificity": mean([(~decided[~positive[:, k], k]).mean() for k in range(s2.shape[1])
                                 if (~positive[:, k]).any()]),
            "accuracy": float(np.mean(decided == positive))}
