"""Class balance: Keras class weights, per-label positive weights (for `models.losses`), prior-based output bias,
which of them a run's `train.balance` asks for (`loss_weighting`), and the positive rate its loss sees
(`training_prior`, where the `balanced` threshold rule cuts)."""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from cxr_keras.config import ExperimentConfig
from cxr_keras.data.table import ImageTable


class BalanceError(ValueError):
    """A split lacks a class or label, so it cannot be weighted or evaluated."""


def _require_every_class(counts: np.ndarray, classes: list[str], what: str) -> None:
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise BalanceError(f"{what} has no examples of {empty}: re-split (another seed or ratios) or drop the class")


def class_weights(targets: np.ndarray, classes: list[str]) -> dict[int, float]:
    """Inverse-frequency weights n / (k * n_c), as Keras' `fit(class_weight=...)` takes them.

    `targets` is (N, 1) 0/1 for binary data (keys 0 and 1) or one-hot (N, K) for multi-class data.
    """
    index = targets[:, 0].astype(int) if targets.shape[1] == 1 else targets.argmax(axis=1)
    present = np.arange(max(2, targets.shape[1]))
    _require_every_class(np.bincount(index, minlength=len(present)), classes, "the training split")
    weights = compute_class_weight("balanced", classes=present, y=index)
    return {int(k): float(w) for k, w in zip(present, weights)}


def positive_weights(targets: np.ndarray, classes: list[str], max_weight: float | None = None) -> np.ndarray:
    """Per-label n_negative / n_positive for multi-label targets (N, K), optionally capped at `max_weight`."""
    positives = targets.sum(axis=0)
    _require_every_class(positives, classes, "the training split (as positives)")
    weights = (len(targets) - positives) / positives
    return np.minimum(weights, max_weight) if max_weight else weights


def initial_bias(targets: np.ndarray, task: str, weight: np.ndarray | None = None) -> np.ndarray:
    """Output-layer bias that makes the untrained model predict the class priors the loss sees.

    Sigmoid outputs (binary, multi-label): log(w p / (1 - p)) per output, where `w` weighs positives against
    negatives (1 without weighting: the plain prior); softmax: log(w_c p_c) per class.
    """
    prior = np.clip(targets.mean(axis=0), 1e-6, 1 - 1e-6)
    weight = np.ones_like(prior) if weight is None else np.asarray(weight, dtype=float)
    return np.log(weight * prior) if task == "multiclass" else np.log(weight * prior / (1 - prior))


def loss_weighting(config: ExperimentConfig, table: ImageTable) -> dict:
    """{"class_weight": {...}} or {"pos_weight": array} or {} per `train.balance` (auto: by task)."""
    balance = config.train.balance
    if balance not in ("auto", "none", "class_weight", "pos_weight"):
        raise BalanceError(f"train.balance must be auto, none, class_weight or pos_weight, got {balance!r}")
    if balance == "none":
        return {}
    targets = table.split("train").targets()
    if table.task == "multilabel":
        if balance == "class_weight":
            raise BalanceError("Keras' class_weight does not apply to multi-label targets: use balance pos_weight")
        return {"pos_weight": positive_weights(targets, table.classes, config.train.max_pos_weight)}
    if balance == "pos_weight":
        raise BalanceError(f"balance pos_weight is for multi-label data; this data is {table.task}: use class_weight")
    return {"class_weight": class_weights(targets, table.classes)}


def positive_weight(weighting: dict, task: str, n_outputs: int) -> np.ndarray | None:
    if "pos_weight" in weighting:
        return np.asarray(weighting["pos_weight"])
    if "class_weight" in weighting:
        w = weighting["class_weight"]
        return np.array([w[1] / w[0]]) if task == "binary" else np.array([w[k] for k in range(n_outputs)])
    return None


def training_prior(config: ExperimentConfig, table: ImageTable, weighting: dict | None = None) -> list[float] | None:
    """Per sigmoid output, the positive rate the weighted training loss saw (0.5 under balanced class weights;
    the plain training prevalence without weighting): where the `balanced` threshold rule cuts. None for
    multi-class models."""
    if table.task == "multiclass":
        return None
    weighting = loss_weighting(config, table) if weighting is None else weighting
    targets = table.split("train").targets()
    bias = initial_bias(targets, table.task, positive_weight(weighting, table.task, targets.shape[1]))
    return [float(v) for v in 1 / (1 + np.exp(-bias))]
