"""The training callbacks of a run: the stage and learning rate in each epoch's log, checkpoints that survive a
kill, a wall-clock budget, and the list `fit` gets for a stage (Keras' own CSVLogger, TensorBoard, EarlyStopping,
ReduceLROnPlateau and SwapEMAWeights wherever they do the job)."""

from __future__ import annotations

import time

import keras

from cxr_keras.models.finetune import BatchNormRecalibration, current_learning_rate
from cxr_keras.models.saving import save_model
from cxr_keras.run_folder import BEST, HISTORY, LAST, TENSORBOARD, RunError, run_file, write_state


def training_callbacks(config, run_dir, stage, state, metadata, train_ds, pretrained) -> list[keras.callbacks.Callback]:
    train = config.train
    callbacks: list[keras.callbacks.Callback] = [StageLog(stage)]
    if train.ema_momentum is not None:  # first: the averaged weights are in place for BatchNorm recalibration,
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))  # validation and the checkpoints
    if _recalibrate(train.recalibrate_bn, pretrained):
        callbacks.append(BatchNormRecalibration(train_ds, train.recalibrate_batches))
    callbacks.append(keras.callbacks.CSVLogger(run_file(run_dir, HISTORY), append=True))
    if train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(run_file(run_dir, TENSORBOARD), write_graph=False))
    if train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(train.monitor, patience=train.early_stopping_patience,
                                                       mode="max" if "auc" in train.monitor else "auto",
                                                       restore_best_weights=False))
    if train.reduce_lr_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(train.monitor, patience=train.reduce_lr_patience,
                                                           mode="max" if "auc" in train.monitor else "auto"))
    if train.consistency:
        callbacks.append(ConsistencyOff())
    callbacks.append(RunCheckpoints(run_dir, train.monitor, state, metadata))
    return callbacks


class ConsistencyOff(keras.callbacks.Callback):
    """Weighs the consistency term (models/losses.PairConsistency) in training steps only: validation's
    neighbouring rows are not a film and its copy, so `val_loss` stays the plain loss."""

    def on_test_begin(self, logs=None):
        self.model.loss.active.assign(0.0)

    def on_test_end(self, logs=None):
        self.model.loss.active.assign(1.0)


def _recalibrate(setting: str | bool, pretrained: bool) -> bool:
    if setting in ("auto", None):
        return not pretrained
    return setting in (True, "true", "yes", "on")


class TimeBudget(keras.callbacks.Callback):
    """Stops training, across stages, before an epoch would end past `seconds` of wall time (equal budgets
    for comparisons). Why by hand: Keras has no wall-clock stopping callback."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.start, self.spent = seconds, time.perf_counter(), False
        self._epoch_start = self.start

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if now - self.start + (now - self._epoch_start) > self.seconds:
            self.spent = self.model.stop_training = True


class StageLog(keras.callbacks.Callback):
    """Adds the stage number and the learning rate to each epoch's logs (so CSVLogger writes them)."""

    def __init__(self, stage: int):
        super().__init__()
        self.stage = stage

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["stage"] = self.stage + 1
            logs["learning_rate"] = current_learning_rate(self.model)


class RunCheckpoints(keras.callbacks.Callback):
    """Each epoch: `best.keras` when `monitor` improved, `last.keras` and `state.json`, all written atomically.

    Why not keras.callbacks.ModelCheckpoint: it writes in place (a kill mid-save corrupts the previous best)
    and forgets the best value between the `fit` calls of successive stages.
    """

    def __init__(self, run_dir: str, monitor: str, state: dict, metadata: dict):
        super().__init__()
        self.run_dir, self.monitor, self.metadata = run_dir, monitor, metadata
        self.state = dict(state)
        self.maximize = "loss" not in monitor

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            raise RunError(f"monitor {self.monitor!r} is not among the logged metrics {sorted(logs)}")
        best = self.state.get("best")
        if best is None or (value > best if self.maximize else value < best):
            self.state.update(best=float(value), best_epoch=epoch + 1)
            save_model(self.model, run_file(self.run_dir, BEST),
                       {**self.metadata, "epoch": epoch + 1, self.monitor: float(value)})
        self.state.update(epoch=epoch + 1, stopped_early=False)
        # the state inside last.keras too: a kill between the two writes leaves last.keras an epoch ahead of
        # state.json, and resuming must follow the weights (`resume_state`)
        save_model(self.model, run_file(self.run_dir, LAST), state=self.state)
        write_state(self.run_dir, self.state)

    def on_train_end(self, logs=None):
        if self.model.stop_training:
            self.state["stopped_early"] = True
            write_state(self.run_dir, self.state)
