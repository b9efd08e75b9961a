"""Test-time augmentation inside the model: the mean prediction over fixed views of each image (the image, a 10%
centre zoom, and 4% shifts left and right), so an exported file carries it and a device feeds pixels once.

The views are deterministic crops resized back with keras.ops (no random layers, nothing to seed), chosen to stay
within what training augmentation shows the model (docs/data.md); no flips (chest anatomy is not symmetric).
"""

from __future__ import annotations

import keras
from keras import ops

VIEWS = ("identity", "zoom", "left", "right")


@keras.saving.register_keras_serializable(package="cxr_keras")
class TTAViews(keras.layers.Layer):
    """(B, H, W, C) -> (V, B, H, W, C): the fixed views of each image, each resized back to H x W."""

    def __init__(self, views: list[str] | tuple[str, ...] = VIEWS, zoom: float = 0.1, shift: float = 0.04,
                 **kwargs):
        super().__init__(**kwargs)
        unknown = sorted(set(views) - set(VIEWS))
        if unknown:
            raise ValueError(f"unknown test-time views {unknown}; choose from {', '.join(VIEWS)}")
        self.views, self.zoom, self.shift = list(views), float(zoom), float(shift)

    def call(self, images):
        h, w = images.shape[1], images.shape[2]
        dy, dx, sx = round(h * self.zoom / 2), round(w * self.zoom / 2), max(1, round(w * self.shift))
        boxes = {"identity": (0, h, 0, w), "zoom": (dy, h - dy, dx, w - dx), "left": (0, h, 0, w - sx),
                 "right": (0, h, sx, w)}
        out = []
        for view in self.views:
            top, bottom, left, right = boxes[view]
            crop = images[:, top:bottom, left:right, :]
            out.append(crop if view == "identity" else ops.image.resize(crop, (h, w), interpolation="bilinear"))
        return ops.stack(out, axis=0)

    def get_config(self) -> dict:
        return {**super().get_config(), "views": self.views, "zoom": self.zoom, "shift": self.shift}


def with_tta(model: keras.Model, views: tuple[str, ...] = VIEWS) -> keras.Model:
    """A model whose output is `model`'s mean output over the views (same input and output shapes)."""
    inputs = keras.Input(model.input_shape[1:], name="image")
    stacked = TTAViews(views, name="test_time_views")(inputs)
    outputs = [model(stacked[k]) for k in range(len(views))]
    mean = keras.layers.Average(name="tta_mean")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, mean, name=f"{model.name}_tta")
