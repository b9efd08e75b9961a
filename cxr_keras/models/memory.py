"""How much memory training a backbone at an image size needs, estimated before anything is built for real.

A run at `--image-size 10000` would otherwise plan its cache, make its run folder and die in the first batch with
a ResourceExhaustedError. Training keeps every layer's output for the backward pass, so the activations of one
batch are the sum of the layers' output sizes: counted on the backbone built (without weights) at a small size,
and scaled by the pixels, as convolutional activations grow with the input's area.
"""

from __future__ import annotations

import functools

PROBE_SIDE = 64  # the side the backbone is built at to count its activations
BYTES_PER_VALUE = 4  # float32


@functools.cache
def activation_values_per_pixel(backbone: str) -> float:
    """Activation values one input pixel costs in training, from the backbone's layer outputs at PROBE_SIDE."""
    import keras
    import numpy as np

    from cxr_keras.models.factory import build_model

    model = build_model(backbone, "binary", ["a", "b"], max(PROBE_SIDE, _min_size(backbone)), "none")
    values = 0
    for layer in model.layers:
        for output in keras.tree.flatten(layer.output):
            values += int(np.prod([d for d in output.shape[1:] if d is not None]))
    side = max(PROBE_SIDE, _min_size(backbone))
    return values / (side * side)


def _min_size(backbone: str) -> int:
    from cxr_keras.models.registry import get_backbone

    return get_backbone(backbone).min_size


def training_bytes(backbone: str, image_size: int, batch_size: int) -> int:
    """Estimated bytes of activations for one training batch (weights and optimizer state not counted)."""
    return int(activation_values_per_pixel(backbone) * image_size * image_size * batch_size * BYTES_PER_VALUE)
