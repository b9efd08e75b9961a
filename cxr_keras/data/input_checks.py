"""Cheap checks that a file is a chest film at all, before any model sees it; each failure is a named reason.

    colour     the channels differ (a photograph, a screenshot with coloured annotations)
    inverted   the mediastinum is darker than the lung fields beside it: a negative, e.g. a MONOCHROME1 film
               shown as stored
    blank      almost no contrast (standard deviation under 4 grey levels)
    saturated  most pixels (80%) at black or white
    aspect     one side more than 2.5 times the other (a strip, a scanned page, a panel of a figure)
    tiny       the short side under 64 px (a thumbnail)

Thresholds were set on real films: on 300 each of the Kermany, COVID-19 Radiography and DarkCovidNet films, the
polarity figure (central column minus lung fields, in image standard deviations) was above 0 for 100%, 99% and
96% of them, and below 0 for as many of their negatives; no film was coloured (largest mean channel deviation
0.0 grey levels), the largest aspect ratio was 1.67. Numpy and Pillow only: the edge install runs these too.
"""

from __future__ import annotations

import io

import numpy as np

CHECKS = ("colour", "inverted", "blank", "saturated", "aspect", "tiny")
COLOUR_DEVIATION = 2.0  # mean |channel - mean of channels|, grey levels; JPEG chroma noise stays far below
MIN_CONTRAST = 4.0
SATURATED_FRACTION = 0.8
MAX_ASPECT = 2.5
MIN_SIDE = 64


def colour_deviation(data: bytes) -> float:
    """Mean absolute difference between a file's colour channels and their mean (0 for gray and DICOM files)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        if image.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
            return 0.0
        image.draft("RGB", (512, 512))  # JPEG: decode at reduced scale, enough for a mean
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    except Exception:  # DICOM and anything Pillow cannot open carry no colour
        return 0.0
    return float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean())


def polarity(gray: np.ndarray) -> float:
    """Central column (mediastinum, spine) minus the lung fields on either side, over the middle half of the rows,
    in standard deviations of the image: positive on a film shown as radiologists read it, negative on a
    negative."""
    image = np.asarray(gray, dtype=np.float32)
    height, width = image.shape
    rows = slice(int(0.25 * height), int(0.75 * height))
    centre = image[rows, int(0.42 * width) : int(0.58 * width)].mean()
    lungs = np.concatenate([image[rows, int(0.15 * width) : int(0.35 * width)].ravel(),
                            image[rows, int(0.65 * width) : int(0.85 * width)].ravel()]).mean()
    return float((centre - lungs) / (image.std() + 1e-6))


def failed_check(gray: np.ndarray, data: bytes | None = None) -> str | None:
    """The first check a (H, W) uint8 film fails, or None. `data`: the file's bytes, for the colour check."""
    height, width = gray.shape
    if min(height, width) < MIN_SIDE:
        return "tiny"
    if max(height, width) > MAX_ASPECT * min(height, width):
        return "aspect"
    if data is not None and colour_deviation(data) > COLOUR_DEVIATION:
        return "colour"
    if float(np.std(gray)) < MIN_CONTRAST:
        return "blank"
    if float(np.mean((gray <= 0) | (gray >= 255))) > SATURATED_FRACTION:
        return "saturated"
    if polarity(gray) < 0:
        return "inverted"
    return None
