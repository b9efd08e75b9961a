"""The cheap checks before the model: each trips on a constructed image made to fail it, and real films pass."""

import glob
import io
import os

import numpy as np
import pytest
from PIL import Image

from cxr_keras.data.input_checks import colour_deviation, failed_check, polarity

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets")


def _film(height=256, width=256):
    """A film-like image: dark lung fields either side of a bright central column, bright outside the chest."""
    image = np.full((height, width), 200, np.uint8)
    image[:, int(0.1 * width) : int(0.9 * width)] = 60  # lungs
    image[:, int(0.4 * width) : int(0.6 * width)] = 190  # mediastinum and spine
    noise = np.random.default_rng(0).integers(0, 10, image.shape)
    return (image + noise).astype(np.uint8)


def _png(array, mode=None):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_film_like_image_passes():
    film = _film()
    assert polarity(film) > 0
    assert failed_check(film, _png(film)) is None


@pytest.mark.parametrize("reason, make", [
    ("inverted", lambda f: 255 - f),
    ("blank", lambda f: np.full_like(f, 128)),
    ("saturated", lambda f: np.where(np.arange(f.size).reshape(f.shape) % 10 < 9, 255, f).astype(np.uint8)),
    ("aspect", lambda f: f[:, :80]),
    ("tiny", lambda f: f[:40, :40]),
])
def test_each_check_trips_on_its_own_image(reason, make):
    image = make(_film())
    assert failed_check(image, _png(image)) == reason


def test_colour_trips_on_a_photograph_and_not_on_gray_saved_as_rgb():
    film = _film()
    gray_rgb = np.repeat(film[..., None], 3, axis=2)
    assert colour_deviation(_png(gray_rgb)) == 0.0
    assert failed_check(film, _png(gray_rgb)) is None
    photo = gray_rgb.copy()
    photo[..., 0] = np.clip(photo[..., 0].astype(int) + 40, 0, 255)  # a warm cast
    assert failed_check(film, _png(photo)) == "colour"


def test_jpeg_chroma_noise_of_a_gray_film_is_not_colour():
    film = np.repeat(_film()[..., None], 3, axis=2)
    buffer = io.BytesIO()
    Image.fromarray(film).save(buffer, "JPEG", quality=60)
    assert colour_deviation(buffer.getvalue()) < 1.0


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/datasets is absent (a fresh clone)")
@pytest.mark.parametrize("pattern", ["kermany/train/*/*", "covid-radiography-2class/Normal/*"])
def test_real_films_pass_and_their_negatives_do_not(pattern):
    from cxr_keras.data.image_io import read_bytes, read_gray

    files = sorted(glob.glob(os.path.join(SHARED, pattern)))[::97][:20]
    if not files:
        pytest.skip(f"no files match {pattern}")
    passed = inverted = 0
    for path in files:
        data = read_bytes(path)
        film = read_gray(data)
        passed += failed_check(film, data) is None
        inverted += failed_check(255 - film) == "inverted"
    assert passed >= 0.95 * len(files) and inverted >= 0.95 * len(files)
