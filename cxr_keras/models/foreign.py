"""A model made elsewhere, put under the toolkit's contract for export: raw (H, W, 1) pixels in 0..255 in,
probabilities out (binary: of the positive class), with the metadata a model card needs.

A foreign model has no best.json, so what it expects comes from the user: class names in output order, how its
pixels must look (`--preprocess`), a binary model's threshold; or an evaluation's metrics.json
(`--threshold-from`) holding them. The preprocessing goes inside the exported graph, so the device feeds raw
pixels exactly as it does for the toolkit's own models.
"""

from __future__ import annotations

import dataclasses
import json

import keras

from cxr_keras.models.contract import ModelSpec, describe_model, feed
from cxr_keras.models.metadata import ModelMetadata


@dataclasses.dataclass
class ForeignOptions:
    """What a foreign model cannot say about itself."""

    class_names: list[str] | None = None
    preprocess: str | None = None
    threshold: float | None = None
    threshold_from: str | None = None  # an evaluation's metrics.json: threshold, task, classes, input and output
    output: str | None = None  # probabilities | logits (default: from the last layer)
    model_task: str | None = None  # binary | multiclass | multilabel (default: from the output layer)

    def given(self) -> list[str]:
        return [f"--{name.replace('_', '-')}" for name, value in dataclasses.asdict(self).items() if value is not None]


def prepare(model: keras.Model, metadata: dict | None, options: ForeignOptions | None = None
            ) -> tuple[keras.Model, dict]:
    """The model to export and its metadata: the toolkit's own as they are; a foreign one wrapped to take raw
    pixels and give probabilities, described by `options`."""
    options = options or ForeignOptions()
    if metadata is not None:
        if options.given():
            raise ValueError(f"{', '.join(options.given())}: only for a foreign model; this model has its own "
                             "metadata (best.json), which says its classes, input and threshold")
        return model, metadata
    spec, threshold, how = _describe(model, options)
    return wrap(model, spec), foreign_metadata(spec, threshold, how)


def _describe(model: keras.Model, options: ForeignOptions) -> tuple[ModelSpec, float | None, str]:
    evaluation = read_evaluation(options.threshold_from) if options.threshold_from else {}
    class_names = options.class_names or evaluation.get("classes")
    preprocess = options.preprocess or evaluation.get("preprocess")
    if not class_names or not preprocess:
        raise ValueError("a foreign model (no best.json beside it) needs --class-names (in output order) and "
                         "--preprocess (what its pixels must look like; 'none' when it preprocesses itself), or "
                         "--threshold-from an evaluation's metrics.json that holds them")
    spec = describe_model(model, None, class_names=class_names, preprocess=preprocess,
                          task=options.model_task or evaluation.get("task"),
                          output=options.output or evaluation.get("output"))
    if spec.task == "binary" and evaluation.get("positive_class") in spec.classes:
        spec.positive_index = spec.classes.index(evaluation["positive_class"])
    threshold, how = options.threshold, "given with --threshold"
    if threshold is None and "threshold" in evaluation:
        threshold, how = evaluation["threshold"], f"from {options.threshold_from}"
    if spec.task == "binary" and threshold is None:
        raise ValueError("a foreign binary model needs its operating point: --threshold T, or --threshold-from the "
                         "metrics.json of `cxr evaluate --model` on validation data")
    if spec.task == "multiclass":
        threshold = None  # the top class is the decision
    elif threshold is not None:
        check_threshold(threshold, spec, how)
    return spec, threshold, how


def check_threshold(threshold, spec: ModelSpec, where: str) -> None:
    """One probability in [0, 1] for a binary model, one per finding (or one for all) for a multi-label one."""
    values = threshold if isinstance(threshold, list) else [threshold]
    if spec.task == "binary" and isinstance(threshold, list):
        raise ValueError(f"a binary model takes one threshold, not a list ({where})")
    if spec.task == "multilabel" and len(values) not in (1, len(spec.classes)):
        raise ValueError(f"{len(values)} thresholds for {len(spec.classes)} findings ({where})")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"a threshold is a probability in [0, 1], got {value!r} ({where})")


def read_evaluation(path: str) -> dict:
    """An evaluation's metrics.json (for --threshold-from), checked to be one: a JSON object."""
    try:
        with open(path) as f:
            evaluation = json.load(f)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ValueError(f"--threshold-from {path} is not a file; give the metrics.json of `cxr evaluate`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--threshold-from {path} is not valid JSON ({exc})") from None
    if not isinstance(evaluation, dict):
        raise ValueError(f"--threshold-from {path} holds a JSON {type(evaluation).__name__}, not the object that "
                         "`cxr evaluate` writes as metrics.json")
    return evaluation


def wrap(model: keras.Model, spec: ModelSpec) -> keras.Model:
    """Raw (H, W, 1) 0..255 pixels -> `feed` (gray to RGB, the preprocessing) -> the model -> probabilities:
    logits through their sigmoid or softmax, and a two-column binary output cut to its positive column."""
    inputs = keras.Input((*spec.image_size, 1), name="image")
    outputs = model(feed(inputs, spec), training=False)
    if spec.output == "logits":
        exclusive = spec.task == "multiclass" or spec.two_column_binary
        outputs = keras.ops.softmax(outputs, axis=-1) if exclusive else keras.ops.sigmoid(outputs)
    if spec.two_column_binary:
        outputs = outputs[:, spec.positive_index : spec.positive_index + 1]
    return keras.Model(inputs, outputs, name=f"{model.name}_raw_pixels")


def foreign_metadata(spec: ModelSpec, threshold: float | list[float] | None, how: str) -> dict:
    """The metadata of a wrapped foreign model, as the toolkit's own models carry it."""
    foreign = {"preprocess": spec.preprocess, "output": spec.output, "two_column_binary": spec.two_column_binary,
               "input_channels": spec.channels}
    metadata = ModelMetadata(task=spec.task, classes=spec.classes, foreign=foreign,
                             positive_class=spec.classes[spec.positive_index] if spec.task == "binary" else None)
    if threshold is not None:
        metadata.threshold, metadata.threshold_rule = threshold, how
    values = metadata.to_dict()
    if threshold is None:  # no operating point given: the foreign model's card says none
        values.pop("threshold"), values.pop("threshold_rule")
    return values
