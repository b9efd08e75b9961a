"""Training runs: `run_experiment(config)` -> a run directory that holds everything needed to trust and repeat it.

    runs/<name>-<YYYYmmdd-HHMMSS>/
      config.json    the fully resolved config, with the versions of Python, TensorFlow, Keras and cxr_keras
      splits.csv     path, split, patient and labels of every image; dropped.csv for files left out
      history.csv    per epoch: stage, learning rate, losses and metrics on train and validation
      best.keras     the best epoch by `train.monitor` (best.json: task, classes, input size, ...)
      last.keras     the latest epoch with its optimizer; state.json says where `--resume` continues
      tensorboard/   TensorBoard logs
      curves.png     loss, AUC and accuracy per epoch, stages marked

Keras does the work: `fit` with its callbacks (CSVLogger, TensorBoard, EarlyStopping, ReduceLROnPlateau).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from cxr_keras.config import ExperimentConfig
from cxr_keras.data import disk_cache
from cxr_keras.data.balance import class_weights, initial_bias, positive_weights
from cxr_keras.data.cohorts import held_out_mask
from cxr_keras.data.mixup import mix_batches
from cxr_keras.data.pipeline import dataset_for_split
from cxr_keras.data.report import data_summary
from cxr_keras.data.sources import load_table
from cxr_keras.data.splits import (
    SplitError,
    apply_saved_splits,
    check_classes_in_splits,
    save_splits,
    split_holding_out,
    split_table,
)
from cxr_keras.data.table import ImageTable, write_dropped
from cxr_keras.evaluate.plots import plot_history
from cxr_keras.io_utils import atomic_writer, check_outside_data, check_writable
from cxr_keras.models.clahe import CLAHE
from cxr_keras.models.factory import build_model, check_request, loss_for, metrics_for
from cxr_keras.models.finetune import (
    BatchNormRecalibration,
    current_learning_rate,
    learning_rate,
    plan_stages,
    set_trainable,
)
from cxr_keras.models.memory import training_bytes
from cxr_keras.models.saving import load_model, save_model, saved_state
from cxr_keras.models.weights import check_init_from, init_from_model, is_pretrained, resolve_weights
from cxr_keras.runtime import is_chief, make_strategy, precision, seed_everything, versions


class RunError(ValueError):
    """A run cannot start or resume; the message says why and what to do."""


def run_experiment(config: ExperimentConfig | None, *, resume: str | None = None, run_dir: str | None = None,
                   quiet: bool = False, callbacks: list[keras.callbacks.Callback] | None = None) -> str:
    """Train per `config` and return the run directory.

    `resume` continues an interrupted run after its last completed epoch (`config` may then be None, or must
    equal the run's own). `run_dir` names a new run's folder (default `runs_dir/name-timestamp`); an existing,
    non-empty folder is never overwritten. `callbacks` are added to every stage's `fit`.
    """
    application = None  # the pretrained backbone, loaded once while checking the request
    with contextlib.ExitStack() as hold:  # the run folder's lock, held until the run ends
        if _multiworker(config, resume):
            make_strategy("multiworker")  # before TensorFlow runs any op, or collectives cannot be configured
            if not is_chief():  # only the chief writes the run folder; the others write to a temporary one
                scratch = tempfile.mkdtemp(prefix="cxr-keras-worker-")
                hold.callback(shutil.rmtree, scratch, True)
                if resume:  # the chief's folder, read here and never written: resume from a copy of its state
                    resume = _copy_resume_point(resume, scratch)
                else:
                    run_dir = scratch
                _say(quiet, f"Not the chief worker: this process writes to {scratch}, removed at the end")
        if resume:
            config, run_dir = _config_for_resume(resume, config), resume
            table = apply_saved_splits(_read_data(config), os.path.join(run_dir, "splits.csv"))
            hold.enter_context(_only_process(run_dir))
            _repair_after_kill(run_dir, _resume_state(run_dir)["epoch"])
        else:  # everything that can be checked is checked before the run folder is made
            config.check()
            config = dataclasses.replace(config, model=dataclasses.replace(config.model))
            entry = check_request(config.model.backbone, config.data.image_size)
            _check_memory(config)
            if config.model.init_from:
                check_init_from(config.model.init_from)
            config.model.weights, application = resolve_weights(
                entry, config.model.weights, (config.data.image_size, config.data.image_size, 3))
            data = config.data
            table = _split(_read_data(config), data)
            _say(quiet, data_summary(table))
            _weighting(config, table)
            run_dir = _new_run_dir(config, run_dir, table, hold)
        seed_everything(config.train.seed, config.train.deterministic)
        try:
            with precision(config.train.mixed_precision):
                return _run(config, table, run_dir, resuming=bool(resume), quiet=quiet,
                            extra_callbacks=callbacks or [], application=application)
        except KeyboardInterrupt:
            print(f"\nInterrupted. Every completed epoch is saved: continue with `cxr train --resume {run_dir}`",
                  file=sys.stderr)
            raise


def _check_memory(config: ExperimentConfig) -> None:
    """Refuse, before the run folder, a run whose first batch could not fit in memory (models/memory.py)."""
    data = config.data
    needed = training_bytes(config.model.backbone, data.image_size, data.batch_size)
    available = disk_cache.available_memory()
    if needed > available:
        raise RunError(f"--image-size {data.image_size} with --batch-size {data.batch_size}: one training batch of "
                       f"{config.model.backbone} needs about {needed / 1e9:,.1f} GB for its activations (estimated), "
                       f"more than the {available / 1e9:.1f} GB of memory available: lower --image-size or "
                       "--batch-size")


def _multiworker(config: ExperimentConfig | None, resume: str | None) -> bool:
    if config is None and resume:
        if not os.path.isfile(os.path.join(resume, "config.json")):
            raise RunError(f"--resume {resume}: no config.json there; give a run folder that `cxr train` made")
        config = ExperimentConfig.load(os.path.join(resume, "config.json"))
    return config is not None and config.train.strategy == "multiworker"


def _split(table: ImageTable, data) -> ImageTable:
    """The run's split: the data's own or a seeded one, or with --hold-out-cohort those cohorts as test."""
    if data.hold_out_cohorts:
        held = held_out_mask(table, data.hold_out_cohorts, data.cohort_pattern, data.cohort_column)
        rest = table.subset(~held)
        missing = [c for k, c in enumerate(table.classes) if table.task != "multilabel" and not rest.labels[:, k].any()]
        if missing:
            raise RunError(f"--hold-out-cohort {data.hold_out_cohorts} takes every {missing} image: nothing of that "
                           "class is left to train and validate on; hold out fewer cohorts")
        try:
            return split_holding_out(table, held, tuple(data.split_ratios), data.split_seed, data.split_fold)
        except SplitError as exc:
            raise RunError(f"after --hold-out-cohort {data.hold_out_cohorts} ({int(held.sum())} images held out), "
                           f"the rest cannot be split: {exc}") from None
    table = split_table(table, tuple(data.split_ratios), seed=data.split_seed, keep_existing=not data.resplit,
                        fold=data.split_fold)
    try:
        check_classes_in_splits(table)
    except SplitError as exc:
        raise RunError(str(exc)) from None
    return table


def _run(config: ExperimentConfig, table: ImageTable, run_dir: str, resuming: bool, quiet: bool,
         extra_callbacks: list, application: keras.Model | None = None) -> str:
    data, train = config.data, config.train
    size = (data.image_size, data.image_size)
    cache = data.cache
    if cache == "auto":  # one choice for train and val together, said in the log
        budget = None if data.cache_budget_gb is None else int(data.cache_budget_gb * 1e9)
        cache, why = disk_cache.choose(len(table.split("train")) + len(table.split("val")), size, budget)
        _say(quiet, why)
    train_ds = dataset_for_split(table, "train", size, data.batch_size, training=True, augment=data.augment,
                                 seed=train.seed, cache=cache, resize=data.resize, verbose=not quiet)
    val_ds = dataset_for_split(table, "val", size, data.batch_size, cache=cache, resize=data.resize)
    steps = train.steps_per_epoch or int(np.ceil(len(table.split("train")) / data.batch_size))
    if train.steps_per_epoch:
        train_ds = train_ds.repeat()
    weighting = _weighting(config, table)
    fit_ds, class_weight = _mixed(train_ds, train, weighting.get("class_weight"))
    if train.strategy == "multiworker":  # the memory cache is one tensor, not files: shard the batches' elements
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_ds, fit_ds, val_ds = (ds.with_options(options) for ds in (train_ds, fit_ds, val_ds))

    pretrained = is_pretrained(config.model.weights)
    stages = plan_stages(train.stages, pretrained)
    strategy = make_strategy(train.strategy)
    state = _read_state(run_dir) if resuming else {"epoch": 0, "best": None, "best_epoch": None}
    with strategy.scope():
        model = (load_model(os.path.join(run_dir, "last.keras"))[0] if resuming
                 else _build(config, table, train_ds, weighting, quiet, application))

    budget = TimeBudget(train.time_budget_s) if train.time_budget_s else None
    epoch_end = 0
    for index, stage in enumerate(stages):
        epoch_start, epoch_end = epoch_end, epoch_end + stage.epochs
        if state["epoch"] >= epoch_end:
            continue  # finished before the interruption
        if not (resuming and state["epoch"] > epoch_start):  # mid-stage, last.keras holds model and optimizer
            with strategy.scope():
                unfrozen = set_trainable(model, stage.trainable, freeze_batchnorm=pretrained)
                model.compile(optimizer=keras.optimizers.Adam(learning_rate(stage, steps), **_ema(train)),
                              loss=loss_for(table.task, weighting.get("pos_weight"), train.label_smoothing),
                              metrics=metrics_for(table.task, model.output_shape[-1]), jit_compile=train.jit)
            _say(quiet, f"\nStage {index + 1}/{len(stages)} '{stage.name or stage.trainable}': epochs "
                        f"{epoch_start + 1}-{epoch_end}, {unfrozen} backbone layers trainable, learning rate "
                        f"{stage.learning_rate:g} ({stage.schedule}, warm-up {stage.warmup_epochs:g} epochs)")
        callbacks = _callbacks(config, run_dir, index, state, _metadata(config, table, weighting), train_ds,
                               pretrained)
        callbacks += [budget] if budget else []
        callbacks += extra_callbacks
        if train.strategy == "multiworker":
            from cxr_keras.multiworker import fix_fit

            fix_fit(model, fit_ds)
        model.fit(fit_ds, validation_data=val_ds, initial_epoch=max(epoch_start, state["epoch"]),
                  epochs=epoch_end, steps_per_epoch=steps if train.steps_per_epoch else None,
                  class_weight=class_weight, callbacks=callbacks, shuffle=False,
                  verbose=0 if quiet else (1 if sys.stdout.isatty() else 2))
        state = _read_state(run_dir)
        if state.get("stopped_early"):
            why = "time budget spent" if budget and budget.spent else "early stopping"
            _say(quiet, f"Stopped after epoch {state['epoch']} ({why}): later stages skipped")
            break
    _write_state(run_dir, {**state, "complete": True})
    plot_history(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "curves.png"))
    _say(quiet, f"\nRun finished: {run_dir}\n  best {train.monitor} {state['best']:.4f} at epoch "
                f"{state['best_epoch']} -> {os.path.join(run_dir, 'best.keras')}")
    return run_dir


def _mixed(train_ds: tf.data.Dataset, train, class_weight: dict | None) -> tuple[tf.data.Dataset, dict | None]:
    """The batches `fit` trains on and the class_weight it is given: with `train.mixup`, mixed batches that
    carry their class weights as sample weights (data/mixup.py). BatchNorm recalibration and the pixel
    statistics keep the unmixed batches: inference sees unmixed images."""
    if not train.mixup:
        return train_ds, class_weight
    return mix_batches(train_ds, train.mixup, train.seed, class_weight), None


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, flush=True)


STUB = {"config.json", "splits.csv", "dropped.csv", "tensorboard"}  # what a start leaves before its first epoch
CHECKPOINTS = ("last.keras", "best.keras", "state.json")  # a folder with one of these holds a completed epoch


def _new_run_dir(config: ExperimentConfig, run_dir: str | None, table: ImageTable,
                 hold: contextlib.ExitStack) -> str:
    """A new run folder with config.json, splits.csv (and dropped.csv), held by this process (see
    `_only_process`). The folder of a start that failed before any epoch was saved (a kill, a full disk at the first
    checkpoint: nothing but STUB and an unsaved epoch's history.csv in it) is reused."""
    run_dir = run_dir or os.path.join(config.runs_dir, f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunError(f"run directory {run_dir} is a file; choose another --run-dir")
    check_outside_data(run_dir, [config.data.data_dir, config.data.images_dir or ""], "the run folder")
    check_writable(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    hold.enter_context(_only_process(run_dir))
    names = {n for n in os.listdir(run_dir) if not n.startswith(".")}
    saved = any(os.path.exists(os.path.join(run_dir, name)) for name in CHECKPOINTS)
    if saved or names - STUB - {"history.csv"}:
        raise RunError(f"run directory {run_dir} exists and is not empty; a previous run is never overwritten: "
                       "choose another name, or --resume it")
    _repair_after_kill(run_dir, 0)  # history rows of an epoch that was never saved, temporary files
    config.save(os.path.join(run_dir, "config.json"), versions=versions())
    save_splits(table, os.path.join(run_dir, "splits.csv"))
    if table.dropped:
        write_dropped(table.dropped, os.path.join(run_dir, "dropped.csv"))
    return run_dir


@contextlib.contextmanager
def _only_process(run_dir: str):
    """Hold the run folder for this process (an exclusive lock on RUN/.lock, released when the process ends, even
    killed): a second `--resume` of a folder that is training is refused instead of interleaving epochs."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    with open(os.path.join(run_dir, ".lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run_dir} is being trained by another process right now; wait for it to end or stop "
                           "it, then --resume") from None
        yield


def _repair_after_kill(run_dir: str, epochs_done: int) -> None:
    """What a kill can leave behind: history rows of an epoch whose checkpoint was never written (CSVLogger
    writes before the checkpoint), and temporary files of interrupted atomic writes."""
    for name in os.listdir(run_dir):
        if name.startswith(".") and name.endswith((".tmp", ".keras")):
            os.remove(os.path.join(run_dir, name))
    path = os.path.join(run_dir, "history.csv")
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        lines = f.readlines()
    kept = lines[:1] + [line for line in lines[1:] if int(float(line.split(",", 1)[0])) < epochs_done]
    if len(kept) != len(lines):
        with atomic_writer(path, newline="") as f:
            f.writelines(kept)


RESUME_POINT = ("config.json", "splits.csv", "state.json", "last.keras")


def _copy_resume_point(run_dir: str, scratch: str) -> str:
    """A non-chief worker's copy of what resuming the chief's `run_dir` reads (it must see the chief's folder:
    the same host, or a shared filesystem). Every worker then starts from the same epoch and weights."""
    missing = [name for name in RESUME_POINT if not os.path.isfile(os.path.join(run_dir, name))]
    if missing:
        raise RunError(f"--resume {run_dir}: this worker cannot read {', '.join(missing)} there; every worker "
                       "resumes the chief's run folder, so give them all its path (on a filesystem they share)")
    for name in RESUME_POINT:
        shutil.copy2(os.path.join(run_dir, name), os.path.join(scratch, name))
    return scratch


def _config_for_resume(run_dir: str, config: ExperimentConfig | None) -> ExperimentConfig:
    state_path = os.path.join(run_dir, "state.json")
    if not os.path.exists(os.path.join(run_dir, "last.keras")) or not (
            os.path.exists(state_path) or _checkpoint_state(run_dir)):  # a kill before the first state.json
        raise RunError(f"{run_dir} has no completed epoch to resume from (no state.json / last.keras); start it "
                       f"again with --run-dir {run_dir} (the folder is reused)")
    saved = ExperimentConfig.load(os.path.join(run_dir, "config.json"))
    if os.path.exists(state_path) and _read_state(run_dir).get("complete"):
        raise RunError(f"run {run_dir} is already complete; start a new run to train more")
    if config is not None:
        ours = dict(_flatten(config.to_dict()))
        differing = sorted(k for k, v in _flatten(saved.to_dict()) if k != "model.weights" and ours.get(k) != v)
        if differing:
            raise RunError(f"--resume {run_dir}: the run was made with another config (differs in {differing}); "
                           "resume without options, or start a new run")
    return saved


def _flatten(values: dict, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", json.loads(json.dumps(value))


def _read_data(config: ExperimentConfig) -> ImageTable:
    if not config.data.data_dir:
        raise RunError("config.data.data_dir is empty: say where the images are (--data-dir)")
    return load_table(config.data)


def _weighting(config: ExperimentConfig, table: ImageTable) -> dict:
    """{"class_weight": {...}} or {"pos_weight": array} or {} per `train.balance` (auto: by task)."""
    balance = config.train.balance
    if balance not in ("auto", "none", "class_weight", "pos_weight"):
        raise RunError(f"train.balance must be auto, none, class_weight or pos_weight, got {balance!r}")
    if balance == "none":
        return {}
    targets = table.split("train").targets()
    if table.task == "multilabel":
        if balance == "class_weight":
            raise RunError("Keras' class_weight does not apply to multi-label targets: use balance pos_weight")
        return {"pos_weight": positive_weights(targets, table.classes, config.train.max_pos_weight)}
    if balance == "pos_weight":
        raise RunError(f"balance pos_weight is for multi-label data; this data is {table.task}: use class_weight")
    return {"class_weight": class_weights(targets, table.classes)}


def _build(config: ExperimentConfig, table: ImageTable, train_ds: tf.data.Dataset, weighting: dict,
           quiet: bool = True, application: keras.Model | None = None) -> keras.Model:
    """The model, its output bias set to the priors the weighted loss sees (so the first steps start calm), or
    started from the weights of `model.init_from`. `application`: the pretrained backbone `resolve_weights`
    loaded (built once per run)."""
    m = config.model
    targets = table.split("train").targets()
    bias = initial_bias(targets, table.task, _positive_weight(weighting, table.task, targets.shape[1]))
    stats = None
    if not is_pretrained(m.weights):  # the pixels the backbone sees: after CLAHE when the model applies it
        stats = pixel_statistics(train_ds, CLAHE(m.clahe) if m.clahe else None)
    model = build_model(m.backbone, table.task, table.classes, config.data.image_size, m.weights,
                        dropout=m.dropout, bottleneck=m.bottleneck, head_batchnorm=m.head_batchnorm,
                        output_bias=bias, pixel_stats=stats, bn_momentum=m.bn_momentum, pretrained=application,
                        clahe=m.clahe)
    if m.init_from:
        _say(quiet, f"Starting from {init_from_model(model, m.init_from, table.classes)}")
    return model


def _positive_weight(weighting: dict, task: str, n_outputs: int) -> np.ndarray | None:
    if "pos_weight" in weighting:
        return np.asarray(weighting["pos_weight"])
    if "class_weight" in weighting:
        w = weighting["class_weight"]
        return np.array([w[1] / w[0]]) if task == "binary" else np.array([w[k] for k in range(n_outputs)])
    return None


def pixel_statistics(dataset: tf.data.Dataset, transform=None, batches: int = 20) -> tuple[float, float]:
    """Mean and standard deviation of the pixels in the first `batches` batches (for from-scratch inputs),
    after `transform` (a layer the model applies first) when given."""
    total = total_sq = count = 0.0
    for images, *_ in dataset.take(batches):
        x = np.asarray(transform(images) if transform is not None else images, dtype=np.float64)
        total, total_sq, count = total + x.sum(), total_sq + np.square(x).sum(), count + x.size
    mean = total / count
    return float(mean), float(max(np.sqrt(total_sq / count - mean**2), 1.0))


def training_prior(config: ExperimentConfig, table: ImageTable, weighting: dict | None = None) -> list[float] | None:
    """Per sigmoid output, the positive rate the weighted training loss saw (0.5 under balanced class weights;
    the plain training prevalence without weighting): where the `balanced` threshold rule cuts. None for
    multi-class models."""
    if table.task == "multiclass":
        return None
    weighting = _weighting(config, table) if weighting is None else weighting
    targets = table.split("train").targets()
    bias = initial_bias(targets, table.task, _positive_weight(weighting, table.task, targets.shape[1]))
    return [float(v) for v in 1 / (1 + np.exp(-bias))]


def _metadata(config: ExperimentConfig, table: ImageTable, weighting: dict) -> dict:
    return {
        "format": "cxr_keras.model/1", "task": table.task, "classes": table.classes,
        "positive_class": table.classes[table.positive_index] if table.task == "binary" else None,
        "input": {"shape": [config.data.image_size, config.data.image_size, 1], "dtype": "float32",
                  "range": [0, 255], "resize": config.data.resize,
                  "preprocessing": "inside the model (" + ("CLAHE, " if config.model.clahe else "")
                  + "gray to RGB, backbone normalisation)"},
        "backbone": config.model.backbone, "weights": config.model.weights, "threshold": 0.5,
        "threshold_rule": "default 0.5; choose an operating point on validation with cxr evaluate",
        "monitor": config.train.monitor, "versions": versions(),
        "training_prior": training_prior(config, table, weighting),
    }


def _ema(train) -> dict:
    """Adam's own exponential moving average of the weights (Keras' `use_ema`), when asked for."""
    return {} if train.ema_momentum is None else {"use_ema": True, "ema_momentum": train.ema_momentum}


def _callbacks(config, run_dir, stage, state, metadata, train_ds, pretrained) -> list[keras.callbacks.Callback]:
    train = config.train
    callbacks: list[keras.callbacks.Callback] = [StageLog(stage)]
    if train.ema_momentum is not None:  # first: the averaged weights are in place for BatchNorm recalibration,
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))  # validation and the checkpoints
    if _recalibrate(train.recalibrate_bn, pretrained):
        callbacks.append(BatchNormRecalibration(train_ds, train.recalibrate_batches))
    callbacks.append(keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True))
    if train.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False))
    if train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(train.monitor, patience=train.early_stopping_patience,
                                                       mode="max" if "auc" in train.monitor else "auto",
                                                       restore_best_weights=False))
    if train.reduce_lr_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(train.monitor, patience=train.reduce_lr_patience,
                                                           mode="max" if "auc" in train.monitor else "auto"))
    callbacks.append(RunCheckpoints(run_dir, train.monitor, state, metadata))
    return callbacks


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
            save_model(self.model, os.path.join(self.run_dir, "best.keras"),
                       {**self.metadata, "epoch": epoch + 1, self.monitor: float(value)})
        self.state.update(epoch=epoch + 1, stopped_early=False)
        # the state inside last.keras too: a kill between the two writes leaves last.keras an epoch ahead of
        # state.json, and resuming must follow the weights (`_resume_state`)
        save_model(self.model, os.path.join(self.run_dir, "last.keras"), state=self.state)
        _write_state(self.run_dir, self.state)

    def on_train_end(self, logs=None):
        if self.model.stop_training:
            self.state["stopped_early"] = True
            _write_state(self.run_dir, self.state)


def _resume_state(run_dir: str) -> dict:
    """Where a resume continues: state.json, or the state saved inside last.keras when that is exactly one
    epoch ahead (a kill after the checkpoint was written and before state.json was; state.json is then brought
    up to date). Any other disagreement means the folder was changed by hand: refused."""
    path = os.path.join(run_dir, "state.json")
    state = _read_state(run_dir) if os.path.exists(path) else {"epoch": 0, "best": None, "best_epoch": None}
    inside = _checkpoint_state(run_dir)
    if inside is None or inside["epoch"] == state["epoch"]:
        return state
    if inside["epoch"] != state["epoch"] + 1:
        raise RunError(f"--resume {run_dir}: state.json says {state['epoch']} epochs are done but last.keras holds "
                       f"epoch {inside['epoch']}; the folder was changed since training wrote it, so it cannot be "
                       "resumed safely: start a new run")
    state = {**state, **inside}
    _write_state(run_dir, state)
    return state


def _checkpoint_state(run_dir: str) -> dict | None:
    """The (epoch, best, best_epoch) saved inside last.keras, or None when there is none of that shape."""
    inside = saved_state(os.path.join(run_dir, "last.keras"))
    if not isinstance(inside, dict):
        return None
    epoch, best, best_epoch = inside.get("epoch"), inside.get("best"), inside.get("best_epoch")
    numbers = isinstance(best, (int, float)) and not isinstance(best, bool) and np.isfinite(best)
    if not (_whole(epoch) and epoch >= 1 and numbers and _whole(best_epoch) and 1 <= best_epoch <= epoch):
        return None
    return {"epoch": epoch, "best": float(best), "best_epoch": best_epoch, "stopped_early": False}


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_state(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "state.json")) as f:
        return json.load(f)


def _write_state(run_dir: str, state: dict) -> None:
    with atomic_writer(os.path.join(run_dir, "state.json")) as f:
        json.dump(state, f, indent=2)
