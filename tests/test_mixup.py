"""Mixup: each example a convex mix of two of its batch, targets and class weights mixed alike, Beta draws,
seeded and new every epoch (a training run with it: test_train.py)."""

import numpy as np
import pytest
import tensorflow as tf

from cxr_keras.data.mixup import mix_batches, mixing_weights

WEIGHTS = {0: 2.0, 1: 0.5}


def batches(n=8, classes=None):
    """Image k is k in its first row and k squared in the others: no mix of two images equals a mix of another
    pair, so every mix can be undone by hand."""
    images = np.stack([np.full((4, 4, 1), k * k, np.float32) for k in range(n)])
    images[:, 0] = np.arange(n, dtype=np.float32)[:, None, None]
    if classes is None:
        targets = (np.arange(n) % 2).astype(np.float32)[:, None]
    else:
        targets = np.eye(classes, dtype=np.float32)[np.arange(n) % classes]
    return images, targets


def partners(mixed_images, images):
    """For each mixed image, the (a, b, lam) that made it: image a is the example's own, b its partner."""
    found = []
    for i, x in enumerate(mixed_images[:, 0, 0, 0]):
        for j in range(len(images)):
            lam = 1.0 if j == i else (x - images[j, 0, 0, 0]) / (images[i, 0, 0, 0] - images[j, 0, 0, 0])
            if -1e-4 <= lam <= 1 + 1e-4 and np.allclose(lam * images[i] + (1 - lam) * images[j], mixed_images[i],
                                                         atol=1e-3):  # every pixel, not only the first row's
                found.append((i, j, float(lam)))
                break
        else:
            raise AssertionError(f"mixed image {i} is not a mix of image {i} with another of its batch")
    return found


@pytest.mark.parametrize("classes", [None, 3])
def test_targets_and_class_weights_are_mixed_as_the_images(classes):
    images, targets = batches(classes=classes)
    weights = WEIGHTS if classes is None else {0: 1.0, 1: 2.0, 2: 5.0}
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(8)
    x, y, w = next(iter(mix_batches(ds, 0.4, seed=3, class_weight=weights)))
    x, y, w = x.numpy(), y.numpy(), w.numpy()
    def weight(t):
        return weights[int(t[0])] if classes is None else weights[int(np.argmax(t))]
    for i, j, lam in partners(x, images):
        np.testing.assert_allclose(y[i], lam * targets[i] + (1 - lam) * targets[j], atol=1e-5)
        assert w[i] == pytest.approx(lam * weight(targets[i]) + (1 - lam) * weight(targets[j]), abs=1e-5)


def test_without_class_weights_the_batches_keep_two_parts():
    images, targets = batches()
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)
    element = next(iter(mix_batches(ds, 0.2)))
    assert len(element) == 2 and element[1].shape == (4, 1)


@pytest.mark.parametrize("alpha", [0.05, 0.2, 1.0])
def test_the_mixing_weights_follow_beta_alpha_alpha(alpha):
    lam = mixing_weights(40000, alpha, tf.constant([0, 1])).numpy()
    assert lam.min() >= 0 and lam.max() <= 1
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.03)  # Var Beta(a, a) = 1 / (4 (2a + 1))


def test_the_same_seed_mixes_the_same_way_and_every_epoch_anew():
    images, targets = batches()
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(8)
    first = mix_batches(ds, 0.4, seed=5)
    epoch1, epoch2 = (next(iter(first))[0].numpy() for _ in range(2))
    again = next(iter(mix_batches(ds, 0.4, seed=5)))[0].numpy()
    other = next(iter(mix_batches(ds, 0.4, seed=6)))[0].numpy()
    np.testing.assert_array_equal(epoch1, again)
    assert not np.allclose(epoch1, epoch2) and not np.allclose(epoch1, other)

