"""Paired training batches for the consistency loss: each film beside a copy of itself under a random held-in
acquisition shift (data/shifts.py), so the loss can ask for the same score on both.

A batch of n augmented films becomes k = ceil(n / 2) films and their k shifted copies, interleaved (film, copy,
film, copy, ...), so a batch keeps about its size and cost: at equal steps an epoch sees half as many distinct
films, each twice. Interleaving keeps every pair inside any even split of the batch (tf.distribute replicas).
The shift and its strength, uniform in [0, `strength`], are drawn per film from a stateless seed per batch, new
every epoch, as for the augmentation (data/pipeline.py). Only held-in shifts are drawn: the stress test's
held-out shifts stay a fair test of what this buys.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cxr_keras.data.shifts import GROUPS, SHIFTS


def paired_batches(ds: tf.data.Dataset, seed: int = 0, strength: float = 1.0) -> tf.data.Dataset:
    """(images, targets) batches -> interleaved (film, shifted copy) batches with their targets repeated."""
    if not 0 < strength <= 1:
        raise ValueError(f"consistency shift strength must be in (0, 1], got {strength}")
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(ds, seeds).map(lambda batch, s: pair(*batch, s, strength))


def pair(images: tf.Tensor, targets: tf.Tensor, seed: tf.Tensor, strength: float = 1.0
         ) -> tuple[tf.Tensor, tf.Tensor]:
    """The first ceil(n / 2) films of a batch, each followed by its shifted copy; `seed` a stateless seed pair."""
    k = (tf.shape(images)[0] + 1) // 2
    films = tf.cast(images[:k], tf.float32)
    draws = tf.random.stateless_uniform([k, 3], tf.cast(seed, tf.int64))
    pixels = tf.cast(tf.clip_by_value(tf.round(films), 0.0, 255.0), tf.uint8)
    copies = tf.numpy_function(shift_copies, [pixels, draws, float(strength)], tf.uint8, stateful=False)
    copies = tf.cast(tf.ensure_shape(copies, pixels.shape), tf.float32)
    return _interleave(films, copies), _interleave(targets[:k], targets[:k])


def shift_copies(images: np.ndarray, draws: np.ndarray, strength: float) -> np.ndarray:
    """Image i under held-in shift number floor(draws[i, 0] * 7) at strength draws[i, 1] * `strength`, its
    randomness (noise) seeded by draws[i, 2]."""
    names = GROUPS["held-in"]
    out = np.empty_like(images)
    for i, image in enumerate(images):
        name = names[min(int(draws[i, 0] * len(names)), len(names) - 1)]
        rng = np.random.default_rng(int(draws[i, 2] * 2**31))
        out[i] = SHIFTS[name](image[..., 0], float(draws[i, 1] * strength), rng)[..., None]
    return out


def _interleave(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """[a0, b0, a1, b1, ...]."""
    stacked = tf.stack([a, tf.cast(b, a.dtype)], axis=1)
    return tf.reshape(stacked, tf.concat([[-1], tf.shape(a)[1:]], axis=0))
