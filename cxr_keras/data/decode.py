"""Bytes to a resized single-channel uint8 image, with TensorFlow ops (DICOM through pydicom).

The same function serves the verification pass and the tf.data pipeline, so a file that passed
verification cannot fail to decode mid-epoch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cxr_keras.data.dicom import DICOM_MAGIC, DICOM_MAGIC_OFFSET, dicom_to_uint8

RESIZE_MODES = ("stretch", "pad")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_BIT_DEPTH_OFFSET = 24  # 8-byte signature, 4-byte length, 'IHDR', width, height, then bit depth


def _to_gray(image: tf.Tensor) -> tf.Tensor:
    """(H, W, C) float -> (H, W, 1): luminance for RGB(A), the gray channel for L/LA."""
    channels = tf.shape(image)[-1]
    rgb_weights = tf.constant([0.2989, 0.5870, 0.1140], dtype=tf.float32)

    def from_rgb() -> tf.Tensor:
        return tf.reduce_sum(image[..., :3] * rgb_weights, axis=-1, keepdims=True)

    return tf.cond(channels >= 3, from_rgb, lambda: image[..., :1])


def _bytes_at(contents: tf.Tensor, position: int, length: int) -> tf.Tensor:
    """contents[position:position + length], zero-padded: substr alone fails on files shorter than that."""
    padded = tf.strings.join([tf.strings.substr(contents, 0, position + length), b"\0" * (position + length)])
    return tf.strings.substr(padded, position, length)


def _is_png16(contents: tf.Tensor) -> tf.Tensor:
    is_png = tf.equal(_bytes_at(contents, 0, 8), PNG_SIGNATURE)
    return tf.logical_and(is_png, tf.equal(_bytes_at(contents, PNG_BIT_DEPTH_OFFSET, 1), b"\x10"))


def _decode_png16(contents: tf.Tensor) -> tf.Tensor:
    """16-bit PNG (often 12 bits used): min..max stretched to 0..255."""
    gray = _to_gray(tf.cast(tf.io.decode_png(contents, channels=0, dtype=tf.uint16), tf.float32))
    lo, hi = tf.reduce_min(gray), tf.reduce_max(gray)
    return tf.math.divide_no_nan(gray - lo, hi - lo) * 255.0


def _decode_standard(contents: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(contents, channels=0, dtype=tf.uint8, expand_animations=False)
    return _to_gray(tf.cast(image, tf.float32))


def _as_bytes(value) -> bytes:
    """numpy_function hands a scalar string over as `bytes` inside tf.data (graph) and as a 0-d array eagerly."""
    return value if isinstance(value, bytes) else value.item()


def _decode_dicom(contents: tf.Tensor) -> tf.Tensor:
    image = tf.numpy_function(lambda b: dicom_to_uint8(_as_bytes(b)), [contents], tf.uint8, stateful=False)
    return tf.cast(tf.expand_dims(tf.ensure_shape(image, [None, None]), -1), tf.float32)


def decode_gray(contents: tf.Tensor) -> tf.Tensor:
    """Decode PNG (8/16-bit), JPEG, BMP, GIF or DICOM bytes to a (H, W, 1) float32 image in 0..255."""
    is_dicom = tf.equal(_bytes_at(contents, DICOM_MAGIC_OFFSET, 4), DICOM_MAGIC)
    return tf.case(
        [(is_dicom, lambda: _decode_dicom(contents)), (_is_png16(contents), lambda: _decode_png16(contents))],
        default=lambda: _decode_standard(contents),
    )


def resize_gray(image: tf.Tensor, size: tuple[int, int], mode: str = "stretch") -> tf.Tensor:
    """Resize a (H, W, 1) float image to `size` = (height, width) and return uint8.

    `stretch` ignores the aspect ratio (as the usual Keras recipes do); `pad` keeps it and pads with black.
    """
    if mode == "stretch":
        image = tf.image.resize(image, size, method="bilinear", antialias=True)
    elif mode == "pad":
        image = tf.image.resize_with_pad(image, size[0], size[1], method="bilinear", antialias=True)
    else:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def load_image(path: tf.Tensor, size: tuple[int, int], mode: str = "stretch") -> tf.Tensor:
    """Read, decode and resize one file to (height, width, 1) uint8."""
    image = resize_gray(decode_gray(tf.io.read_file(path)), size, mode)
    return tf.ensure_shape(image, [size[0], size[1], 1])


def load_image_numpy(path: str, size: tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """Eager convenience wrapper of `load_image` for one file."""
    return load_image(tf.constant(path), size, mode).numpy()
