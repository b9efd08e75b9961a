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


@keras.saving.register_keras_serializable(package="cxr_keras")
class PairConsistency(keras.losses.Loss):
    """A base loss plus `weight` times the Jensen-Shannon divergence between the predictions of each adjacent
    pair of rows (2i, 2i + 1): a film and its shifted copy (data/consistency.py), as AugMix's consistency term
    (Hendrycks et al. 2020) with one augmented view. Each row carries its pair's divergence, so sample and class
    weights weigh it too.

    Sigmoid outputs are read as independent Bernoulli predictions (the divergence averaged over outputs), softmax
    outputs as one categorical prediction. The term is weighed only while `active` is 1: `ConsistencyOff`
    switches it off while Keras evaluates on validation, whose neighbouring rows are not pairs. Why by hand:
    Keras has no pairwise or consistency loss.
    """

    def __init__(self, base: keras.losses.Loss, weight: float = 1.0, categorical: bool = False,
                 name: str = "pair_consistency", **kwargs):
        super().__init__(name=name, **kwargs)
        self.base = keras.losses.get(base) if isinstance(base, dict) else base
        self.weight, self.categorical = float(weight), bool(categorical)
        self.active = keras.Variable(1.0, trainable=False, name="consistency_active")

    def call(self, y_true, y_pred):
        per_row = self.base.call(y_true, y_pred)
        n = keras.ops.shape(y_pred)[0]
        even = n - n % 2
        divergence = jensen_shannon(y_pred[0:even:2], y_pred[1:even:2], self.categorical)
        per_pair = keras.ops.repeat(divergence, 2, axis=0)
        per_pair = keras.ops.concatenate([per_pair, keras.ops.zeros((n - even,), per_pair.dtype)], axis=0)
        return per_row + self.weight * keras.ops.cast(self.active, per_row.dtype) * per_pair

    def get_config(self) -> dict:
        return {**super().get_config(), "base": keras.losses.serialize(self.base), "weight": self.weight,
                "categorical": self.categorical}


def jensen_shannon(p, q, categorical: bool = False):
    """JS(p, q) in nats per row: of categorical distributions (rows sum to 1), or the mean over columns of the
    divergence of Bernoulli(p) and Bernoulli(q). 0 for identical rows, at most log 2."""
    ops = keras.ops
    eps = keras.config.epsilon()
    if not categorical:
        p, q = ops.stack([p, 1 - p], axis=-1), ops.stack([q, 1 - q], axis=-1)
    p, q = ops.clip(p, eps, 1.0), ops.clip(q, eps, 1.0)
    m = (p + q) / 2
    kl = lambda a: ops.sum(a * (ops.log(a) - ops.log(m)), axis=-1)  # noqa: E731
    divergence = (kl(p) + kl(q)) / 2
    return divergence if categorical else ops.mean(divergence, axis=-1)
