"""Probability calibration: fitted parameters checked by hand and by brute force; the layer computes what numpy
does and survives saving."""

import keras
import numpy as np
import pytest

from cxr_keras.evaluate.calibration import apply_calibration, fit_calibration
from cxr_keras.models.calibration import Calibration, strip_calibration, with_calibration
from cxr_keras.models.saving import load_model, save_model

sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
logit = lambda p: np.log(p / (1 - p))  # noqa: E731


def test_platt_on_two_score_values_fits_the_smoothed_rates_exactly():
    # 10 images at logit -1 (2 positive), 10 at logit +1 (7 positive): with two x values the logistic fit passes
    # through each value's mean target, Platt's targets being 10/11 for positives and 1/13 for negatives
    p = sigmoid(np.r_[-np.ones(10), np.ones(10)])
    y = np.r_[np.ones(2), np.zeros(8), np.ones(7), np.zeros(3)]
    t_pos, t_neg = (9 + 1) / (9 + 2), 1 / (11 + 2)
    low, high = (2 * t_pos + 8 * t_neg) / 10, (7 * t_pos + 3 * t_neg) / 10
    params = fit_calibration(y, p, "platt")
    assert params["slope"][0] == pytest.approx((logit(high) - logit(low)) / 2, abs=1e-5)
    assert params["intercept"][0] == pytest.approx((logit(high) + logit(low)) / 2, abs=1e-5)


def smoothed_log_loss(y, p, slope, intercept=0.0):
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    q = sigmoid(slope * logit(p) + intercept)
    return -np.mean(t * np.log(q) + (1 - t) * np.log(1 - q))


def test_temperature_minimises_the_smoothed_log_loss_over_a_grid():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    p = sigmoid(4 * (y - 0.5) + rng.normal(0, 1.5, 300))  # over-confident scores
    params = fit_calibration(y, p, "temperature")
    grid = np.linspace(0.05, 3, 5901)
    best = grid[np.argmin([smoothed_log_loss(y, p, a) for a in grid])]
    assert params["intercept"] == [0.0] and params["slope"][0] == pytest.approx(best, abs=1e-3)


def test_softmax_temperature_minimises_the_log_loss_over_a_grid():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 200)
    z = 3 * np.eye(3)[truth] + rng.normal(0, 2, (200, 3))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    params = fit_calibration(np.eye(3)[truth], p, "temperature", exclusive=True)

    def nll(a):
        q = apply_calibration(p, {"slope": [a], "intercept": [0.0], "exclusive": True})
        return -np.mean(np.log(q[np.arange(200), truth]))

    grid = np.linspace(0.05, 3, 5901)
    assert params["slope"][0] == pytest.approx(grid[np.argmin([nll(a) for a in grid])], abs=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        fit_calibration(np.eye(3)[truth], p, "platt", exclusive=True)


def test_multilabel_fits_each_finding_and_refuses_a_finding_without_negatives():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (100, 2)).astype(float)
    p = sigmoid(np.c_[2 * (y[:, 0] - 0.5), 6 * (y[:, 1] - 0.5)] + rng.normal(0, 1, (100, 2)))
    params = fit_calibration(y, p, "platt")
    for k in range(2):
        alone = fit_calibration(y[:, k], p[:, k], "platt")
        assert params["slope"][k] == pytest.approx(alone["slope"][0]) and params["intercept"][k] == pytest.approx(
            alone["intercept"][0])
    y[:, 1] = 1
    with pytest.raises(ValueError, match="both positive and negative"):
        fit_calibration(y, p, "platt")


@pytest.mark.parametrize("exclusive", [False, True])
def test_the_layer_computes_what_numpy_does_and_survives_saving(tmp_path, exclusive):
    units = 3
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(units, activation="softmax" if exclusive else "sigmoid")(inputs)
    model = keras.Model(inputs, outputs)
    params = {"slope": [0.7] if exclusive else [0.5, 1.5, 2.0], "intercept": [0.0] if exclusive else [0.3, -1, 0],
              "exclusive": exclusive}
    calibrated = with_calibration(model, params["slope"], params["intercept"], exclusive)
    x = np.random.default_rng(3).normal(size=(8, 4)).astype("float32")
    raw = model.predict(x, verbose=0)
    np.testing.assert_allclose(calibrated.predict(x, verbose=0), apply_calibration(raw, params), atol=1e-5)
    save_model(calibrated, str(tmp_path / "m.keras"), {"task": "multilabel", "classes": [f"f{k}" for k in range(4)]})
    again, _ = load_model(str(tmp_path / "m.keras"), compile=False)
    assert isinstance(again.layers[-1], Calibration)
    plain = keras.saving.load_model(str(tmp_path / "m.keras"), compile=False)  # cxr_keras.models is imported
    np.testing.assert_allclose(plain.predict(x, verbose=0), calibrated.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(again.predict(x, verbose=0), calibrated.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(strip_calibration(again).predict(x, verbose=0), raw, atol=1e-6)
    twice = with_calibration(again, params["slope"], params["intercept"], exclusive)  # replaces, never stacks
    assert sum(isinstance(layer, Calibration) for layer in twice.layers) == 1
