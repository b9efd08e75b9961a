"""The small CNN of classic chest X-ray coursework, as a comparison point for the transfer-learning backbones.

Four conv blocks (32-64-128-256 filters, each conv + BatchNorm + ReLU + max-pool), shaped like a
`keras.applications` constructor so the factory treats it as one more backbone.
"""

from __future__ import annotations

import keras

FILTERS = (32, 64, 128, 256)
LAST_CONV = "baseline_block4_relu"


def BaselineCNN(include_top: bool = False, weights: str | None = None, input_tensor=None, input_shape=None,
                **_: object) -> keras.Model:
    """Conv blocks up to a 4-D feature map (no head); random weights only."""
    if include_top or weights not in (None, "none"):
        raise ValueError("the baseline CNN has no pretrained weights or top: use weights='none'")
    x = keras.Input(shape=input_shape) if input_tensor is None else input_tensor
    inputs = keras.utils.get_source_inputs(x)
    for block, filters in enumerate(FILTERS, start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"baseline_block{block}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"baseline_block{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"baseline_block{block}_relu")(x)
        if block < len(FILTERS):
            x = keras.layers.MaxPooling2D(name=f"baseline_block{block}_pool")(x)
    return keras.Model(inputs, x, name="baseline_cnn")
