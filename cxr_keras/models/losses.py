"""The toolkit's own Keras loss: binary cross-entropy with per-label positive weights (multi-label balance)."""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="cxr_keras")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with a weight on each label's positive term.

    Keras' `class_weight` cannot express per-label weights for multi-label targets, hence this loss:
    loss = -mean_k(w_k * y_k * log(p_k) + (1 - y_k) * log(1 - p_k)).
    """

    def __init__(self, pos_weight, from_logits: bool = False, name: str = "weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weight = [float(w) for w in np.ravel(pos_weight)]
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        ops = keras.ops
        y_true = ops.cast(y_true, y_pred.dtype)
        weight = ops.convert_to_tensor(self.pos_weight, dtype=y_pred.dtype)
        if self.from_logits:
            log_p, log_not_p = -ops.softplus(-y_pred), -ops.softplus(y_pred)
        else:
            eps = keras.config.epsilon()
            p = ops.clip(y_pred, eps, 1 - eps)
            log_p, log_not_p = ops.log(p), ops.log(1 - p)
        return -ops.mean(weight * y_true * log_p + (1 - y_true) * log_not_p, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "pos_weight": self.pos_weight, "from_logits": self.from_logits}
