"""Batch augmentation for chest X-rays: presets of one fused affine warp plus intensity changes.

Keras offers RandomRotation, RandomZoom and RandomTranslation as separate layers, each resampling the image:
three warps cost three times the CPU and blur three times. `ChestXrayAugment` composes rotation, zoom, shift,
shear and (optional) flip into one matrix per image and resamples once, with the same op Keras uses
(ImageProjectiveTransformV3). Horizontal flip is off by default: the heart sits on the patient's left, and a
flipped chest film shows situs inversus, not a normal variant.

Randomness is stateless and keyed by an explicit seed per batch, so the pipeline's augmentations are the same
for the same seed whatever the parallelism.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

PRESETS: dict[str, dict] = {
    "none": {},
    "light": dict(rotation=5.0, zoom=0.05, shift=0.04, brightness=0.05, contrast=0.1),
    "standard": dict(rotation=10.0, zoom=0.10, shift=0.08, shear=3.0, brightness=0.10, contrast=0.2, gamma=0.2),
    "strong": dict(rotation=15.0, zoom=0.15, shift=0.10, shear=5.0, brightness=0.15, contrast=0.3, gamma=0.3,
                   noise=4.0, cutout=0.15),
}


@keras.saving.register_keras_serializable(package="cxr_keras")
class ChestXrayAugment(keras.layers.Layer):
    """Random affine warp (one resample) and brightness/contrast/gamma/noise on (B, H, W, C) 0..255 images.

    rotation and shear in degrees; zoom and shift as fractions of the image size; brightness as a fraction of
    255; contrast and gamma as the half-width of the random factor's range around 1; noise as the standard
    deviation in pixel values. `call(images, seed=...)` takes a (2,) int seed for stateless draws.
    """

    def __init__(self, rotation=0.0, zoom=0.0, shift=0.0, shear=0.0, flip=False, brightness=0.0,
                 contrast=0.0, gamma=0.0, noise=0.0, fill_value=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.params = dict(rotation=rotation, zoom=zoom, shift=shift, shear=shear, flip=flip,
                           brightness=brightness, contrast=contrast, gamma=gamma, noise=noise, fill_value=fill_value)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, seed=None, training=True):
        images = tf.cast(images, tf.float32)
        if not training:
            return images
        seed = self.seed_generator.next() if seed is None else seed
        geometry_seed, intensity_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        images = self._gamma(images, intensity_seed)  # on whole pixel values, before the warp interpolates
        images = self._warp(images, geometry_seed)
        return tf.clip_by_value(self._intensity(images, intensity_seed), 0.0, 255.0)

    def _uniform(self, seed, batch, half_width, index):
        seed = tf.random.experimental.stateless_fold_in(seed, index)
        return tf.random.stateless_uniform([batch], seed, -half_width, half_width)

    def _warp(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        p = self.params
        if not any(p[k] for k in ("rotation", "zoom", "shift", "shear", "flip")):
            return images
        batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
        h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
        angle = self._uniform(seed, batch, p["rotation"] * math.pi / 180, 0)
        shear = self._uniform(seed, batch, p["shear"] * math.pi / 180, 1)
        inv_zoom = 1.0 / (1.0 + self._uniform(seed, batch, p["zoom"], 2))
        tx = self._uniform(seed, batch, p["shift"], 3) * w
        ty = self._uniform(seed, batch, p["shift"], 4) * h
        flip = tf.ones([batch])
        if p["flip"]:
            flip = tf.where(self._uniform(seed, batch, 1.0, 5) > 0, -1.0, 1.0)
        # Output pixel -> input pixel: in = A (out - c) + c - t, with A = rotation . shear . zoom^-1 . flip.
        cos, sin = tf.cos(angle), tf.sin(angle)
        a00, a01 = cos * inv_zoom * flip, (-sin + cos * tf.tan(shear)) * inv_zoom
        a10, a11 = sin * inv_zoom * flip, (cos + sin * tf.tan(shear)) * inv_zoom
        cx, cy = (w - 1) / 2, (h - 1) / 2
        a02 = cx - a00 * cx - a01 * cy - tx
        a12 = cy - a10 * cx - a11 * cy - ty
        zeros = tf.zeros([batch])
        transforms = tf.stack([a00, a01, a02, a10, a11, a12, zeros, zeros], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=tf.stack([height, width]),
            fill_value=float(p["fill_value"]), interpolation="BILINEAR", fill_mode="CONSTANT",
        )

    def _gamma(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """255 (x / 255) ** g per image, through a 256-entry table per image: a gather is several times
        cheaper than `pow` on every pixel."""
        if not self.params["gamma"]:
            return images
        batch = tf.shape(images)[0]
        gamma = tf.exp(self._uniform(seed, batch, self.params["gamma"], 10))
        table = 255.0 * tf.pow(tf.linspace(0.0, 1.0, 256)[None, :], gamma[:, None])  # (B, 256)
        levels = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.int32)
        offsets = tf.reshape(tf.range(batch) * 256, [-1, 1, 1, 1])
        return tf.gather(tf.reshape(table, [-1]), levels + offsets)

    def _intensity(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        p = self.params
        batch = tf.shape(images)[0]
        per_image = [batch, 1, 1, 1]
        if p["contrast"]:
            factor = 1.0 + tf.reshape(self._uniform(seed, batch, p["contrast"], 11), per_image)
            mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
            images = mean + (images - mean) * factor
        if p["brightness"]:
            images += 255.0 * tf.reshape(self._uniform(seed, batch, p["brightness"], 12), per_image)
        if p["noise"]:
            noise_seed = tf.random.experimental.stateless_fold_in(seed, 13)
            images += tf.random.stateless_normal(tf.shape(images), noise_seed, stddev=p["noise"])
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), **self.params, "seed": self.seed}


def cutout_layer(factor: float, seed: int | None = None) -> keras.layers.Layer:
    """keras-cv's RandomCutout: one black rectangle per image, up to `factor` of each side.

    It makes a model look beyond a single region (e.g. a burned-in marker); used by the `strong` preset.
    """
    import keras_cv

    return keras_cv.layers.RandomCutout(
        height_factor=(0.05, factor), width_factor=(0.05, factor), fill_mode="constant", fill_value=0.0, seed=seed
    )


def augmenter(preset: str, seed: int | None = None) -> tuple[ChestXrayAugment | None, keras.layers.Layer | None]:
    """The preset's fused warp/intensity layer and, for `strong`, the keras-cv cutout layer (else None)."""
    if preset not in PRESETS:
        raise ValueError(f"augmentation preset must be one of {list(PRESETS)}, got {preset!r}")
    params = dict(PRESETS[preset])
    cutout = params.pop("cutout", 0.0)
    fused = ChestXrayAugment(**params, seed=seed) if params else None
    return fused, (cutout_layer(cutout, seed) if cutout else None)
