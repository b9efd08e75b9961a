import numpy as np
import pytest
import tensorflow as tf

from cxr_keras.data.augment import PRESETS, ChestXrayAugment, augmenter


def _images(batch=6, size=32):
    rng = np.random.default_rng(0)
    return tf.constant(rng.integers(0, 256, (batch, size, size, 1)).astype("float32"))


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
    assert augmenter("none") is None
    assert augmenter("strong", seed=1).params["cutout"] == 0.15
    assert not any(p.get("flip") for p in PRESETS.values())
    with pytest.raises(ValueError, match="preset must be one of"):
        augmenter("extreme")


def test_gamma_is_a_per_image_power_law_fixing_black_and_white():
    x = np.tile(np.arange(256, dtype=np.float32), (4, 1)).reshape(4, 16, 16, 1)
    out = ChestXrayAugment(gamma=0.3)(tf.constant(x), seed=tf.constant([2, 3])).numpy()
    candidates = np.exp(np.linspace(-0.3, 0.3, 6001))
    fitted = []
    for image in out:
        values = image.ravel()
        assert values[0] == 0 and values[-1] == 255 and np.all(np.diff(values) >= 0)
        errors = [np.abs(values - 255 * (np.arange(256) / 255) ** g).max() for g in candidates]
        assert min(errors) <= 0.51  # a power law within the table's rounding (and the grid of g)
        fitted.append(candidates[int(np.argmin(errors))])
    assert len({round(g, 2) for g in fitted}) > 1  # one gamma per image


def test_tone_table_matches_gamma_contrast_brightness_computed_by_hand():
    """Contrast acts about each image's mean level through the same gamma, brightness shifts by a fraction of
    255, then the table rounds and clips to whole levels: checked against the same arithmetic in numpy, without a
    warp."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (3, 20, 20, 1)).astype(np.uint8)
    layer = ChestXrayAugment(gamma=0.2, contrast=0.3, brightness=0.1)
    out = layer(tf.constant(x), seed=tf.constant([7, 8])).numpy()
    seed = tf.unstack(tf.random.experimental.stateless_split(tf.constant([7, 8]), 2))[1]
    draw = lambda index, width: layer._uniform(seed, 3, width, index).numpy()  # noqa: E731
    gamma, factor, shift = np.exp(draw(10, 0.2)), 1 + draw(11, 0.3), 255 * draw(12, 0.1)
    for i in range(3):
        mapped = 255 * (x[i].astype(np.float64) / 255) ** gamma[i]
        centre = 255 * (x[i].mean() / 255) ** gamma[i]
        expected = np.clip(np.round(centre + (mapped - centre) * factor[i] + shift[i]), 0, 255)
        np.testing.assert_allclose(out[i], expected, atol=1.0 + 1e-6)  # float32 table vs float64 here
        assert np.mean(out[i] == expected) > 0.95


def test_warp_matches_tensorflows_projective_transform():
    """OpenCV's resampling reads the same output -> input map as TensorFlow's op (which Keras' layers use)."""
    yy, xx = np.mgrid[:40, :48]
    x = np.stack([(100 + 60 * np.sin(xx / 5.0 + i) * np.cos(yy / 7.0)) for i in range(4)])[..., None]
    layer = ChestXrayAugment(rotation=15.0, zoom=0.1, shift=0.1, shear=5.0)
    images = tf.constant(np.round(x).astype(np.uint8))
    out = layer(images, seed=tf.constant([1, 9])).numpy()
    geometry_seed = tf.unstack(tf.random.experimental.stateless_split(tf.constant([1, 9]), 2))[0]
    matrices = tf.reshape(layer._matrices(images, geometry_seed), [4, 6])
    reference = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=tf.concat([matrices, tf.zeros([4, 2])], axis=1),
        output_shape=[40, 48], fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT").numpy()
    inside = reference > 0
    assert inside.mean() > 0.6
    assert np.abs(out - reference)[inside].mean() < 1.0 and np.percentile(np.abs(out - reference)[inside], 99) < 3


@pytest.mark.parametrize("name", ["blur", "resolution", "jpeg"])
def test_acquisition_degradations_hit_about_half_the_images_each_a_stress_shift(name):
    """Each image is either untouched or exactly the stress test's shift at some strength up to the maximum."""
    from cxr_keras.data.shifts import SHIFTS

    yy, xx = np.mgrid[:48, :48]
    image = np.clip(128 + 60 * np.sin(xx / 3.0) * np.cos(yy / 4.0), 0, 255).astype(np.uint8)
    x = tf.constant(np.repeat(image[None, ..., None], 40, axis=0))
    out = ChestXrayAugment(**{name: 0.8})(x, seed=tf.constant([7, 8])).numpy().astype(np.uint8)[..., 0]
    untouched = [np.array_equal(o, image) for o in out]
    assert 8 <= sum(untouched) <= 32
    strengths = np.linspace(0, 0.8, 801)
    for o in [o for o, same in zip(out, untouched) if not same][:4]:
        errors = [np.abs(SHIFTS[name](image, s).astype(int) - o).max() for s in strengths]
        assert min(errors) <= 1  # some strength within the range reproduces it


def test_cutout_blacks_out_one_rectangle_per_image_drawn_from_the_seed():
    x = tf.fill([6, 40, 50, 1], 255.0)
    layer = ChestXrayAugment(cutout=0.3)

    def holes(seed):
        out = layer(x, seed=tf.constant(seed)).numpy()[..., 0]
        boxes = []
        for image in out:
            rows, cols = np.nonzero(image == 0)
            assert len(rows), "every image gets a rectangle"
            box = (rows.min(), rows.max(), cols.min(), cols.max())
            assert (image[box[0] : box[1] + 1, box[2] : box[3] + 1] == 0).all()  # one solid rectangle
            assert (image == 0).sum() + (image == 255).sum() == image.size
            boxes.append(box)
        return boxes

    first = holes([1, 2])
    assert holes([1, 2]) == first and holes([1, 3]) != first
    for top, bottom, left, right in first:  # inside the image: at most 30% of each side
        assert bottom - top + 1 <= 0.3 * 40 + 1 and right - left + 1 <= 0.3 * 50 + 1
