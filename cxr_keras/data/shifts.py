"""Graded acquisition shifts for the stress test: what another scanner, site or workflow does to an X-ray.

Each shift maps a (H, W) uint8 image and a strength in [0, 1] to a new uint8 image: strength 0 is the image
itself, 1 a strong but still readable shift, and the change grows with the strength. Random shifts (noise) are
seeded by (seed, image index), so a stress test is repeatable image by image. Sizes (blur, text, crop) are
relative to the image, so a shift means the same at 64 px and at 512 px. Written with OpenCV and numpy
because no library offers these graded, deterministic per-image corruptions on single-channel X-rays
(keras augmentation layers are random by design and tied to training).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

STRENGTHS = (0.25, 0.5, 0.75, 1.0)


def contrast(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Contrast cut around the image's mean to 1 - 0.7 s (a flatter exposure)."""
    mean = image.mean()
    return _u8(mean + (1 - 0.7 * s) * (image.astype(np.float32) - mean))


def gamma(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Gamma 1 + s: mid-tones darker, as another detector's response curve."""
    return _u8(255 * (image.astype(np.float32) / 255) ** (1 + s))


def blur(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Gaussian blur, sigma 1.5 s % of the image side (motion, a soft detector)."""
    sigma = 0.015 * s * max(image.shape)
    return image.copy() if sigma == 0 else cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)


def noise(image: np.ndarray, s: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Additive Gaussian noise of 30 s grey levels (low dose, a portable unit)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return _u8(image.astype(np.float32) + 30 * s * rng.standard_normal(image.shape).astype(np.float32))


def resolution(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Down-sampled by 1 + 5 s and back (a low-resolution source, a screenshot, a phone photo of a film)."""
    factor = 1 + 5 * s
    if factor == 1:
        return image.copy()
    h, w = image.shape
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Re-encoded as JPEG of quality 90 - 85 s (5 at full strength; PACS exports, messaging apps)."""
    if s == 0:
        return image.copy()
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, round(90 - 85 * s)])
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def crop(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """15 s % of each border cut away and the rest stretched back (collimation, another field of view)."""
    h, w = image.shape
    dy, dx = round(0.15 * s * h), round(0.15 * s * w)
    if dy == dx == 0:
        return image.copy()
    return cv2.resize(image[dy:h - dy, dx:w - dx], (w, h), interpolation=cv2.INTER_LINEAR)


LABELS = ("R", "PORTABLE", "AP", "L", "SUPINE", "02/11")
PLACES = ((0.03, 0.1), (0.55, 0.1), (0.03, 0.95), (0.8, 0.95), (0.35, 0.5), (0.6, 0.5))


def text(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Burned-in white markers and annotations: ceil(6 s) of them, each 4 + 4 s % of the image high (laterality
    markers, 'PORTABLE', dates: the shortcuts a model can learn)."""
    out = image.copy()
    h, w = image.shape
    height = (0.04 + 0.04 * s) * h
    scale = height / 22  # Hershey simplex capitals are ~22 px high at scale 1
    for label, (x, y) in list(zip(LABELS, PLACES))[:math.ceil(6 * s)]:
        cv2.putText(out, label, (round(x * w), round(y * h)), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                    max(1, round(scale * 2)), cv2.LINE_AA)
    return out


SHIFTS = {f.__name__: f for f in (contrast, gamma, blur, noise, resolution, jpeg, crop, text)}


def apply_shift(name: str, images: np.ndarray, strength: float, seed: int = 0) -> np.ndarray:
    """`images` (N, H, W, 1) uint8 under one shift at one strength; image i's randomness is seeded (seed, i)."""
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; choose from {', '.join(SHIFTS)}")
    if not 0 <= strength <= 1:
        raise ValueError(f"shift strength must be in [0, 1], got {strength}")
    shift = SHIFTS[name]
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i, ..., 0] = shift(image[..., 0], strength, np.random.default_rng((seed, i)))
    return out


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
