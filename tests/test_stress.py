"""The shift stress test: each shift is the identity at 0, repeatable, and grows with strength; the stress
table's figures are scikit-learn's on the shifted images; `cxr evaluate --stress` writes it."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import write_blob_dataset
from sklearn.metrics import roc_auc_score

from cxr_keras.cli import main
from cxr_keras.data.decode import decode_all
from cxr_keras.data.shifts import SHIFTS, apply_shift
from cxr_keras.data.sources import load_dataset
from cxr_keras.evaluate.inference import score_pixels
from cxr_keras.evaluate.stress import stress_test
from cxr_keras.models.contract import describe_model


def textured(size=96):
    yy, xx = np.mgrid[:size, :size]
    image = 128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + 30 * (xx > size // 2)
    return np.clip(image, 0, 255).astype(np.uint8)[None, ..., None]


@pytest.mark.parametrize("name", list(SHIFTS))
def test_each_shift_is_the_identity_at_zero_repeatable_and_grows_with_strength(name):
    image = textured()
    assert np.array_equal(apply_shift(name, image, 0.0), image)
    changes = [np.abs(apply_shift(name, image, s, seed=3).astype(float) - image).mean()
               for s in (0.25, 0.5, 0.75, 1.0)]
    assert all(a < b for a, b in zip(changes, changes[1:])), changes
    assert changes[0] > 0
    np.testing.assert_array_equal(apply_shift(name, image, 0.6, seed=3), apply_shift(name, image, 0.6, seed=3))
    assert apply_shift(name, image, 0.6).dtype == np.uint8


def test_no_training_option_applies_a_held_out_shift():
    """The held-out rows are honest only if nothing trains on them: no augmentation preset names one, and the
    kinds of change each preset makes map onto held-in shifts (zoom is a crop, the tone changes are contrast
    and gamma, noise is noise)."""
    from cxr_keras.data.augment import PRESETS
    from cxr_keras.data.shifts import GROUPS

    assert set(GROUPS["held-in"]).isdisjoint(GROUPS["held-out"])
    trains_like = {"zoom": "crop", "contrast": "contrast", "gamma": "gamma", "brightness": "contrast",
                   "noise": "noise", "blur": "blur", "resolution": "resolution", "jpeg": "jpeg"}
    geometry = {"rotation", "shift", "shear", "flip", "cutout", "fill_value"}
    for name, params in PRESETS.items():
        for key in params:
            assert key in geometry or trains_like[key] in GROUPS["held-in"], (name, key)
            assert key not in GROUPS["held-out"], (name, key)


def test_poisson_noise_follows_the_signal():
    """Quantum noise: the dark (many-photon) parts of a film are relatively quieter than its bright parts."""
    flat_dark, flat_bright = np.full((1, 64, 64, 1), 40, np.uint8), np.full((1, 64, 64, 1), 220, np.uint8)
    dark = apply_shift("poisson", flat_dark, 1.0).astype(float).std()
    bright = apply_shift("poisson", flat_bright, 1.0).astype(float).std()
    assert bright > 1.5 * dark > 0


def test_noise_is_seeded_per_image_and_bad_requests_are_refused():
    images = np.repeat(textured(), 2, axis=0)
    noisy = apply_shift("noise", images, 0.5, seed=1)
    assert not np.array_equal(noisy[0], noisy[1])  # each image its own draw
    assert not np.array_equal(noisy, apply_shift("noise", images, 0.5, seed=2))
    with pytest.raises(ValueError, match="unknown shift"):
        apply_shift("rotate", images, 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        apply_shift("noise", images, 1.5)


@pytest.fixture(scope="module")
def brightness_model(tmp_path_factory):
    """A fixed model: the probability grows with the mean brightness (the blob images are brighter)."""
    data = write_blob_dataset(str(tmp_path_factory.mktemp("stress") / "data"), n_per_class=12, size=32, seed=4)
    inputs = keras.Input((32, 32, 1))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(0.2),
                                 bias_initializer=keras.initializers.Constant(-19.5))(pooled)
    path = str(tmp_path_factory.mktemp("model") / "bright.keras")
    keras.Model(inputs, outputs).save(path)
    return data, path


def test_stress_rows_are_sklearn_figures_on_the_shifted_images(brightness_model):
    data, path = brightness_model
    model = keras.models.load_model(path)
    spec = describe_model(model, None, class_names=["NORMAL", "PNEUMONIA"])
    table = load_dataset(data)
    y = table.labels[:, 1]
    result = stress_test(model, spec, table.paths, y, 0.5, shifts=["gamma", "noise"], strengths=(0.5, 1.0), seed=7)
    assert [(r["shift"], r["strength"]) for r in result["rows"]] == [
        ("none", 0.0), ("gamma", 0.5), ("gamma", 1.0), ("noise", 0.5), ("noise", 1.0)]
    images = decode_all(table.paths, (32, 32))
    for row in result["rows"][1:]:
        s = score_pixels(model, apply_shift(row["shift"], images, row["strength"], seed=7), spec)
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        decided = s >= 0.5
        assert row["sensitivity"] == pytest.approx(decided[y == 1].mean())
        assert row["specificity"] == pytest.approx((~decided)[y == 0].mean())
    # gamma darkens: a brightness model loses sensitivity, more at the stronger shift
    gamma = [r["sensitivity"] for r in result["rows"][:3]]
    assert gamma[0] > gamma[2] and gamma[1] >= gamma[2]
    assert result["worst"]["sensitivity"]["shift"] == "gamma"


def test_cxr_evaluate_stress_writes_the_table_and_figure(brightness_model, tmp_path, capsys):
    data, path = brightness_model
    out = str(tmp_path / "ev")
    assert main(["evaluate", "--model", path, "--data-dir", data, "--class-names", "NORMAL", "PNEUMONIA",
                 "--threshold", "0.5", "--out", out, "--resamples", "20", "--stress", "--stress-shifts", "gamma",
                 "text", "--stress-strengths", "0.5", "1", "--stress-count", "10"]) == 0
    assert "stress test: sensitivity falls most under gamma" in capsys.readouterr().out
    stress = json.load(open(os.path.join(out, "stress", "stress.json")))
    assert stress["n_images"] == 10 and len(stress["rows"]) == 5
    assert os.path.getsize(os.path.join(out, "stress", "stress.png")) > 0
    assert "| gamma | held-in | 1.00 |" in open(os.path.join(out, "stress", "stress.md")).read()
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", path, "--data-dir", data, "--stress", "--stress-strengths", "2"])
    capsys.readouterr()
    assert main(["evaluate", "--model", path, "--data-dir", data, "--stress", "--stress-count", "1",
                 "--out", str(tmp_path / "one")]) == 2
    assert "--stress-count must be at least 2" in capsys.readouterr().err


def test_lowest_at_finds_each_groups_lowest_figure_at_one_strength():
    from cxr_keras.evaluate.stress import lowest_at, lowest_line

    rows = [{"shift": "none", "group": "none", "strength": 0.0, "sensitivity": 1.0, "specificity": 1.0},
            {"shift": "noise", "group": "held-in", "strength": 0.5, "sensitivity": 0.9, "specificity": 0.6},
            {"shift": "blur", "group": "held-in", "strength": 0.5, "sensitivity": 0.8, "specificity": 0.7},
            {"shift": "noise", "group": "held-in", "strength": 1.0, "sensitivity": 0.1, "specificity": 0.1},
            {"shift": "grid", "group": "held-out", "strength": 0.5, "sensitivity": 0.95, "specificity": 0.85}]
    lowest = lowest_at({"rows": rows}, 0.5)
    assert lowest == {"held-in": {"sensitivity": {"value": 0.8, "shift": "blur"},
                                  "specificity": {"value": 0.6, "shift": "noise"}},
                      "held-out": {"sensitivity": {"value": 0.95, "shift": "grid"},
                                   "specificity": {"value": 0.85, "shift": "grid"}}}
    assert lowest_line({"rows": rows}, 1.0) == "held-in: sensitivity 0.100 (noise), specificity 0.100 (noise)"
