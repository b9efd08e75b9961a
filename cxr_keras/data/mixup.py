"""Mixup on training batches, with the class weights carried into the mixed examples.

Each image is blended with another image of its batch, x = lam x_a + (1 - lam) x_b and the same for its
target, lam ~ Beta(alpha, alpha) per image (Zhang et al. 2018).

Keras' `fit(class_weight=...)` rounds a soft target to a class before it looks up the weight, so a mixed image
would take the whole weight of its larger part. A class weight is linear in a one-hot target, w(y) = y . w, so
the weight of a mix, lam w(y_a) + (1 - lam) w(y_b), is w of the mixed target: these batches carry it as a
per-example sample weight, and `fit` is then given no class_weight.

Why not keras-cv's MixUp: inside tf.data its stateful draws restart with every epoch's iterator (the same lam
and pairing for each batch position every epoch, checked), and it has no sample weights. Here the draws are
stateless, from a per-batch seed stream that is new every epoch, as for the augmentation (data/pipeline.py).
"""

from __future__ import annotations

import tensorflow as tf

from cxr_keras.config import MIXUP_ALPHAS


def mix_batches(ds: tf.data.Dataset, alpha: float, seed: int = 0,
                class_weight: dict[int, float] | None = None) -> tf.data.Dataset:
    """(images, targets) batches -> mixed (images, targets) or, with `class_weight`, (images, targets, weights).

    Binary targets are (B, 1) sigmoid targets; multi-class and multi-label ones (B, K).
    """
    if not MIXUP_ALPHAS[0] <= alpha <= MIXUP_ALPHAS[1]:
        raise ValueError(f"mixup alpha must be in {list(MIXUP_ALPHAS)}, got {alpha}")
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds).map(lambda batch, s: mix(*batch, alpha, s))
    if class_weight is None:
        return ds
    weights = tf.constant([class_weight[k] for k in sorted(class_weight)], tf.float32)
    return ds.map(lambda x, y: (x, y, weight_of(y, weights)))


def mix(images: tf.Tensor, targets: tf.Tensor, alpha: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One batch mixed with a permutation of itself; `seed` is a stateless seed pair."""
    batch = tf.shape(images)[0]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    partner = tf.argsort(tf.random.stateless_uniform([batch], seeds[0]))
    lam = mixing_weights(batch, alpha, seeds[1])
    targets = tf.cast(targets, tf.float32)
    mixed_images = _blend(tf.cast(images, tf.float32), lam[:, None, None, None], partner)
    return mixed_images, _blend(targets, lam[:, None], partner)


def mixing_weights(n: int | tf.Tensor, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """`n` draws of Beta(alpha, alpha), as a / (a + b) of two Gamma(alpha) draws (TensorFlow has no stateless
    Beta). Both draws underflow to 0 now and then for small alphas; such a draw goes to 0 or 1 with equal odds,
    as Beta(alpha, alpha) puts nearly all its mass there. Below alpha 0.05 TensorFlow's small-alpha Gamma draws
    no longer give Beta's spread (checked), hence the lower bound of config.MIXUP_ALPHAS."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    a = tf.random.stateless_gamma([n], seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma([n], seeds[1], alpha=alpha)
    coin = tf.cast(tf.random.stateless_uniform([n], seeds[2]) < 0.5, tf.float32)
    total = a + b
    return tf.where(total > 0, a / tf.where(total > 0, total, 1.0), coin)


def _blend(values: tf.Tensor, lam: tf.Tensor, partner: tf.Tensor) -> tf.Tensor:
    return lam * values + (1.0 - lam) * tf.gather(values, partner)


def weight_of(targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """w(y) = y . w for one-hot (B, K) targets; for binary (B, 1) targets, (1 - y) w0 + y w1."""
    if targets.shape[-1] == 1:
        return (1.0 - targets[:, 0]) * weights[0] + targets[:, 0] * weights[1]
    return tf.linalg.matvec(targets, weights)
