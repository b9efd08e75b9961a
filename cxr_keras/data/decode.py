"""Films to the pipeline's pixels: `data/image_io.py`'s decoder and resize, one file inside tf.data
(`tf.numpy_function`) or every file at once into the uint8 cache, so the pipeline, the verification pass and
`cxr predict` produce the same pixels."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from cxr_keras.data.image_io import RESIZE_MODES, ImageReadError, load_gray

__all__ = ["RESIZE_MODES", "TENSOR_ALIGNMENT", "aligned_empty", "decode_all", "load_image", "load_image_numpy"]
TENSOR_ALIGNMENT = 64  # bytes: TensorFlow's CPU allocator alignment, required to alias a numpy buffer


def load_image(path: tf.Tensor, size: tuple[int, int], mode: str = "stretch") -> tf.Tensor:
    """Read, decode and resize one file (a scalar string tensor) to (height, width, 1) uint8."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")

    def load(value) -> np.ndarray:
        return load_gray(_as_str(value), size, mode)

    image = tf.numpy_function(load, [path], tf.uint8, stateful=False)
    return tf.ensure_shape(image, [size[0], size[1], 1])


def _as_str(value) -> str:
    """numpy_function hands a scalar string over as `bytes` inside tf.data (graph) and as a 0-d array eagerly."""
    value = value if isinstance(value, bytes) else value.item()
    return value.decode() if isinstance(value, bytes) else str(value)


def load_image_numpy(path: str, size: tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """The same pixels as `load_image`, for one file, without TensorFlow."""
    return load_gray(path, size, mode)


def decode_all(paths: list[str], image_size: tuple[int, int], resize: str = "stretch",
               verbose: bool = False) -> np.ndarray:
    """Decode and resize every file, in threads (Pillow lets go of the GIL), into one (N, H, W, 1) uint8 array.

    A file that passed verification but cannot be read now (changed or made unreadable since) is one
    ImageReadError naming it, before any epoch starts."""
    import keras

    images = aligned_empty((len(paths), *image_size, 1))
    progress = keras.utils.Progbar(len(paths), unit_name="image", verbose=1 if sys.stdout.isatty() else 2
                                   ) if verbose else None

    def load(index: int) -> int:
        try:
            images[index] = load_gray(paths[index], image_size, resize)
        except ImageReadError as exc:
            raise ImageReadError(f"{paths[index]}: {exc}; it was readable when the data was verified: fix or "
                                 "remove it, then start again") from None
        return index

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for done, _ in enumerate(pool.map(load, range(len(paths))), start=1):
            if progress and (done % 256 == 0 or done == len(paths)):
                progress.update(done)
    return images


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array whose data starts on a TENSOR_ALIGNMENT boundary."""
    size = int(np.prod(shape))
    buffer = np.empty(size + TENSOR_ALIGNMENT, dtype=np.uint8)
    offset = -buffer.ctypes.data % TENSOR_ALIGNMENT
    return buffer[offset : offset + size].reshape(shape)
