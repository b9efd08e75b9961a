"""The model factory: raw grayscale pixels in, a flat Keras graph out.

    image (H, W, 1) float 0..255
      -> [cxr_clahe] (contrast-limited adaptive histogram equalisation, models/clahe.py)
      -> cxr_gray_to_rgb (3 channels) -> cxr_preprocess (the backbone's ImageNet convention, or the training
         data's mean/std when training from scratch)
      -> backbone layers, directly in the graph (not a nested sub-model: Grad-CAM reaches the last conv)
      -> head_pool -> [head_bn] -> [head_bottleneck] -> [head_dropout] -> predictions

Everything a deployment needs is inside the model, so an exported SavedModel or TFLite file is fed raw pixels.
"""

from __future__ import annotations

import keras
import numpy as np

from cxr_keras.choices import TASKS
from cxr_keras.models.clahe import CLAHE
from cxr_keras.models.efficientnet_lite import MEAN as LITE_MEAN
from cxr_keras.models.efficientnet_lite import STD as LITE_STD
from cxr_keras.models.registry import CAFFE_MEAN_BGR, TORCH_MEAN, TORCH_STD, Backbone, get_backbone
from cxr_keras.models.weights import pretrained_application, transfer_weights

OWN_PREFIXES = ("cxr_", "head_", "predictions")
SCRATCH_BN_MOMENTUM = 0.9


def build_model(
    backbone: str,
    task: str,
    classes: list[str],
    image_size: int | tuple[int, int],
    weights: str | None = "none",
    *,
    dropout: float = 0.2,
    bottleneck: int = 0,
    head_batchnorm: bool = False,
    output_bias: np.ndarray | None = None,
    pixel_stats: tuple[float, float] | None = None,
    bn_momentum: float | None = None,
    pretrained: keras.Model | None = None,
    clahe: float = 0.0,
) -> keras.Model:
    """A classifier for `task` over `classes` on `backbone`, taking (H, W, 1) pixels in 0..255.

    `weights`: "imagenet", "none", "auto" or a weights file (see `cxr_keras.models.weights`).
    `output_bias`: initial bias of the output layer (e.g. `balance.initial_bias`, the class priors).
    `pixel_stats`: (mean, std) of training pixels, used instead of ImageNet preprocessing when the weights are
    random (default 127.5, 127.5: pixels to -1..1). `bn_momentum`: BatchNormalization momentum of the backbone;
    default: the application's own with pretrained weights, 0.9 from scratch (see docs/training.md).
    `pretrained`: the application `weights.resolve_weights` already loaded, so it is not built a second time.
    `clahe`: CLAHE's clip limit (OpenCV's clipLimit, 8 x 8 tiles) applied to the pixels first; 0: none.
    """
    entry = check_request(backbone, image_size)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    n_outputs = _output_count(task, classes)
    source = pretrained if pretrained is not None else pretrained_application(entry, weights, (height, width, 3))

    inputs = keras.Input(shape=(height, width, 1), name="image")
    x = CLAHE(clahe, name="cxr_clahe")(inputs) if clahe else inputs
    x = keras.layers.Concatenate(name="cxr_gray_to_rgb")([x, x, x])
    x = _preprocessing(entry, pretrained=source is not None, pixel_stats=pixel_stats)(x)
    features = entry.constructor(include_top=False, weights=None, input_tensor=x).output
    outputs = _head(features, task, n_outputs, dropout, bottleneck, head_batchnorm, output_bias)
    model = keras.Model(inputs, outputs, name=f"cxr_{entry.name.lower()}_{task}")

    if source is not None:
        transfer_weights(source, backbone_layers(model))
    momentum = bn_momentum if bn_momentum is not None else (None if source is not None else SCRATCH_BN_MOMENTUM)
    if momentum is not None:
        for layer in backbone_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = momentum
    return model


def check_request(backbone: str, image_size: int | tuple[int, int]) -> Backbone:
    """The registry entry, once the backbone is known and the image size is at least its minimum."""
    entry = get_backbone(backbone)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(height, width) < entry.min_size:
        raise ValueError(f"{entry.name} needs images of at least {entry.min_size} px; got {height}x{width}")
    return entry


def _output_count(task: str, classes: list[str]) -> int:
    if task == "binary":
        if len(classes) != 2:
            raise ValueError(f"a binary model needs exactly 2 classes, got {len(classes)}: {classes}")
        return 1
    if task not in TASKS:
        raise ValueError(f"task must be binary, multiclass or multilabel, got {task!r}")
    if len(classes) < 2:
        raise ValueError(f"a {task} model needs at least 2 classes, got {classes}")
    return len(classes)


def _preprocessing(entry: Backbone, pretrained: bool, pixel_stats: tuple[float, float] | None):
    """One `Rescaling` (no weights, exact in TFLite) from 0..255 pixels to what the backbone expects."""
    name = "cxr_preprocess"
    if not pretrained or entry.preprocessing == "none":
        mean, std = pixel_stats or (127.5, 127.5)
        k = entry.internal_scale  # a "builtin" backbone divides by it again before its first conv
        return keras.layers.Rescaling(k / std, offset=-k * mean / std, name=name)
    if entry.preprocessing == "builtin":
        return keras.layers.Rescaling(1.0, name=name)
    if entry.preprocessing == "tf":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=name)
    if entry.preprocessing == "torch":
        return keras.layers.Rescaling([1 / (255 * s) for s in TORCH_STD],
                                      offset=[-m / s for m, s in zip(TORCH_MEAN, TORCH_STD)], name=name)
    if entry.preprocessing == "lite":
        return keras.layers.Rescaling(1 / LITE_STD, offset=-LITE_MEAN / LITE_STD, name=name)
    if entry.preprocessing == "caffe":  # RGB->BGR is a no-op on gray images repeated to 3 channels
        return keras.layers.Rescaling(1.0, offset=[-m for m in CAFFE_MEAN_BGR], name=name)
    raise ValueError(f"unknown preprocessing {entry.preprocessing!r} for {entry.name}")


def _head(features, task: str, n_outputs: int, dropout: float, bottleneck: int, batchnorm: bool, output_bias):
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(features)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="head_bn")(x)
    if bottleneck:
        x = keras.layers.Dense(bottleneck, activation="relu", name="head_bottleneck")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    bias = np.zeros(n_outputs) if output_bias is None else np.ravel(output_bias)
    activation = "softmax" if task == "multiclass" else "sigmoid"
    return keras.layers.Dense(n_outputs, activation=activation, dtype="float32", name="predictions",
                              bias_initializer=keras.initializers.Constant(bias.tolist()))(x)


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's layers, in graph order: everything but the input, our preprocessing and the head."""
    return [layer for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and not layer.name.startswith(OWN_PREFIXES)]


def loss_for(task: str, pos_weight: np.ndarray | None = None, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Binary or categorical cross-entropy; per-label weighted binary cross-entropy for multi-label data."""
    from cxr_keras.models.losses import WeightedBinaryCrossentropy

    if task == "multiclass":
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    if task == "multilabel" and pos_weight is not None:
        return WeightedBinaryCrossentropy(pos_weight)
    return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)


def metrics_for(task: str, n_outputs: int) -> list[keras.metrics.Metric]:
    """AUC (macro over labels for multi-label data), accuracy, precision and recall."""
    if task == "multiclass":
        return [keras.metrics.AUC(name="auc"), keras.metrics.CategoricalAccuracy(name="accuracy")]
    auc = keras.metrics.AUC(name="auc", multi_label=task == "multilabel",
                            num_labels=n_outputs if task == "multilabel" else None)
    return [auc, keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall")]
