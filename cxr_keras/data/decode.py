"""The tf.data side of reading a film: `data/image_io.py`'s decoder and resize, called through
`tf.numpy_function`, so the pipeline, the verification pass and `cxr predict` produce the same pixels."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cxr_keras.data.image_io import RESIZE_MODES, load_gray

__all__ = ["RESIZE_MODES", "load_image", "load_image_numpy"]


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
