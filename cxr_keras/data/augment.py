"""Batch augmentation for chest X-rays: presets of one fused affine warp plus intensity changes.

Keras offers RandomRotation, RandomZoom and RandomTranslation as separate layers, each resampling the image:
three warps cost three times the CPU and blur three times. `ChestXrayAugment` composes rotation, zoom, shift,
shear and (optional) flip into one matrix per image and resamples once; gamma, contrast and brightness fold into
one 256-entry table per image. Horizontal flip is off by default: the heart sits on the patient's left, and a
flipped chest film shows situs inversus, not a normal variant.

The random draws are TensorFlow's, stateless and keyed by an explicit seed per batch, so the augmentations are
the same for the same seed whatever the parallelism. The `acquisition` preset adds what another scanner or
workflow does to a film (blur, lost resolution, JPEG re-encoding: data/shifts.py, the stress test's shifts) at
up to part of the stress test's full strength, each to half of the images.

The pixel work is OpenCV's `LUT` and `warpAffine` on the uint8 images: several times faster on CPU than
TensorFlow's ImageProjectiveTransformV3 (which Keras' layers use) and the float passes around it, and
augmentation is the pipeline's main cost once decoded images are cached.
"""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np
import tensorflow as tf

PRESETS: dict[str, dict] = {
    "none": {},
    "light": dict(rotation=5.0, zoom=0.05, shift=0.04, brightness=0.05, contrast=0.1),
    "standard": dict(rotation=10.0, zoom=0.10, shift=0.08, shear=3.0, brightness=0.10, contrast=0.2, gamma=0.2),
    "strong": dict(rotation=15.0, zoom=0.15, shift=0.10, shear=5.0, brightness=0.15, contrast=0.3, gamma=0.3,
                   noise=4.0, cutout=0.15),
    "acquisition": dict(rotation=10.0, zoom=0.10, shift=0.08, shear=3.0, brightness=0.10, contrast=0.3, gamma=0.3,
                        noise=4.0, blur=0.6, resolution=0.6, jpeg=0.8),
}
GEOMETRY = ("rotation", "zoom", "shift", "shear", "flip")
TONE = ("gamma", "contrast", "brightness")
DEGRADE = ("blur", "resolution", "jpeg")  # highest strength, as a fraction of data/shifts.py's full strength


