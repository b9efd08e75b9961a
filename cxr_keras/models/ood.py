"""The out-of-distribution score inside the model: how far a film's pooled features lie from the training films'.

    image -> ... -> head_pool (features f) -> head ... -> predictions      (output "probabilities")
                            \\-> cxr_ood: min_c sqrt((f - mu_c)' P (f - mu_c))  (output "ood_score")

Mahalanobis distance to the nearest class mean with one shared precision matrix P (Lee et al. 2018), whose
statistics are the layer's weights: `.keras`, SavedModel and TFLite files compute it on the device with no extra
file. P = L L' is stored as its Cholesky factor L, so the layer is a matrix product, a subtraction and a sum of
squares: ops every TFLite runtime has. The statistics are fitted by `cxr_keras.evaluate.ood` on training films.

Commands that only classify (evaluation, Grad-CAM, calibration) load the model without this output
(`classifier_only`); prediction and export keep it (`models.saving.load_model(..., ood=True)`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

FEATURES = "head_pool"  # the layer whose output the score reads: the factory's pooled backbone features
LAYER = "cxr_ood"
OUTPUTS = ("probabilities", "ood_score")


@keras.saving.register_keras_serializable(package="cxr_keras")
class MahalanobisDistance(keras.layers.Layer):
    """(N, D) features -> (N, 1) distance to the nearest of `centres` class means after whitening by `whiten`."""

    def __init__(self, centres: int, features: int, **kwargs):
        super().__init__(**kwargs)
        self.n_centres, self.n_features = int(centres), int(features)
        self.whiten = self.add_weight(name="whiten", shape=(self.n_features, self.n_features), trainable=False,
                                      initializer="identity")
        self.centres = self.add_weight(name="centres", shape=(self.n_centres, self.n_features), trainable=False,
                                       initializer="zeros")

    def set_statistics(self, means: np.ndarray, precision_factor: np.ndarray) -> None:
        """Class means (C, D) and L with precision P = L L' (D, D)."""
        self.whiten.assign(np.asarray(precision_factor, dtype="float32"))
        self.centres.assign(np.asarray(means, dtype="float64") @ np.asarray(precision_factor, dtype="float64"))

    def call(self, features):
        z = ops.matmul(ops.cast(features, "float32"), self.whiten)  # (N, D): f L
        squared = ops.sum(ops.square(z[:, None, :] - self.centres[None]), axis=-1)  # (N, C): |(f - mu_c) L|^2
        return ops.sqrt(ops.min(squared, axis=-1, keepdims=True))

    def get_config(self) -> dict:
        return {**super().get_config(), "centres": self.n_centres, "features": self.n_features}


def has_ood(model: keras.Model) -> bool:
    """True when the model computes the out-of-distribution score as a second output."""
    return len(model.outputs) == 2 and any(layer.name == LAYER for layer in model.layers)


def classifier_only(model: keras.Model) -> keras.Model:
    """The model with its probabilities alone (the model itself when it has no score)."""
    if not has_ood(model):
        return model
    score = model.get_layer(LAYER).output
    probabilities = next(t for t in model.outputs if t is not score)  # Keras orders dict outputs by key
    return keras.Model(model.input, probabilities, name=model.name)


def feature_model(model: keras.Model) -> keras.Model | None:
    """A model from the image to the pooled features the score reads, or None (a model not made here)."""
    model = classifier_only(model)
    names = {layer.name for layer in model.layers}
    if FEATURES not in names:
        return None
    return keras.Model(model.input, model.get_layer(FEATURES).output)


def with_ood(model: keras.Model, means: np.ndarray, precision_factor: np.ndarray) -> keras.Model:
    """`model` (an earlier score removed) with outputs {"probabilities", "ood_score"}."""
    base = classifier_only(model)
    features = base.get_layer(FEATURES).output
    layer = MahalanobisDistance(len(means), features.shape[-1], name=LAYER)
    score = layer(features)
    layer.set_statistics(means, precision_factor)
    return keras.Model(base.input, {OUTPUTS[0]: base.outputs[0], OUTPUTS[1]: score}, name=base.name)


def split_outputs(outputs) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, ood score or None) from what a model or SavedModel signature returned."""
    if isinstance(outputs, dict):
        if OUTPUTS[0] in outputs:
            score = outputs.get(OUTPUTS[1])
            return np.asarray(outputs[OUTPUTS[0]]), None if score is None else np.asarray(score).reshape(-1)
        return np.asarray(next(iter(outputs.values()))), None
    return np.asarray(outputs), None
