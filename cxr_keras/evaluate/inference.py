"""Scoring files with any Keras classifier under the model contract (models/contract.py), and the labels to
score them against, in the model's class order."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from cxr_keras.data.pipeline import make_dataset
from cxr_keras.data.table import ImageTable
from cxr_keras.models.contract import ModelSpec, feed, to_scores


def predict_scores(model: keras.Model, paths: list[str], spec: ModelSpec, batch_size: int = 32) -> np.ndarray:
    """Probabilities per image: (N,) of the positive class for binary models, (N, K) otherwise."""
    dataset = make_dataset(paths, np.zeros((len(paths), 1)), spec.image_size, batch_size, cache=None)
    return to_scores(np.concatenate([np.asarray(model(feed(x, spec), training=False), dtype=np.float64)
                                     for x, _ in dataset]), spec)


def score_pixels(model: keras.Model, pixels: np.ndarray, spec: ModelSpec, batch_size: int = 32) -> np.ndarray:
    """`predict_scores` for images already decoded: (N, H, W, 1) 0..255 at the model's input size."""
    return to_scores(np.concatenate([
        np.asarray(model(feed(pixels[i:i + batch_size].astype("float32"), spec), training=False), dtype=np.float64)
        for i in range(0, len(pixels), batch_size)]), spec)


def _fold_to_model(table: ImageTable, spec: ModelSpec) -> ImageTable:
    """The data's classes spelled as the model spells them where they differ only in case or spacing
    (`normal` data for a `NORMAL` model), said once."""
    from cxr_keras.data.labels import label_key

    ours = {label_key(c): c for c in spec.classes}
    mapping = {c: ours[label_key(c)] for c in table.classes if c not in spec.classes and label_key(c) in ours}
    if not mapping:
        return table
    print(f"note: the data's classes {sorted(mapping)} are read as the model's {[mapping[c] for c in sorted(mapping)]}"
          " (they differ only in case or spacing)")
    return dataclasses.replace(table, classes=[mapping.get(c, c) for c in table.classes])


def truth(table: ImageTable, spec: ModelSpec) -> np.ndarray:
    """The table's labels in the model's class order; an unknown class is an error, never a silent mislabel."""
    table = _fold_to_model(table, spec)
    unknown = sorted(set(table.classes) - set(spec.classes))
    if unknown:
        raise ValueError(f"the data has classes {unknown} that the model does not know (model classes: "
                         f"{spec.classes}); map each to one of the model's with --class-map DATA_CLASS=MODEL_CLASS "
                         f"(e.g. --class-map {unknown[0]}={spec.classes[0]}), or leave it out with "
                         f"--class-map {unknown[0]}=-")
    labels = np.zeros((len(table), len(spec.classes)))
    for k, name in enumerate(table.classes):
        labels[:, spec.classes.index(name)] = table.labels[:, k]
    return labels[:, spec.positive_index] if spec.task == "binary" else labels
