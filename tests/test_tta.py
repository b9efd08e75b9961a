"""Test-time augmentation inside the model: the views are the crops they claim, the output is their mean, and the
wrapped model saves and loads."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cxr_keras.models.saving import load_model, save_model
from cxr_keras.models.tta import TTAViews, with_tta


def test_views_are_the_stated_crops_resized_back():
    x = np.random.default_rng(0).uniform(0, 255, (2, 50, 40, 1)).astype("float32")
    views = np.asarray(TTAViews()(x))
    assert views.shape == (4, 2, 50, 40, 1)
    np.testing.assert_array_equal(views[0], x)
    zoom = tf.image.resize(x[:, 2:48, 2:38], (50, 40)).numpy()  # 10%: 2.5 -> 2 rows and 2 columns each side
    np.testing.assert_allclose(views[1], zoom, atol=1e-3)
    np.testing.assert_allclose(views[3], tf.image.resize(x[:, :, 2:], (50, 40)).numpy(), atol=1e-3)  # 4% of 40
    with pytest.raises(ValueError, match="unknown test-time views"):
        TTAViews(["flip"])


def test_the_wrapped_model_averages_the_views_and_round_trips(tmp_path):
    inputs = keras.Input((32, 32, 1))
    hidden = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(hidden))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 1)).astype("float32")
    views = np.asarray(TTAViews()(x))
    expected = np.mean([model.predict(v, verbose=0) for v in views], axis=0)
    tta = with_tta(model)
    np.testing.assert_allclose(tta.predict(x, verbose=0), expected, atol=1e-6)
    save_model(tta, str(tmp_path / "tta.keras"))
    again, _ = load_model(str(tmp_path / "tta.keras"), compile=False)
    np.testing.assert_allclose(again.predict(x, verbose=0), expected, atol=1e-6)
