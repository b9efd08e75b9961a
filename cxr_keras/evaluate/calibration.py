"""Fitting probability calibration on validation scores (the layer that applies it is models/calibration.py).

Platt scaling fits sigmoid(a * logit(p) + b) per sigmoid output by logistic regression with Platt's (1999)
smoothed targets, (N+ + 1) / (N+ + 2) for positives and 1 / (N- + 2) for negatives: on a near-separable
validation set the plain maximum-likelihood slope runs off to infinity, the smoothed one stays finite.
Temperature scaling fits the slope alone (b = 0); for softmax outputs it is the only method.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

from cxr_keras.choices import CALIBRATION_METHODS

if TYPE_CHECKING:  # annotations only: fitting calibration needs no Keras
    import keras

    from cxr_keras.models.contract import ModelSpec
from cxr_keras.models.calibration import EPSILON

METHODS = CALIBRATION_METHODS


def fit_calibration(y: np.ndarray, scores: np.ndarray, method: str, exclusive: bool = False) -> dict:
    """{'method', 'slope': [..], 'intercept': [..], 'exclusive'} fitted on (validation) truth and probabilities.

    y, scores: (N,) or (N, K); exclusive: the K columns are one softmax (multi-class)."""
    if method not in METHODS:
        raise ValueError(f"--calibrate must be one of {', '.join(METHODS)}, got {method!r}")
    y2 = np.asarray(y, dtype=float).reshape(len(y), -1)
    s2 = np.clip(np.asarray(scores, dtype=float).reshape(len(scores), -1), EPSILON, 1 - EPSILON)
    if exclusive:
        if method != "temperature":
            raise ValueError("a multi-class (softmax) model is calibrated with --calibrate temperature")
        slope = _softmax_temperature(y2, s2)
        return {"method": method, "slope": [slope], "intercept": [0.0], "exclusive": True}
    fits = [_platt(y2[:, k], s2[:, k], intercept=method == "platt") for k in range(y2.shape[1])]
    return {"method": method, "slope": [a for a, _ in fits], "intercept": [b for _, b in fits], "exclusive": False}


def apply_calibration(scores: np.ndarray, params: dict) -> np.ndarray:
    """What the Calibration layer computes, in numpy (for scores already predicted)."""
    s = np.clip(np.asarray(scores, dtype=float), EPSILON, 1 - EPSILON)
    slope, intercept = np.asarray(params["slope"]), np.asarray(params["intercept"])
    if params.get("exclusive"):
        z = slope * np.log(s)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if s.ndim == 1:
        slope, intercept = slope[0], intercept[0]
    return 1 / (1 + np.exp(-(slope * np.log(s / (1 - s)) + intercept)))


def _platt(y: np.ndarray, p: np.ndarray, intercept: bool) -> tuple[float, float]:
    positives, negatives = y.sum(), len(y) - y.sum()
    if positives == 0 or negatives == 0:
        raise ValueError("calibration needs both positive and negative validation examples in every output")
    target = np.where(y > 0.5, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    logit = np.log(p / (1 - p))[:, None]
    # each example twice, as a positive weighted by its target and as a negative by the rest: soft targets
    x, labels = np.vstack([logit, logit]), np.r_[np.ones(len(y)), np.zeros(len(y))]
    weights = np.r_[target, 1 - target]
    model = LogisticRegression(C=np.inf, fit_intercept=intercept, max_iter=1000, tol=1e-10)
    model.fit(x, labels, sample_weight=weights)
    return float(model.coef_[0, 0]), float(model.intercept_[0]) if intercept else 0.0


def _softmax_temperature(y: np.ndarray, p: np.ndarray) -> float:
    log_p, truth = np.log(p), y.argmax(axis=1)

    def nll(slope: float) -> float:
        z = slope * log_p
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(z)), truth] - np.log(np.exp(z).sum(axis=1))).mean())

    return float(minimize_scalar(nll, bounds=(0.01, 100.0), method="bounded").x)


def calibrate_model(model_path: str, model: keras.Model, metadata: dict, spec: ModelSpec, y_val: np.ndarray,
                    paths: list[str], method: str, batch_size: int) -> tuple[keras.Model, np.ndarray]:
    """Fit calibration on the uncalibrated model's validation scores, save the calibrated model over
    `model_path` (atomically, metadata with it) and return it with its validation scores."""
    from cxr_keras.evaluate.inference import predict_scores
    from cxr_keras.models.calibration import strip_calibration, with_calibration
    from cxr_keras.models.saving import save_model

    base = strip_calibration(model)
    raw = predict_scores(base, paths, spec, batch_size)
    exclusive = spec.task == "multiclass"
    params = fit_calibration(y_val, raw, method, exclusive=exclusive)
    if spec.task == "binary" and base.output_shape[-1] != 1:
        raise ValueError("calibration of a binary model with two outputs is not supported; its run has one")
    calibrated = with_calibration(base, params["slope"], params["intercept"], exclusive)
    metadata["calibration"] = {**params, "fitted_on": f"validation ({len(paths)} images)"}
    save_model(calibrated, model_path, metadata)
    return calibrated, apply_calibration(raw, params)
