"""Fitting the out-of-distribution score (models/ood.py) of a run's model: class means and a shared,
Ledoit-Wolf-shrunk covariance of the pooled features of training films, and a threshold that flags at most
FALSE_FLAG_RATE of validation films. Written into best.keras (the statistics are weights) and best.json
(`ood`: threshold and how it was set), so exports and `cxr predict` carry both."""

from __future__ import annotations

import keras
import numpy as np

from cxr_keras.data.pipeline import make_dataset
from cxr_keras.models.contract import ModelSpec, feed

FIT_COUNT = 1200  # training films the statistics are fitted on, evenly spaced (the features are 1,280 wide)
FALSE_FLAG_RATE = 0.05


def fit_statistics(features: np.ndarray, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(class means (C, D), L with precision = L L') of (N, D) features, one mean per group (class) and one
    covariance of the features centred on their own group's mean. Ledoit-Wolf shrinkage (scikit-learn) keeps
    the covariance invertible when films are not many times more than features."""
    from sklearn.covariance import LedoitWolf

    features = np.asarray(features, dtype=np.float64)
    groups = np.zeros(len(features), dtype=int) if groups is None else np.asarray(groups)
    names = np.unique(groups)
    means = np.stack([features[groups == g].mean(axis=0) for g in names])
    centred = features - means[np.searchsorted(names, groups)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    return means, np.linalg.cholesky((precision + precision.T) / 2)


def threshold_for(scores: np.ndarray, rate: float = FALSE_FLAG_RATE) -> float:
    """The smallest cut that flags (score > cut) at most `rate` of `scores`."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    return float(ordered[len(ordered) - 1 - int(np.floor(rate * len(ordered) + 1e-9))])


def features_of(model: keras.Model, paths: list[str], spec: ModelSpec, batch_size: int) -> np.ndarray:
    """Pooled features (N, D) of image files, through `model` (a `models.ood.feature_model`)."""
    dataset = make_dataset(paths, np.zeros((len(paths), 1)), spec.image_size, batch_size, cache=None)
    return np.concatenate([np.asarray(model(feed(x, spec), training=False), dtype=np.float64) for x, _ in dataset])


def scores_and_ood(model: keras.Model, paths: list[str], spec: ModelSpec, batch_size: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (as `predict_scores` gives them) and (N,) out-of-distribution scores of image files, in one
    pass through a model with the score as its second output."""
    from cxr_keras.models.contract import to_scores
    from cxr_keras.models.ood import split_outputs

    dataset = make_dataset(paths, np.zeros((len(paths), 1)), spec.image_size, batch_size, cache=None)
    both = [split_outputs(model(feed(x, spec), training=False)) for x, _ in dataset]
    return (to_scores(np.concatenate([p for p, _ in both]).astype(np.float64), spec),
            np.concatenate([o for _, o in both]).astype(np.float64))


def fit_ood(model: keras.Model, spec: ModelSpec, train_paths: list[str], train_groups: np.ndarray | None,
            val_paths: list[str], batch_size: int = 32, count: int = FIT_COUNT
            ) -> tuple[keras.Model, dict, np.ndarray] | None:
    """`model` with the score as its second output, fitted on `count` training films and thresholded on
    validation, the `ood` record for its metadata and the validation films' scores; None for a model whose
    features cannot be found."""
    from cxr_keras.evaluate.stress import evenly_spaced
    from cxr_keras.models.ood import feature_model, with_ood

    features = feature_model(model)
    if features is None:
        return None
    chosen = evenly_spaced(len(train_paths), count)
    groups = None if train_groups is None else np.asarray(train_groups)[chosen]
    means, factor = fit_statistics(features_of(features, [train_paths[i] for i in chosen], spec, batch_size), groups)
    scored = with_ood(model, means, factor)
    val = scores_and_ood(scored, val_paths, spec, batch_size)[1]
    threshold = threshold_for(val)
    record = {"method": "mahalanobis", "features": "head_pool", "threshold": threshold,
              "fitted_on": f"{len(chosen)} training films, {len(means)} class mean(s), Ledoit-Wolf covariance",
              "threshold_on": f"validation ({len(val)} films): flags {np.mean(val > threshold):.3f} of them "
                              f"(at most {FALSE_FLAG_RATE:.0%})"}
    return scored, record, val
