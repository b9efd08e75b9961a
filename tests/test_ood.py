"""The out-of-distribution score: Mahalanobis distances known by hand, the fit against scikit-learn, the score
inside a saved model, and the classifier-only view every other command loads."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cxr_keras.evaluate.ood import fit_statistics, threshold_for  # noqa: E402
from cxr_keras.evaluate.stress import evenly_spaced  # noqa: E402
from cxr_keras.models.ood import MahalanobisDistance, classifier_only, has_ood, split_outputs, with_ood  # noqa: E402


def _layer(means, precision):
    layer = MahalanobisDistance(len(means), len(precision))
    layer.build((None, len(precision)))
    layer.set_statistics(np.asarray(means, float), np.linalg.cholesky(np.asarray(precision, float)))
    return layer


def test_distances_known_by_hand():
    # precision diag(1/4, 1): (2, 0) is 1 from the origin, (0, 3) is 3; the nearer of two means wins
    layer = _layer([[0.0, 0.0], [10.0, 0.0]], [[0.25, 0.0], [0.0, 1.0]])
    got = np.asarray(layer(np.array([[2.0, 0.0], [0.0, 3.0], [8.0, 0.0], [5.0, 0.0]], "float32")))[:, 0]
    np.testing.assert_allclose(got, [1.0, 3.0, 1.0, 2.5], rtol=1e-5)


def test_correlated_precision_by_hand():
    # covariance [[1, .5], [.5, 1]]: precision 4/3 [[1, -.5], [-.5, 1]]; d^2 of (1, 1) = 4/3 (1 - .5 - .5 + 1) = 4/3
    precision = np.linalg.inv([[1.0, 0.5], [0.5, 1.0]])
    got = np.asarray(_layer([[0.0, 0.0]], precision)(np.array([[1.0, 1.0], [1.0, -1.0]], "float32")))[:, 0]
    np.testing.assert_allclose(got ** 2, [4 / 3, 4.0], rtol=1e-5)


def test_fit_matches_scikit_learn():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 3
    means, factor = fit_statistics(x)
    got = np.asarray(_layer(means, factor @ factor.T)(x[:20].astype("float32")))[:, 0]
    expected = np.sqrt(LedoitWolf().fit(x).mahalanobis(x[:20]))
    np.testing.assert_allclose(got, expected, rtol=1e-3)


def test_fit_per_class_means_share_one_covariance():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) + [8, 0, 0]
    means, _ = fit_statistics(np.vstack([a, b]), np.r_[np.zeros(200), np.ones(200)])
    np.testing.assert_allclose(means, [a.mean(0), b.mean(0)])


def test_threshold_flags_at_most_the_rate():
    scores = np.arange(1, 101, dtype=float)
    cut = threshold_for(scores, 0.05)
    assert np.mean(scores > cut) <= 0.05 and np.mean(scores > cut - 1) > 0.05
    assert list(evenly_spaced(11, 3)) == [0, 5, 10]
    assert len(evenly_spaced(10, 50)) == 10


def _tiny_model():
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="predictions")(pooled)
    return keras.Model(inputs, out)


def test_score_travels_in_the_keras_file(tmp_path):
    from cxr_keras.models.ood import feature_model
    from cxr_keras.models.saving import load_model, save_model

    model = _tiny_model()
    x = np.random.default_rng(2).uniform(0, 255, (16, 8, 8, 1)).astype("float32")
    feats = np.asarray(feature_model(model)(x), float)
    means, factor = fit_statistics(feats)
    scored = with_ood(model, means, factor)
    assert has_ood(scored) and not has_ood(model)
    probabilities, score = split_outputs(scored(x))
    np.testing.assert_allclose(probabilities, np.asarray(model(x)), rtol=1e-6)
    path = str(tmp_path / "m.keras")
    save_model(scored, path, {"task": "binary", "classes": ["a", "b"]})
    plain, _ = load_model(path, compile=False)
    assert len(plain.outputs) == 1 and not has_ood(plain)
    np.testing.assert_allclose(np.asarray(plain(x)), probabilities, rtol=1e-6)
    full, _ = load_model(path, compile=False, ood=True)
    np.testing.assert_allclose(split_outputs(full(x))[1], score, rtol=1e-5)
    assert classifier_only(full).count_params() == model.count_params()
