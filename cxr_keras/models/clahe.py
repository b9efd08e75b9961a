"""CLAHE (contrast-limited adaptive histogram equalisation) as a Keras layer, so it lives inside the model.

OpenCV's `cv2.createCLAHE(clipLimit, tileGridSize).apply` on 8-bit images, step by step: a 256-bin histogram
per tile (the image reflected to a whole number of tiles), each bin clipped at max(clip x tile pixels / 256, 1)
with the excess spread evenly (the remainder one count at a time, every 256 // remainder bins), a lookup table
per tile from the cumulative histogram, and each pixel interpolated bilinearly between the tables of the four
nearest tile centres, in OpenCV's float32 order: the same pixels as OpenCV (tests/test_clahe.py).

Why by hand: neither Keras, keras-cv nor TensorFlow has CLAHE, and OpenCV inside the graph
(`tf.numpy_function`) would not export: with this layer a SavedModel or TFLite file applies the same CLAHE
as training did, to the raw pixels a deployment feeds it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

BINS = 256


@keras.saving.register_keras_serializable(package="cxr_keras")
class CLAHE(keras.layers.Layer):
    """(B, H, W, 1) pixels in 0..255 -> the same, equalised per tile (float32, whole grey levels)."""

    def __init__(self, clip_limit: float = 2.0, tiles: tuple[int, int] = (8, 8), **kwargs):
        super().__init__(**kwargs)
        if not clip_limit > 0:
            raise ValueError(f"CLAHE clip limit must be above 0, got {clip_limit}")
        self.clip_limit, self.tiles = float(clip_limit), (int(tiles[0]), int(tiles[1]))

    def build(self, input_shape):
        height, width = int(input_shape[1]), int(input_shape[2])
        rows, cols = self.tiles
        if height < rows or width < cols:
            raise ValueError(f"CLAHE with {rows} x {cols} tiles needs images of at least that many pixels, got "
                             f"{height} x {width}")
        divisible = height % rows == 0 and width % cols == 0
        # as OpenCV: once either side needs it, each side is padded by tiles - (size % tiles), a whole tile row
        # or column even where that side was divisible
        self._pad = (0, 0) if divisible else (rows - height % rows, cols - width % cols)
        self._tile = ((height + self._pad[0]) // rows, (width + self._pad[1]) // cols)
        self._rows, self._cols = _reflect_101(height, self._pad[0]), _reflect_101(width, self._pad[1])
        self._corners = _interpolation(height, width, self._tile, self.tiles)

    def call(self, images):
        levels = tf.cast(tf.clip_by_value(tf.round(tf.cast(images[..., 0], tf.float32)), 0, BINS - 1), tf.int32)
        tables = self._tables(levels)  # (B, tiles, BINS)
        batch = tf.shape(levels)[0]
        flat = tf.reshape(levels, [batch, -1])
        tables = tf.reshape(tables, [batch, -1])

        def read(tile_index):  # each pixel's level in the table of one of its four surrounding tiles
            return tf.gather(tables, tf.constant(tile_index)[None, :] * BINS + flat, batch_dims=1)

        (top_left, top_right, bottom_left, bottom_right), (fx, fy) = self._corners
        fx, fy = tf.constant(fx)[None, :], tf.constant(fy)[None, :]
        top = read(top_left) * (1 - fx) + read(top_right) * fx  # in OpenCV's order, for the same rounding
        bottom = read(bottom_left) * (1 - fx) + read(bottom_right) * fx
        out = tf.clip_by_value(tf.round(top * (1 - fy) + bottom * fy), 0, BINS - 1)
        return tf.reshape(out, tf.shape(images))

    def _tables(self, levels: tf.Tensor) -> tf.Tensor:
        """Per image and tile, the lookup table of the clipped, redistributed histogram."""
        rows, cols = self.tiles
        (th, tw), (ph, pw) = self._tile, self._pad
        if ph or pw:
            levels = tf.gather(tf.gather(levels, self._rows, axis=1), self._cols, axis=2)
        batch = tf.shape(levels)[0]
        tiles = tf.reshape(tf.transpose(tf.reshape(levels, [batch, rows, th, cols, tw]), [0, 1, 3, 2, 4]),
                           [batch, rows * cols, th * tw])
        segment = (tf.range(batch * rows * cols)[:, None] * BINS
                   + tf.reshape(tiles, [batch * rows * cols, th * tw]))
        hist = tf.math.unsorted_segment_sum(tf.ones_like(segment), segment, batch * rows * cols * BINS)
        hist = tf.reshape(hist, [batch, rows * cols, BINS])
        area = th * tw
        limit = max(int(self.clip_limit * area / BINS), 1)
        excess = tf.reduce_sum(tf.maximum(hist - limit, 0), axis=-1, keepdims=True)
        hist = tf.minimum(hist, limit) + excess // BINS
        hist += _residual(excess % BINS)
        return tf.round(tf.cast(tf.cumsum(hist, axis=-1), tf.float32) * ((BINS - 1) / area))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "clip_limit": self.clip_limit, "tiles": list(self.tiles)}


def _reflect_101(size: int, pad: int) -> np.ndarray:
    """Indices of a side of `size` pixels extended by `pad` as OpenCV's BORDER_REFLECT_101 does (... 2 1 | 0 1 2
    ... n-1 | n-2 ...), reflecting again when the pad is longer than the side (tf.pad's REFLECT refuses that)."""
    period = max(2 * size - 2, 1)
    index = np.arange(size + pad) % period
    return np.where(index < size, index, period - index).astype(np.int32)


def _residual(residual: tf.Tensor) -> tf.Tensor:
    """OpenCV's spread of the last `residual` clipped counts: one each to bins 0, step, 2 step, ... (step =
    max(BINS // residual, 1)), `residual` bins in all."""
    bins = tf.range(BINS)[None, None, :]
    step = tf.maximum(BINS // tf.maximum(residual, 1), 1)
    return tf.cast((residual > 0) & (bins % step == 0) & (bins // step < residual), tf.int32)


def _interpolation(height: int, width: int, tile: tuple[int, int], tiles: tuple[int, int]) -> tuple:
    """Per pixel (flattened): the four tiles it reads (top-left, top-right, bottom-left, bottom-right) and its
    horizontal and vertical interpolation weights, in float32 as OpenCV computes them (tile centres at
    (i + 0.5) x tile size, clamped at the edges)."""
    def axis(n, size, count):
        pos = np.arange(n, dtype=np.float32) * np.float32(1 / size) - np.float32(0.5)
        low = np.floor(pos).astype(int)
        frac = (pos - low).astype(np.float32)
        return np.clip(low, 0, count - 1), np.clip(low + 1, 0, count - 1), frac

    y1, y2, fy = axis(height, tile[0], tiles[0])
    x1, x2, fx = axis(width, tile[1], tiles[1])
    corners = [(ys[:, None] * tiles[1] + xs[None, :]).ravel().astype(np.int32)
               for ys in (y1, y2) for xs in (x1, x2)]
    grid = np.ones((height, width), np.float32)
    return corners, ((grid * fx[None, :]).ravel(), (grid * fy[:, None]).ravel())
