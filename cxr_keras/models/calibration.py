"""Probability calibration inside the model: a last layer that maps the model's probabilities to calibrated ones,
so `.keras`, SavedModel and TFLite files all carry it and a device needs nothing more.

Sigmoid outputs (binary, multi-label): p -> sigmoid(slope * logit(p) + intercept) per output (Platt scaling;
temperature scaling when the intercept is 0). Softmax outputs: p -> softmax(slope * log p) (temperature scaling,
slope = 1 / T). The parameters are fitted on validation by `cxr_keras.evaluate.calibration`.
"""

from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="cxr_keras")
class Calibration(keras.layers.Layer):
    """Calibrated probabilities from probabilities; `activation` names the output kind, as a Dense layer's does."""

    def __init__(self, slope: list[float], intercept: list[float], exclusive: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.slope = [float(v) for v in slope]
        self.intercept = [float(v) for v in intercept]
        self.exclusive = bool(exclusive)
        self.activation = keras.activations.softmax if self.exclusive else keras.activations.sigmoid

    def call(self, probabilities):
        p = ops.clip(ops.cast(probabilities, "float32"), EPSILON, 1 - EPSILON)
        slope = ops.convert_to_tensor(self.slope, "float32")
        if self.exclusive:
            return ops.softmax(slope * ops.log(p), axis=-1)
        return ops.sigmoid(slope * (ops.log(p) - ops.log1p(-p)) + ops.convert_to_tensor(self.intercept, "float32"))

    def get_config(self) -> dict:
        return {**super().get_config(), "slope": self.slope, "intercept": self.intercept,
                "exclusive": self.exclusive}


def strip_calibration(model: keras.Model) -> keras.Model:
    """The model without its calibration layer (the model itself when it has none)."""
    if not isinstance(model.layers[-1], Calibration):
        return model
    return keras.Model(model.inputs, model.layers[-1].input, name=model.name)


def with_calibration(model: keras.Model, slope: list[float], intercept: list[float], exclusive: bool = False
                     ) -> keras.Model:
    """`model` (any earlier calibration removed) followed by a Calibration layer with these parameters."""
    base = strip_calibration(model)
    out = Calibration(slope, intercept, exclusive, name="calibration")(base.outputs[0])
    return keras.Model(base.inputs, out, name=base.name)
