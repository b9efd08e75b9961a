import numpy as np
import pytest
import tensorflow as tf

from cxr_keras.data.augment import PRESETS, ChestXrayAugment, augmenter


def _images(batch=6, size=32):
    rng = np.random.default_rng(0)
    return tf.constant(rng.uniform(0, 255, (batch, size, size, 1)).astype("float32"))


def test_all_zero_parameters_are_the_identity():
    x = _images()
    out = ChestXrayAugment()(x, seed=tf.constant([1, 2]))
    np.testing.assert_allclose(out.numpy(), x.numpy(), atol=1e-3)


def test_flip_only_mirrors_or_keeps_each_image():
    x = _images(batch=16)
    out = ChestXrayAugment(flip=True)(x, seed=tf.constant([3, 4])).numpy()
    mirrored = [np.allclose(o, xi[:, ::-1], atol=1e-3) for o, xi in zip(out, x.numpy())]
    kept = [np.allclose(o, xi, atol=1e-3) for o, xi in zip(out, x.numpy())]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)


def test_stateless_seed_decides_the_result():
    layer = ChestXrayAugment(**PRESETS["standard"])
    x = _images()
    a, b = layer(x, seed=tf.constant([5, 6])), layer(x, seed=tf.constant([5, 6]))
    c = layer(x, seed=tf.constant([5, 7]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())
    assert a.shape == x.shape and float(tf.reduce_min(a)) >= 0 and float(tf.reduce_max(a)) <= 255


def test_rotation_moves_pixels_about_the_centre():
    x = np.zeros((1, 33, 33, 1), np.float32)
    x[0, 16, 26] = 255.0  # 10 px right of the centre
    out = ChestXrayAugment(rotation=90.0)(tf.constant(x), seed=tf.constant([0, 1])).numpy()[0, ..., 0]
    y, xx = np.unravel_index(out.argmax(), out.shape)
    assert np.hypot(y - 16, xx - 16) == pytest.approx(10, abs=1.5)


def test_layer_config_round_trip_and_inference_passthrough():
    layer = ChestXrayAugment(**PRESETS["light"], seed=3)
    clone = ChestXrayAugment.from_config(layer.get_config())
    assert clone.params == layer.params
    x = _images()
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())


def test_presets():
    assert augmenter("none") == (None, None)
    fused, cutout = augmenter("strong", seed=1)
    assert fused is not None and cutout is not None
    assert not any(p.get("flip") for p in PRESETS.values())
    with pytest.raises(ValueError, match="preset must be one of"):
        augmenter("extreme")


def test_gamma_is_a_per_image_power_law_fixing_black_and_white():
    x = np.tile(np.arange(256, dtype=np.float32), (4, 1)).reshape(4, 16, 16, 1)
    out = ChestXrayAugment(gamma=0.3)(tf.constant(x), seed=tf.constant([2, 3])).numpy()
    for image in out:
        values = image.ravel()
        assert values[0] == 0 and values[-1] == pytest.approx(255)
        g = np.log(values[128] / 255) / np.log(128 / 255)
        np.testing.assert_allclose(values, 255 * (np.arange(256) / 255) ** g, atol=1e-2)
        assert np.exp(-0.3) - 1e-6 <= g <= np.exp(0.3) + 1e-6
