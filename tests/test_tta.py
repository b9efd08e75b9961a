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


def test_cxr_evaluate_tta_scores_the_mean_of_the_views(tmp_path, capsys):
    import json
    import os

    from helpers import write_blob_dataset

    from cxr_keras.cli import main
    from cxr_keras.data.decode import decode_all
    from cxr_keras.data.sources import load_dataset

    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=8, size=32, seed=3)
    inputs = keras.Input((32, 32, 1))
    hidden = keras.layers.Conv2D(2, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(hidden))
    model = keras.Model(inputs, outputs)
    model.save(str(tmp_path / "m.keras"))
    out = str(tmp_path / "ev")
    assert main(["evaluate", "--model", str(tmp_path / "m.keras"), "--data-dir", data, "--class-names", "NORMAL",
                 "PNEUMONIA", "--tta", "--out", out, "--resamples", "10"]) == 0
    rows = open(os.path.join(out, "scores.csv")).read().splitlines()[1:]
    table = load_dataset(data)
    pixels = decode_all(table.paths, (32, 32)).astype("float32")
    expected = with_tta(model).predict(pixels, verbose=0)[:, 0]
    got = {r.split(",")[0]: float(r.split(",")[2]) for r in rows}
    np.testing.assert_allclose([got[p] for p in table.paths], expected, atol=1e-5)
    assert json.load(open(os.path.join(out, "metrics.json")))["n_images"] == 16
    assert main(["evaluate", "--run", str(tmp_path), "--tta"]) == 2
    assert "--tta is for --model" in capsys.readouterr().err
