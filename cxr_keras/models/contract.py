"""How to feed any Keras image classifier and read its outputs: the model contract every command shares.

Models made here take raw (H, W, 1) pixels in 0..255 and say their classes, task and threshold in `<model>.json`;
foreign models are described by options (`describe_model`): channels and size from the model, `preprocess`
(what its pixels must look like), class names, and whether it outputs probabilities or logits (from its final
layer's activation). `feed` turns raw pixels into the model's input; `to_scores` turns its outputs into
probabilities: (N,) of the positive class for binary models, (N, K) otherwise.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from cxr_keras.choices import PREPROCESS


@dataclasses.dataclass
class ModelSpec:
    """How to feed a model and read its output."""

    task: str
    classes: list[str]
    image_size: tuple[int, int]
    channels: int = 1
    preprocess: str = "none"
    output: str = "probabilities"
    threshold: float | list[float] = 0.5
    threshold_rule: str = "default 0.5"
    positive_index: int = 1
    two_column_binary: bool = False


def describe_model(model: keras.Model, metadata: dict | None, *, class_names: list[str] | None = None,
                   task: str | None = None, preprocess: str | None = None, output: str | None = None,
                   image_size: int | None = None) -> ModelSpec:
    """A ModelSpec from our metadata, else from the model's shapes, its last activation and the options.
    `image_size` is for a model that takes any size (a None input side)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "the toolkit handles image classifiers with one input and one output")
    height, width, channels = model.input_shape[1:4]
    if image_size:
        height, width = image_size, image_size
    elif height is None or width is None:
        raise ValueError(f"model {model.name} takes images of any size ({model.input_shape}); give --image-size "
                         "(cxr evaluate), or save it with a fixed keras.Input((H, W, C)) for export and Grad-CAM")
    units = model.output_shape[-1]
    activation = final_activation(model)
    if metadata:
        spec = ModelSpec(task=metadata["task"], classes=list(metadata["classes"]), image_size=(height, width),
                         channels=channels, threshold=_threshold(metadata.get("threshold", 0.5)),
                         threshold_rule=metadata.get("threshold_rule", "default 0.5"))
        if spec.task == "binary" and metadata.get("positive_class"):
            spec.positive_index = spec.classes.index(metadata["positive_class"])
    else:
        inferred = task or ("multiclass" if activation == "softmax" and units > 2 else
                            "binary" if units <= 2 else "multilabel")
        classes = class_names or ([f"class_{k}" for k in range(max(units, 2))])
        spec = ModelSpec(task=inferred, classes=classes, image_size=(height, width), channels=channels,
                         two_column_binary=inferred == "binary" and units == 2)
    if preprocess:
        if preprocess not in PREPROCESS:
            raise ValueError(f"--preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}")
        spec.preprocess = preprocess
    if metadata:  # the toolkit's models, and foreign ones it wrapped, give probabilities by contract
        spec.output = output or "probabilities"
    else:
        spec.output = output or ("logits" if activation in ("linear", None) else "probabilities")
    if output not in (None, "logits", "probabilities"):
        raise ValueError(f"--output must be probabilities or logits, got {output!r}")
    if len(set(spec.classes)) != len(spec.classes):
        raise ValueError(f"--class-names has a name twice ({spec.classes}); give each output its own name")
    expected = 2 if spec.task == "binary" else units
    if len(spec.classes) != expected:
        raise ValueError(f"the model has {units} output(s) for {spec.task} data, but {len(spec.classes)} class "
                         f"names were given ({spec.classes}); pass --class-names with {expected} names")
    return spec


def _threshold(value) -> float | list[float]:
    return [float(v) for v in value] if isinstance(value, list) else float(value)


def final_activation(model: keras.Model) -> str | None:
    """The last layer's activation by name ('sigmoid', 'softmax', 'linear'...): a Dense or Activation layer's
    own, 'softmax' for a Softmax layer; None when the last layer has none (read as logits)."""
    layer = model.layers[-1]
    while isinstance(layer, keras.Sequential) and layer.layers:  # a head built as a Sequential
        layer = layer.layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def feed(images, spec: ModelSpec):
    """Raw (B, H, W, 1) 0..255 pixels to what the model expects."""
    x = keras.ops.repeat(images, 3, axis=-1) if spec.channels == 3 else images
    if spec.preprocess == "unit":
        return x / 255.0
    if spec.preprocess in ("tf", "torch", "caffe"):
        module = {"tf": keras.applications.mobilenet_v2, "torch": keras.applications.densenet,
                  "caffe": keras.applications.resnet50}[spec.preprocess]
        return module.preprocess_input(x)
    return x


def to_scores(outputs: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The model's raw outputs as probabilities: (N,) of the positive class for binary models, (N, K) else."""
    if spec.output == "logits":
        exclusive = spec.task == "multiclass" or spec.two_column_binary
        outputs = softmax(outputs) if exclusive else 1 / (1 + np.exp(-outputs))
    if spec.task == "binary":
        return outputs[:, spec.positive_index] if outputs.shape[1] == 2 else outputs[:, 0]
    return outputs


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
