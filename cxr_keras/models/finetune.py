"""Fine-tuning stages: which layers train, at which learning rate, and BatchNorm statistics that stay honest.

A stage is plain config (`StageConfig`): epochs, trainable layers, learning rate, warm-up and schedule. With
pretrained weights every backbone BatchNormalization stays frozen (inference mode) in every stage, so small
chest X-ray batches never overwrite the ImageNet statistics. With random weights a frozen backbone is
meaningless: the stages collapse into one all-trainable stage.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from cxr_keras.config import StageConfig
from cxr_keras.models.factory import backbone_layers


def plan_stages(stages: list[StageConfig], pretrained: bool) -> list[StageConfig]:
    """The stages to run: as configured with pretrained weights; one all-trainable stage from scratch."""
    if not stages or any(s.epochs < 1 for s in stages):
        raise ValueError(f"every stage needs at least 1 epoch; got {[s.epochs for s in stages]}")
    if pretrained:
        return list(stages)
    if len(stages) == 1 and stages[0].trainable == "all":
        return list(stages)
    warnings.warn("the backbone starts from random weights, so a frozen or partly frozen stage trains nothing "
                  f"useful: running one all-trainable stage of {sum(s.epochs for s in stages)} epochs instead",
                  stacklevel=2)
    first, total = stages[0], sum(s.epochs for s in stages)
    # From scratch: warm up for an epoch (large early updates are what BatchNorm statistics cannot follow),
    # then cosine decay to zero.
    return [StageConfig(name="scratch", epochs=total, trainable="all", learning_rate=first.learning_rate,
                        warmup_epochs=max(first.warmup_epochs, 1.0 if total >= 3 else 0.0), schedule="cosine")]


def trainable_count(spec: str, layers: list[keras.layers.Layer]) -> int:
    """How many of the last backbone layers a `trainable` spec unfreezes."""
    kind, _, arg = spec.partition(":")
    if kind == "head":
        return 0
    if kind == "all":
        return len(layers)
    try:
        if kind == "top":
            return min(int(arg), len(layers))
        if kind == "fraction":
            return math.ceil(float(arg) * len(layers))
    except ValueError:
        pass
    if kind == "from" and arg:
        for i, layer in enumerate(layers):
            if layer.name.startswith(arg):
                return len(layers) - i
        prefixes = sorted({layer.name.split("_")[0] for layer in layers})
        raise ValueError(f"no backbone layer name starts with {arg!r}; prefixes here: {', '.join(prefixes[:40])}")
    raise ValueError(f"trainable must be head, all, top:N, fraction:F or from:LAYER, got {spec!r}")


def set_trainable(model: keras.Model, spec: str, freeze_batchnorm: bool) -> int:
    """Freeze the backbone but its last layers per `spec`; the head always trains. Returns the unfrozen count."""
    layers = backbone_layers(model)
    n = trainable_count(spec, layers)
    for i, layer in enumerate(layers):
        layer.trainable = i >= len(layers) - n
        if freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # frozen BN runs in inference mode in Keras 3
    backbone = set(map(id, layers))
    for layer in model.layers:
        if id(layer) not in backbone:
            layer.trainable = True
    return n


def learning_rate(stage: StageConfig, steps_per_epoch: int):
    """A float, or a Keras schedule: linear warm-up to the stage's rate, then constant or cosine decay to 0."""
    total = max(1, stage.epochs * steps_per_epoch)
    warmup = min(total - 1, int(round(stage.warmup_epochs * steps_per_epoch)))
    if stage.schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be constant or cosine, got {stage.schedule!r}")
    if stage.schedule == "constant" and warmup == 0:
        return stage.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else stage.learning_rate,
        decay_steps=total - warmup,
        alpha=1.0 if stage.schedule == "constant" else 0.0,  # alpha = 1: no decay after the warm-up
        warmup_target=stage.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def current_learning_rate(model: keras.Model) -> float:
    """The optimizer's learning rate at its current step."""
    optimizer = model.optimizer
    rate = optimizer.learning_rate
    if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        rate = optimizer._learning_rate(optimizer.iterations)
    return float(keras.ops.convert_to_numpy(rate))


def recalibrate_batchnorm(model: keras.Model, dataset: tf.data.Dataset, batches: int = 50, forward=None) -> int:
    """Re-estimate the moving statistics of every trainable BatchNormalization as the plain average of their
    batch statistics over `batches` training batches, with the current weights. Returns the layers updated.

    Why by hand: Keras has no equivalent of PyTorch's `torch.optim.swa_utils.update_bn`. Moving averages with
    momentum 0.99-0.999 lag far behind weights that change fast (training from scratch), and inference-mode
    predictions then collapse to a constant; see docs/training.md.
    """
    layers = [layer for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0  # each forward pass leaves exactly that batch's statistics in the moving variables
    forward = forward or training_forward(model)
    sums = [np.zeros((2, *layer.moving_mean.shape)) for layer in layers]
    seen = 0
    try:
        for images, *_ in dataset.take(batches):
            forward(images)
            for total, layer in zip(sums, layers):
                total += [keras.ops.convert_to_numpy(v) for v in (layer.moving_mean, layer.moving_variance)]
            seen += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    for total, layer in zip(sums, layers):
        layer.moving_mean.assign(total[0] / max(seen, 1))
        layer.moving_variance.assign(total[1] / max(seen, 1))
    return len(layers)


def training_forward(model: keras.Model):
    """A compiled training-mode forward pass, reusable across `recalibrate_batchnorm` calls."""
    return tf.function(lambda x: model(x, training=True), reduce_retracing=True)


class BatchNormRecalibration(keras.callbacks.Callback):
    """Recalibrate BatchNorm statistics on training batches just before each validation pass of `fit`, so the
    validation metrics, the best checkpoint and the final model all use statistics of the current weights."""

    def __init__(self, dataset: tf.data.Dataset, batches: int = 50):
        super().__init__()
        self.dataset, self.batches = dataset, batches
        self._fitting = False
        self._forward = None

    def on_train_begin(self, logs=None):
        self._fitting = True

    def on_train_end(self, logs=None):
        self._fitting = False

    def on_test_begin(self, logs=None):
        if self._fitting:
            self._forward = self._forward or training_forward(self.model)
            recalibrate_batchnorm(self.model, self.dataset, self.batches, self._forward)
