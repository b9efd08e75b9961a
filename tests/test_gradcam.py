"""Grad-CAM on flat and nested models, layer discovery, bad requests and the pointing-game arithmetic."""

import keras
import numpy as np
import pytest

from cxr_keras.evaluate.gradcam import compute_cams, find_conv_layer
from cxr_keras.evaluate.localisation import border_check, pointing_game
from cxr_keras.models.factory import build_model


def nested_foreign_model():
    """Backbone called as a sub-model inside a wrapper, two-logit output: where most Grad-CAM code fails."""
    backbone = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def images(n=3, channels=1):
    return np.random.default_rng(0).uniform(0, 255, (n, 32, 32, channels)).astype("float32")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_flat_toolkit_model(method):
    model = build_model("efficientnetb0", "binary", ["NORMAL", "PNEUMONIA"], 32)
    assert find_conv_layer(model) == ["top_activation"]
    cams, explained, predictions = compute_cams(model, images(), method, batch_size=2)
    assert cams.shape == (3, 32, 32) and cams.min() >= 0 and cams.max() <= 1
    np.testing.assert_array_equal(explained, (predictions[:, 0] >= 0.5).astype(int))


def test_nested_foreign_model_with_two_logits():
    model = nested_foreign_model()
    assert find_conv_layer(model) == ["mobilenetv2_1.00_32", "out_relu"]
    cams, explained, predictions = compute_cams(model, images(channels=3), class_index=1)
    assert cams.shape == (3, 32, 32) and np.isfinite(cams).all()
    np.testing.assert_allclose(predictions, np.asarray(model(images(channels=3))), rtol=1e-5, atol=1e-5)
    cams_named, _, _ = compute_cams(model, images(channels=3), layer="mobilenetv2_1.00_32/out_relu", class_index=1)
    np.testing.assert_allclose(cams_named, cams, atol=1e-6)


def test_gradcam_matches_a_hand_computed_map():
    """One conv layer and a linear head: the Grad-CAM weights are the head's weights over the map area."""
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, use_bias=False, kernel_initializer=keras.initializers.Constant([[[[1.0, -1.0]]]]),
                               name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    model = keras.Model(inputs, keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(
        [[2.0, 0.0], [0.0, 3.0]]), name="head")(pooled))
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    cams, _, _ = compute_cams(model, x, class_index=0)
    # d score0 / d A0 = 2/16 at every position, d/dA1 = 0 -> map = relu(2/16 * x) normalised = x / max(x)
    np.testing.assert_allclose(cams[0], x[0, :, :, 0] / 15.0, atol=1e-6)


def test_bad_requests():
    dense_only = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no layer with a 4-D"):
        compute_cams(dense_only, np.zeros((1, 8), "float32"))
    model = build_model("baseline", "binary", ["a", "b"], 32)
    with pytest.raises(ValueError, match="class index 5 is out of range"):
        compute_cams(model, images(1), class_index=5)
    with pytest.raises(ValueError, match="no layer 'nope'"):
        compute_cams(model, images(1), layer="nope")


def test_pointing_game_arithmetic():
    cams = np.zeros((3, 4, 4))
    cams[0, 1, 1] = 1.0  # peak inside the lesion
    cams[1, 3, 3] = 1.0  # peak outside
    cams[1, 1, 1] = 0.5
    masks = np.zeros((3, 4, 4), bool)
    masks[:2, :2, :2] = True  # third image: no lesion
    result = pointing_game(cams, masks)
    np.testing.assert_array_equal(result["hit"][:2], [1.0, 0.0])
    np.testing.assert_allclose(result["energy"][:2], [1.0, 0.5 / 1.5])
    assert np.isnan(result["hit"][2]) and np.isnan(result["energy"][2])


