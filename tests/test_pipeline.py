import numpy as np
import pytest
import tensorflow as tf
from helpers import gradient, write_dicom, write_image

from cxr_keras.data.decode import load_image_numpy
from cxr_keras.data.pipeline import dataset_for_split, make_dataset
from cxr_keras.data.sources import load_dataset
from cxr_keras.data.splits import split_table


@pytest.fixture(scope="module")
def table(synthetic_binary):
    return split_table(load_dataset(synthetic_binary), (0.6, 0.2, 0.2), seed=0)


def _epoch(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_batches_have_shape_dtype_and_range(table):
    ds = dataset_for_split(table, "train", (48, 40), 8, training=True, augment="standard", seed=1)
    x, y = next(iter(ds))
    assert x.shape == (8, 48, 40, 1) and x.dtype.name == "float32" and y.shape == (8, 1)
    assert 0.0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 255.0 and float(x.numpy().max()) > 50


def test_same_seed_same_batches_and_augmentations(table):
    def run(seed):
        ds = dataset_for_split(table, "train", (32, 32), 8, training=True, augment="strong", seed=seed)
        return [_epoch(ds) for _ in range(2)]

    first, again, other = run(7), run(7), run(8)
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(first[0][0], first[1][0])  # a new order and new augmentations each epoch
    assert not np.array_equal(first[0][0], other[0][0])


def test_evaluation_order_is_kept_and_not_augmented(table):
    part = table.split("val")
    x, y = _epoch(dataset_for_split(table, "val", (32, 32), 5))
    np.testing.assert_array_equal(y, part.targets())
    expected = np.stack([load_image_numpy(p, (32, 32)) for p in part.paths]).astype(np.float32)
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("cache", ["memory", "disk", "file", None])
def test_caches_give_identical_data(table, cache, tmp_path):
    cache_arg = str(tmp_path / "cache") if cache == "file" else cache
    part = table.split("train")
    x, _ = _epoch(make_dataset(part.paths, part.targets(), (32, 32), 8, cache=cache_arg))
    reference, _ = _epoch(make_dataset(part.paths, part.targets(), (32, 32), 8, cache=None))
    np.testing.assert_array_equal(x, reference)


def test_one_file_cache_prefix_never_serves_another_splits_or_labels_data(table, tmp_path):
    """`--cache PREFIX` for train and val: each split reads its own pixels and labels, not the first one cached."""
    prefix = str(tmp_path / "cache")
    train, val = table.split("train"), table.split("val")
    _epoch(make_dataset(train.paths, train.targets(), (32, 32), 8, cache=prefix))
    x, y = _epoch(make_dataset(val.paths, val.targets(), (32, 32), 8, cache=prefix))
    reference = np.stack([load_image_numpy(p, (32, 32)) for p in val.paths]).astype(np.float32)
    np.testing.assert_array_equal(x, reference)
    np.testing.assert_array_equal(y, val.targets())
    _, flipped = _epoch(make_dataset(val.paths, 1 - val.targets(), (32, 32), 8, cache=prefix))
    np.testing.assert_array_equal(flipped, 1 - val.targets())  # relabelled data: not the cached labels


def test_memory_cache_is_single_channel_uint8(table):
    from cxr_keras.data.decode import decode_all

    part = table.split("train")
    images = decode_all(part.paths, (64, 48))
    assert images.dtype == np.uint8 and images.shape == (len(part), 64, 48, 1)  # not RGB, not float


def test_cache_tensor_shares_the_decoded_array_instead_of_copying_it():
    from cxr_keras.data.decode import aligned_empty
    from cxr_keras.data.pipeline import as_tensor_in_place

    array = aligned_empty((5, 8, 6, 1))
    array[:] = 3
    tensor = as_tensor_in_place(array)
    array[2, 4, 1, 0] = 250  # written after: seen through the tensor only if it aliases the array
    assert tensor.dtype == tf.uint8 and tensor.shape == (5, 8, 6, 1)
    assert int(tensor[2, 4, 1, 0]) == 250 and int(tf.reduce_sum(tf.cast(tensor, tf.int32))) == 3 * 239 + 250
    unaligned = np.full(1 + 5 * 8 * 6, 3, np.uint8)[1:].reshape(5, 8, 6, 1)  # one byte off the alignment
    np.testing.assert_array_equal(as_tensor_in_place(unaligned).numpy(), unaligned)  # copied, no crash


def test_stretch_and_pad(tmp_path):
    wide = np.full((20, 80), 200, np.uint8)
    path = write_image(str(tmp_path / "wide.png"), wide)
    stretched = load_image_numpy(path, (40, 40), "stretch")[..., 0]
    padded = load_image_numpy(path, (40, 40), "pad")[..., 0]
    assert (stretched == 200).all()
    # 20 x 80 scaled by 1/2 to 10 x 40, centred: rows 15..24 hold the image, the rest is black padding.
    assert (padded[:15] == 0).all() and (padded[25:] == 0).all() and (padded[15:25] == 200).all()


def test_color_modes_become_gray(tmp_path):
    g = gradient(40, 48)
    rgb = np.dstack([g, g, g])
    expected = load_image_numpy(write_image(str(tmp_path / "l.png"), g), (40, 48))
    for name, mode, fmt in (("rgb.png", None, None), ("rgba.png", "RGBA", None), ("bmp.bmp", None, "BMP")):
        got = load_image_numpy(write_image(str(tmp_path / name), rgb, mode, fmt), (40, 48))
        assert np.abs(got.astype(int) - expected).max() <= 1, name
    np.testing.assert_array_equal(expected[..., 0], g)


def test_sixteen_bit_png_is_stretched_to_full_range(tmp_path):
    path = write_image(str(tmp_path / "g16.png"), gradient(40, 48, np.uint16, top=4095))
    image = load_image_numpy(path, (40, 48))[..., 0]
    assert image.min() == 0 and image.max() == 255
    np.testing.assert_array_equal(image, gradient(40, 48))


def test_dicom_monochrome1_window_and_rescale(tmp_path):
    raw = gradient(40, 48, np.uint16, top=4000)
    plain = load_image_numpy(write_dicom(str(tmp_path / "m2.dcm"), raw), (40, 48))[..., 0]
    np.testing.assert_array_equal(plain, gradient(40, 48))
    inverted = load_image_numpy(write_dicom(str(tmp_path / "m1.dcm"), raw, monochrome1=True), (40, 48))[..., 0]
    np.testing.assert_array_equal(inverted, 255 - plain)
    # A window of 1000..3000 (centre 2000, width 2000): below is black, above is white.
    windowed = load_image_numpy(write_dicom(str(tmp_path / "w.dcm"), raw, window=(2000, 2000)), (40, 48))[..., 0]
    assert (windowed[:, raw[0] < 950] == 0).all() and (windowed[:, raw[0] > 3050] == 255).all()
    assert 100 < windowed[0, np.argmin(np.abs(raw[0].astype(int) - 2000))] < 155
    # A DICOM file without the .dcm extension is recognised by its magic bytes.
    no_ext = write_dicom(str(tmp_path / "IMG0001"), raw)
    np.testing.assert_array_equal(load_image_numpy(no_ext, (40, 48))[..., 0], plain)


def test_empty_split_is_a_clear_error(table):
    with pytest.raises(ValueError, match="split 'holdout' is empty"):
        dataset_for_split(table, "holdout", (32, 32))
