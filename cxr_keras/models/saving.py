"""Saving and loading models with their metadata: `NAME.keras` plus `NAME.json` (task, classes, input size,
threshold...), both written atomically so an interrupted save never leaves a broken file behind."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import keras

from cxr_keras.io_utils import atomic_writer, check_keras_archive, publish_mode
from cxr_keras.models.metadata import ModelMetadata

__all__ = ["check_keras_archive", "load_model", "save_model"]


def metadata_path(model_path: str) -> str:
    """Where the metadata of a model file lives: `best.keras` -> `best.json`."""
    return os.path.splitext(model_path)[0] + ".json"


STATE_MEMBER = "cxr_keras_state.json"  # an extra member of the .keras zip archive; Keras ignores it


def save_model(model: keras.Model, path: str, metadata: dict | None = None, state: dict | None = None) -> None:
    """Write `model` to `path` (.keras) and `metadata` beside it, each atomically. `state` (JSON) goes inside the
    .keras file itself, so it can never disagree with the weights (`saved_state` reads it)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".keras")  # Keras wants the suffix
    os.close(fd)
    try:
        model.save(tmp)
        if state is not None:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(STATE_MEMBER, json.dumps(state))
        publish_mode(tmp, path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if metadata is not None:
        with atomic_writer(metadata_path(path)) as f:
            json.dump(metadata, f, indent=2)


def saved_state(path: str) -> dict | None:
    """The `state` saved inside a .keras file by `save_model`, or None (none saved, or no readable archive)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(STATE_MEMBER))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError):
        return None


def load_metadata(model_path: str) -> dict | None:
    """The metadata saved beside a model, or None for a model made elsewhere."""
    path = metadata_path(model_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            values = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}, the metadata of {model_path}, is not valid JSON ({exc})") from None
    return ModelMetadata.check(values, path)


def load_model(path: str, compile: bool = True, ood: bool = False) -> tuple[keras.Model, dict | None]:
    """A model saved by `save_model` (or any .keras file) and its metadata (None when there is none). A model
    with the out-of-distribution score (models/ood.py) comes without it unless `ood`: the probabilities alone,
    as every command that only classifies expects."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.endswith(".keras"):
        check_keras_archive(path)
    import cxr_keras.models  # noqa: F401  (registers the toolkit's layers and loss for deserialisation)

    try:
        model = keras.models.load_model(path, compile=compile)
    except Exception as exc:  # Keras says "File not found" for a file that exists but is no .keras archive
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not a readable Keras model ({first}); give a .keras file saved by Keras 3"
                         ) from None
    from cxr_keras.models.ood import classifier_only

    return (model if ood else classifier_only(model)), load_metadata(path)