def test_border_check_arithmetic():
    cams = np.zeros((3, 16, 16))
    cams[0, 0, 0] = 1.0  # all heat in a corner
    cams[1, 8, 8] = 1.0  # all heat in the middle
    cams[2] = 1.0  # spread evenly
    result = border_check(cams, ["COVID", "Normal", "Normal"], band=0.25)
    assert result["area_share"] == 1 - 0.5**2
    assert result["per_class"]["COVID"] == {"images": 1, "energy_share": 1.0, "peak_share": 1.0}
    assert result["per_class"]["Normal"]["energy_share"] == pytest.approx((0 + 0.75) / 2)
    assert result["energy_share"] == pytest.approx((1 + 0 + 0.75) / 3)


def test_mean_maps_average_each_class_after_scaling_every_map_to_sum_one():
    from cxr_keras.evaluate.localisation import mean_maps

    cams = np.zeros((4, 2, 2))
    cams[0, 0, 0] = 3.0  # COVID: one corner, at any intensity
    cams[1, 1, 1] = 0.5  # COVID: the opposite corner
    cams[2] = 1.0  # Normal: even
    # cams[3] stays empty (no heat): counted as zeros, not as NaN
    maps = mean_maps(cams, ["COVID", "COVID", "Normal", "Normal"])
    np.testing.assert_allclose(maps["COVID"], [[0.5, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(maps["Normal"], np.full((2, 2), 0.125))


def test_nih_boxes_become_masks_at_the_model_size(tmp_path):
    from cxr_keras.data.masks import box_masks

    csv_path = tmp_path / "BBox_List_2017.csv"
    csv_path.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                        "00000001_000.png,Pneumonia,256,512,256,128\n"
                        "00000001_000.png,Atelectasis,0,0,64,64\n")
    (found, missing) = box_masks(["/any/dir/00000001_000.png", "/x/00000002_000.png"], str(csv_path), (16, 16),
                                 finding="Pneumonia")
    assert missing is None
    expected = np.zeros((16, 16), bool)
    expected[8:10, 4:8] = True  # y 512/1024*16 = 8 .. (512+128)/1024*16 = 10; x 4 .. 8
    np.testing.assert_array_equal(found, expected)
    (both,) = box_masks(["00000001_000.png"], str(csv_path), (16, 16))
    assert both.sum() == expected.sum() + 1  # the Atelectasis box adds its 1x1 cell


def _two_channel_model():
    """A0 = x, A1 = 0.5 x + 3 over a 4x4 map; score = 2 mean(A0) + mean(A1): constant gradients 2/16, 1/16."""
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 1, kernel_initializer=keras.initializers.Constant([[[[1.0, 0.5]]]]),
                               bias_initializer=keras.initializers.Constant([0.0, 3.0]), name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    head = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant([[2.0], [1.0]]), name="head")
    return keras.Model(inputs, head(pooled))


MIXED = (np.arange(16, dtype="float32") - 7.5).reshape(1, 4, 4, 1)  # activations of both signs


def test_gradcam_by_hand_on_mixed_sign_activations_keeps_only_the_positive_part():
    cams, _, _ = compute_cams(_two_channel_model(), MIXED, class_index=1)
    x = MIXED[0, :, :, 0]
    expected = np.maximum(2 / 16 * x + 1 / 16 * (0.5 * x + 3), 0)  # weights = mean gradients, then ReLU
    np.testing.assert_allclose(cams[0], expected / expected.max(), atol=1e-6)
    assert (cams[0] == 0).sum() == (expected <= 0).sum() > 0


def test_gradcam_plus_plus_by_hand():
    """alpha_k = g^2 / (2 g^2 + sum(A_k) g^3) with constant g: channel 0 (sum 0) 1/2, channel 1 (sum 48) 1/5;
    weights = sum over positions of alpha relu(g): 1 and 0.2."""
    cams, _, _ = compute_cams(_two_channel_model(), MIXED, "gradcam++", class_index=1)
    x = MIXED[0, :, :, 0]
    expected = np.maximum(1.0 * x + 0.2 * (0.5 * x + 3), 0)
    np.testing.assert_allclose(cams[0], expected / expected.max(), atol=1e-5)
