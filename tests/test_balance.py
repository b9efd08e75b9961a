import keras
import numpy as np
import pytest

from cxr_keras.data.balance import class_weights, initial_bias, positive_weights
from cxr_keras.models.losses import WeightedBinaryCrossentropy


def test_binary_class_weights_by_hand():
    targets = np.array([[0], [0], [0], [1]])
    assert class_weights(targets, ["NORMAL", "PNEUMONIA"]) == pytest.approx({0: 4 / (2 * 3), 1: 4 / (2 * 1)})


def test_multiclass_class_weights_by_hand():
    targets = np.eye(3)[[0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2]]
    weights = class_weights(targets, ["a", "b", "c"])
    assert weights == pytest.approx({0: 12 / (3 * 4), 1: 12 / (3 * 2), 2: 12 / (3 * 6)})


def test_positive_weights_by_hand_and_cap():
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 1], [1, 0]])
    np.testing.assert_allclose(positive_weights(targets, ["a", "b"]), [2 / 3, 4 / 1])
    np.testing.assert_allclose(positive_weights(targets, ["a", "b"], max_weight=3), [2 / 3, 3])


def test_weighted_bce_matches_hand_computation_and_keras():
    y = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    p = np.array([[0.9, 0.2, 0.3], [0.4, 0.6, 0.1]], np.float32)
    w = np.array([2.0, 1.0, 5.0])
    expected = -np.mean(w * y * np.log(p) + (1 - y) * np.log(1 - p), axis=-1).mean()
    assert float(WeightedBinaryCrossentropy(w)(y, p)) == pytest.approx(expected, rel=1e-5)
    logits = np.log(p / (1 - p))
    assert float(WeightedBinaryCrossentropy(w, from_logits=True)(y, logits)) == pytest.approx(expected, rel=1e-4)
    unweighted = keras.losses.BinaryCrossentropy()(y, p)
    assert float(WeightedBinaryCrossentropy(np.ones(3))(y, p)) == pytest.approx(float(unweighted), rel=1e-5)
    clone = keras.losses.deserialize(keras.losses.serialize(WeightedBinaryCrossentropy(w)))
    assert clone.pos_weight == [2.0, 1.0, 5.0]


def test_initial_bias_reproduces_priors():
    binary = np.array([[1], [0], [0], [0]])
    assert 1 / (1 + np.exp(-initial_bias(binary, "binary")[0])) == pytest.approx(0.25)
    onehot = np.eye(3)[[0, 1, 1, 2, 2, 2]]
    bias = initial_bias(onehot, "multiclass")
    np.testing.assert_allclose(np.exp(bias) / np.exp(bias).sum(), [1 / 6, 2 / 6, 3 / 6])


def test_training_prior_is_the_positive_rate_the_weighted_loss_sees():
    """0.5 under balanced class weights; the plain prevalence without weighting; w p / (w p + 1 - p) per finding
    under capped positive weights."""
    from cxr_keras.config import ExperimentConfig, TrainConfig
    from cxr_keras.data.balance import training_prior
    from cxr_keras.data.table import ImageTable

    n = 40
    labels = np.eye(2)[[1] * 30 + [0] * 10]  # 75% positive
    table = ImageTable(paths=[f"{k}.png" for k in range(n)], labels=labels, classes=["NORMAL", "PNEUMONIA"],
                       task="binary", patients=[None] * n, splits=["train"] * n)
    assert training_prior(ExperimentConfig(), table) == pytest.approx([0.5])
    assert training_prior(ExperimentConfig(train=TrainConfig(balance="none")), table) == pytest.approx([0.75])
    multi = ImageTable(paths=table.paths, labels=np.c_[np.r_[np.ones(2), np.zeros(38)], np.r_[np.ones(20),
                       np.zeros(20)]], classes=["Mass", "Effusion"], task="multilabel", patients=[None] * n,
                       splits=["train"] * n)
    p, w = 2 / 40, 10.0  # Mass: 5% positive, its weight 19 capped at 10
    assert training_prior(ExperimentConfig(), multi) == pytest.approx([w * p / (w * p + 1 - p), 0.5])
