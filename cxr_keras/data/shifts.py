"""Graded acquisition shifts for the stress test: what another scanner, site or workflow does to an X-ray.

Two groups. HELD_IN are the kinds a training option may apply (the `acquisition` augmentation, the
consistency loss, and the `shift-mean` / `shift-worst` threshold rules look at them); HELD_OUT are kinds no
training option or rule ever sees, so the stress test's held-out rows measure robustness without circularity
(tests/test_stress.py checks that no augmentation preset names one).

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


def poisson(image: np.ndarray, s: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Quantum (Poisson) noise of a low dose: 10^(4.25 - 2.5 s) photons per pixel through air, attenuated by
    exp(-3 x / 255), counted and logged back, so the bright (attenuated, photon-starved) parts are the noisiest
    (in the mid-greys about 3 grey levels at s 0.25, 6 at 0.5, 24 at 1)."""
    if s == 0:
        return image.copy()
    rng = rng if rng is not None else np.random.default_rng(0)
    full = 10 ** (4.25 - 2.5 * s)
    counts = rng.poisson(full * np.exp(-3 * image.astype(np.float64) / 255))
    return _u8(-255 / 3 * np.log(np.maximum(counts, 0.5) / full))


def grid(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Anti-scatter grid lines: vertical stripes every 2 % of the width, darkening up to 30 s % (a stationary
    grid, or a moving one that did not move)."""
    w = image.shape[1]
    phase = 2 * np.pi * np.arange(w) / max(2.0, 0.02 * w)
    stripes = 1 - 0.3 * s * (0.5 + 0.5 * np.cos(phase))
    return _u8(image.astype(np.float32) * stripes[None, :].astype(np.float32))


def unsharp(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Vendor edge enhancement: unsharp masking of amount 3 s with a Gaussian of 1 % of the image side (the
    large-kernel sharpening of a CR/DR console)."""
    if s == 0:
        return image.copy()
    x = image.astype(np.float32)
    smooth = cv2.GaussianBlur(x, (0, 0), sigmaX=max(0.5, 0.01 * max(image.shape)))
    return _u8(x + 3 * s * (x - smooth))


def bitdepth(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Reduced bit depth: 2^(8 - 5 s) grey levels (3 bits at s 1; a windowed 8-bit export, an old digitiser)."""
    levels = round(2 ** (8 - 5 * s))
    if levels >= 256:
        return image.copy()
    step = 256 / levels
    return _u8(np.floor(image.astype(np.float32) / step) * step + step / 2)


def heel(image: np.ndarray, s: float, rng=None) -> np.ndarray:
    """Heel effect and vignetting: exposure falling 20 s % from one end of the film to the other and up to
    50 s grey levels darker towards the corners (an uneven beam, a detector's fall-off)."""
    h, w = image.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    ramp = 1 + 0.1 * s * (2 * yy / max(1, h - 1) - 1)
    radius2 = ((xx - (w - 1) / 2) ** 2 + (yy - (h - 1) / 2) ** 2) / (((w - 1) / 2) ** 2 + ((h - 1) / 2) ** 2 or 1)
    return _u8(image.astype(np.float32) * ramp - 50 * s * radius2)


HELD_IN = (contrast, gamma, blur, noise, resolution, jpeg, crop)
HELD_OUT = (text, poisson, grid, unsharp, bitdepth, heel)
SHIFTS = {f.__name__: f for f in (*HELD_IN, *HELD_OUT)}
GROUPS = {"held-in": tuple(f.__name__ for f in HELD_IN), "held-out": tuple(f.__name__ for f in HELD_OUT)}


def group_of(name: str) -> str:
    """'held-in' or 'held-out'."""
    return next(group for group, names in GROUPS.items() if name in names)


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