@keras.saving.register_keras_serializable(package="cxr_keras")
class ChestXrayAugment(keras.layers.Layer):
    """Random gamma/contrast/brightness (one table lookup) and affine warp (one resample) on (B, H, W, C) 0..255
    images, in uint8 (float inputs are rounded to whole levels first), then float32 noise; returns float32.

    rotation and shear in degrees; zoom and shift as fractions of the image size; brightness as a fraction of
    255; contrast and gamma as the half-width of the random factor's range around 1; noise as the standard
    deviation in pixel values; blur, resolution and jpeg as the highest strength (0..1) of data/shifts.py's
    shift of that name, applied to a random half of the images at a uniform strength; cutout as the largest
    side of one `fill_value` rectangle per image, as a fraction of the image's side. `call(images, seed=...)`
    takes a (2,) int seed for stateless draws. Meant for tf.data (it calls OpenCV through `tf.numpy_function`),
    not for inside a saved model.
    """

    def __init__(self, rotation=0.0, zoom=0.0, shift=0.0, shear=0.0, flip=False, brightness=0.0,
                 contrast=0.0, gamma=0.0, noise=0.0, fill_value=0.0, blur=0.0, resolution=0.0, jpeg=0.0,
                 cutout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.params = dict(rotation=rotation, zoom=zoom, shift=shift, shear=shear, flip=flip,
                           brightness=brightness, contrast=contrast, gamma=gamma, noise=noise, fill_value=fill_value,
                           blur=blur, resolution=resolution, jpeg=jpeg, cutout=cutout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, seed=None, training=True):
        p = self.params
        if not training or not any(p[k] for k in (*GEOMETRY, *TONE, *DEGRADE, "noise", "cutout")):
            return tf.cast(images, tf.float32)
        seed = self.seed_generator.next() if seed is None else seed
        geometry_seed, intensity_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if images.dtype != tf.uint8:  # 0..255 floats (e.g. image_dataset_from_directory's) to whole levels
            images = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)
        if any(p[k] for k in (*GEOMETRY, *TONE)):
            draws = [self._matrices(images, geometry_seed), self._tone_draws(images, intensity_seed)]
            warped = tf.numpy_function(_tone_and_warp, [images, *draws, float(p["fill_value"])], tf.uint8,
                                       stateful=False)
            images = tf.ensure_shape(warped, images.shape)
        if any(p[k] for k in DEGRADE):
            draws = tf.random.stateless_uniform([tf.shape(images)[0], len(DEGRADE)],
                                                tf.random.experimental.stateless_fold_in(intensity_seed, 20))
            strengths = tf.constant([float(p[k]) for k in DEGRADE])
            degraded = tf.numpy_function(_degrade, [images, draws, strengths], tf.uint8, stateful=False)
            images = tf.ensure_shape(degraded, images.shape)
        return self._cutout(self._noise(tf.cast(images, tf.float32), intensity_seed), geometry_seed)

    def _uniform(self, seed, batch, half_width, index):
        seed = tf.random.experimental.stateless_fold_in(seed, index)
        return tf.random.stateless_uniform([batch], seed, -half_width, half_width)

    def _matrices(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """(B, 2, 3) affine maps from output to input pixel coordinates (empty when there is no geometry)."""
        p = self.params
        batch = tf.shape(images)[0]
        if not any(p[k] for k in GEOMETRY):
            return tf.zeros([batch, 0, 3])
        h, w = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
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
        return tf.reshape(tf.stack([a00, a01, a02, a10, a11, a12], axis=1), [batch, 2, 3])

    def _tone_draws(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """(B, 3): gamma, contrast factor and brightness shift (pixel values) per image; (B, 0) when none."""
        p = self.params
        batch = tf.shape(images)[0]
        if not any(p[k] for k in TONE):
            return tf.zeros([batch, 0])
        gamma = tf.exp(self._uniform(seed, batch, p["gamma"], 10))
        factor = 1.0 + self._uniform(seed, batch, p["contrast"], 11)
        shift = 255.0 * self._uniform(seed, batch, p["brightness"], 12)
        return tf.stack([gamma, factor, shift], axis=1)

    def _noise(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        if not self.params["noise"]:
            return images
        noise = tf.random.stateless_normal(tf.shape(images), tf.random.experimental.stateless_fold_in(seed, 13),
                                           stddev=self.params["noise"])
        return tf.clip_by_value(images + noise, 0.0, 255.0)

    def _cutout(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One rectangle per image set to `fill_value`, each side 5%..cutout of the image's, centred anywhere
        (keras-cv's RandomCutout, drawn here from the batch's stateless seed: keras-cv's own draws restart with
        every epoch's tf.data iterator, repeating each batch position's rectangle every epoch)."""
        factor = self.params["cutout"]
        if not factor:
            return images
        shape = tf.shape(images)
        draws = tf.random.stateless_uniform([shape[0], 4], tf.random.experimental.stateless_fold_in(seed, 14))
        low = min(0.05, factor)

        def inside(length, size_draw, centre_draw):
            length = tf.cast(length, tf.float32)
            half = (low + (factor - low) * size_draw[:, None]) * length / 2
            centre = centre_draw[:, None] * length
            return tf.abs(tf.range(length)[None, :] + 0.5 - centre) <= half

        rows, cols = inside(shape[1], draws[:, 0], draws[:, 2]), inside(shape[2], draws[:, 1], draws[:, 3])
        hole = (rows[:, :, None] & cols[:, None, :])[..., None]
        return tf.where(hole, tf.cast(self.params["fill_value"], images.dtype), images)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), **self.params, "seed": self.seed}


LEVELS = np.arange(256) / 255.0


def tone_table(image: np.ndarray, gamma: float, factor: float, shift: float) -> np.ndarray:
    """The 256-entry uint8 table of 255 (x/255)^gamma, then contrast `factor` about the image's mean level
    through the same gamma, then `shift`; rounded and clipped to whole levels."""
    table = 255.0 * LEVELS**gamma
    if factor != 1.0:
        # The mean through the curve rather than the curve's mean: one SIMD pass instead of a histogram.
        centre = 255.0 * (cv2.mean(image)[0] / 255.0) ** gamma
        table = centre + (table - centre) * factor
    return np.clip(np.round(table + shift), 0, 255).astype(np.uint8)


def _tone_and_warp(images: np.ndarray, matrices: np.ndarray, tones: np.ndarray, fill: float) -> np.ndarray:
    """Each image through its tone table, then resampled once (bilinear) by its output -> input affine map."""
    out = np.empty_like(images)
    height, width = images.shape[1:3]
    for i, image in enumerate(images):
        if tones.shape[1]:
            image = cv2.LUT(image, tone_table(image, *tones[i]))
        if matrices.shape[1]:
            image = cv2.warpAffine(image, matrices[i].astype(np.float64), (width, height),
                                   flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=float(fill))
        out[i] = image.reshape(out.shape[1:])
    return out


def _degrade(images: np.ndarray, draws: np.ndarray, strengths: np.ndarray) -> np.ndarray:
    """Blur, resolution and JPEG shifts (data/shifts.py): each applied when its draw u > 0.5, at strength
    (2u - 1) times its highest strength."""
    from cxr_keras.data.shifts import SHIFTS

    out = images.copy()
    for i in range(len(images)):
        for k, name in enumerate(DEGRADE):
            if strengths[k] > 0 and draws[i, k] > 0.5:
                image = out[i].reshape(out.shape[1:3])
                out[i] = SHIFTS[name](image, float((2 * draws[i, k] - 1) * strengths[k])).reshape(out.shape[1:])
    return out


def augmenter(preset: str, seed: int | None = None) -> ChestXrayAugment | None:
    """The preset's augmentation layer (None for `none`)."""
    if preset not in PRESETS:
        raise ValueError(f"augmentation preset must be one of {list(PRESETS)}, got {preset!r}")
    return ChestXrayAugment(**PRESETS[preset], seed=seed) if PRESETS[preset] else None
