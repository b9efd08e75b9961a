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
import os
import shutil
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf

from cxr_keras.callbacks import TimeBudget, training_callbacks
from cxr_keras.config import ExperimentConfig
from cxr_keras.data import disk_cache
from cxr_keras.data.balance import initial_bias, loss_weighting, positive_weight, training_prior
from cxr_keras.data.cohorts import held_out_mask
from cxr_keras.data.consistency import paired_batches
from cxr_keras.data.mixup import mix_batches
from cxr_keras.data.pipeline import datasets_for_run, pixel_statistics
from cxr_keras.data.report import data_summary
from cxr_keras.data.sources import load_table
from cxr_keras.data.splits import (
    SplitError,
    apply_saved_splits,
    check_classes_in_splits,
    split_holding_out,
    split_table,
)
from cxr_keras.data.table import ImageTable
from cxr_keras.models.clahe import CLAHE
from cxr_keras.models.factory import build_model, check_request, loss_for, metrics_for
from cxr_keras.models.finetune import (
    learning_rate,
    plan_stages,
    set_trainable,
)
from cxr_keras.models.memory import training_bytes
from cxr_keras.models.metadata import ModelMetadata
from cxr_keras.models.saving import load_model
from cxr_keras.models.weights import check_init_from, init_from_model, is_pretrained, resolve_weights
from cxr_keras.run_folder import (
    BEST,
    CONFIG,
    CURVES,
    HISTORY,
    LAST,
    SPLITS,
    RunError,
    config_for_resume,
    copy_resume_point,
    new_run_dir,
    only_process,
    read_state,
    repair_after_kill,
    resume_state,
    run_file,
    write_state,
)
from cxr_keras.runtime import is_chief, make_strategy, precision, seed_everything, versions
from cxr_keras.training_curves import plot_history


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
                    resume = copy_resume_point(resume, scratch)
                else:
                    run_dir = scratch
                _say(quiet, f"Not the chief worker: this process writes to {scratch}, removed at the end")
        if resume:
            config, run_dir = config_for_resume(resume, config), resume
            table = apply_saved_splits(_read_data(config), run_file(run_dir, SPLITS))
            hold.enter_context(only_process(run_dir))
            repair_after_kill(run_dir, resume_state(run_dir)["epoch"])
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
            loss_weighting(config, table)
            run_dir = new_run_dir(config, run_dir, table, hold)
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
        if not os.path.isfile(run_file(resume, CONFIG)):
            raise RunError(f"--resume {resume}: no config.json there; give a run folder that `cxr train` made")
        config = ExperimentConfig.load(run_file(resume, CONFIG))
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
    train = config.train
    feeds = _feeds(config, table, quiet)
    pretrained = is_pretrained(config.model.weights)
    stages = plan_stages(train.stages, pretrained)
    strategy = make_strategy(train.strategy)
    state = read_state(run_dir) if resuming else {"epoch": 0, "best": None, "best_epoch": None}
    with strategy.scope():
        model = (load_model(run_file(run_dir, LAST))[0] if resuming
                 else _build(config, table, feeds.train, feeds.weighting, quiet, application))

    budget = TimeBudget(train.time_budget_s) if train.time_budget_s else None
    epoch_end = 0
    for index, stage in enumerate(stages):
        epoch_start, epoch_end = epoch_end, epoch_end + stage.epochs
        if state["epoch"] >= epoch_end:
            continue  # finished before the interruption
        if not (resuming and state["epoch"] > epoch_start):  # mid-stage, last.keras holds model and optimizer
            with strategy.scope():
                unfrozen = _compile_stage(model, stage, config, table, feeds, pretrained)
            _say(quiet, f"\nStage {index + 1}/{len(stages)} '{stage.name or stage.trainable}': epochs "
                        f"{epoch_start + 1}-{epoch_end}, {unfrozen} backbone layers trainable, learning rate "
                        f"{stage.learning_rate:g} ({stage.schedule}, warm-up {stage.warmup_epochs:g} epochs)")
        callbacks = training_callbacks(config, run_dir, index, state, _metadata(config, table, feeds.weighting),
                                       feeds.train, pretrained)
        callbacks += ([budget] if budget else []) + extra_callbacks
        if train.strategy == "multiworker":
            from cxr_keras.multiworker import fix_fit

            fix_fit(model, feeds.fit)
        model.fit(feeds.fit, validation_data=feeds.val, initial_epoch=max(epoch_start, state["epoch"]),
                  epochs=epoch_end, steps_per_epoch=feeds.steps if train.steps_per_epoch else None,
                  class_weight=feeds.class_weight, callbacks=callbacks, shuffle=False,
                  verbose=0 if quiet else (1 if sys.stdout.isatty() else 2))
        state = read_state(run_dir)
        if state.get("stopped_early"):
            why = "time budget spent" if budget and budget.spent else "early stopping"
            _say(quiet, f"Stopped after epoch {state['epoch']} ({why}): later stages skipped")
            break
    write_state(run_dir, {**state, "complete": True})
    plot_history(run_file(run_dir, HISTORY), run_file(run_dir, CURVES))
    _say(quiet, f"\nRun finished: {run_dir}\n  best {train.monitor} {state['best']:.4f} at epoch "
                f"{state['best_epoch']} -> {run_file(run_dir, BEST)}")
    return run_dir


@dataclasses.dataclass
class _Feeds:
    """What `fit` is fed: the training batches (`fit`: mixed when asked), validation, steps and loss weights."""

    train: tf.data.Dataset
    fit: tf.data.Dataset
    val: tf.data.Dataset
    steps: int
    weighting: dict
    class_weight: dict | None


def _feeds(config: ExperimentConfig, table: ImageTable, quiet: bool) -> _Feeds:
    """The run's datasets, with one cache choice for train and val together (said in the log)."""
    data, train = config.data, config.train
    train_ds, val_ds = datasets_for_run(table, data, train.seed, verbose=not quiet)
    steps = train.steps_per_epoch or int(np.ceil(len(table.split("train")) / data.batch_size))
    if train.steps_per_epoch:
        train_ds = train_ds.repeat()
    weighting = loss_weighting(config, table)
    fit_ds, class_weight = _mixed(train_ds, train, weighting.get("class_weight"))
    if train.strategy == "multiworker":  # the memory cache is one tensor, not files: shard the batches' elements
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_ds, fit_ds, val_ds = (ds.with_options(options) for ds in (train_ds, fit_ds, val_ds))
    return _Feeds(train_ds, fit_ds, val_ds, steps, weighting, class_weight)


def _compile_stage(model: keras.Model, stage, config: ExperimentConfig, table: ImageTable, feeds: _Feeds,
                   pretrained: bool) -> int:
    """Set what trains in `stage` and compile for it; returns how many backbone layers train."""
    train = config.train
    unfrozen = set_trainable(model, stage.trainable, freeze_batchnorm=pretrained)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(stage, feeds.steps), **_ema(train)),
                  loss=_loss(table.task, feeds.weighting.get("pos_weight"), train),
                  metrics=metrics_for(table.task, model.output_shape[-1]), jit_compile=train.jit)
    return unfrozen


def _loss(task: str, pos_weight, train) -> keras.losses.Loss:
    """The task's loss; with `train.consistency`, inside the film / shifted-copy consistency term."""
    from cxr_keras.models.losses import PairConsistency

    loss = loss_for(task, pos_weight, train.label_smoothing)
    return PairConsistency(loss, train.consistency, categorical=task == "multiclass") if train.consistency else loss


def _mixed(train_ds: tf.data.Dataset, train, class_weight: dict | None) -> tuple[tf.data.Dataset, dict | None]:
    """The batches `fit` trains on and the class_weight it is given: with `train.mixup`, mixed batches that
    carry their class weights as sample weights (data/mixup.py); with `train.consistency`, films beside their
    shifted copies (data/consistency.py). BatchNorm recalibration and the pixel statistics keep the plain
    batches: inference sees plain images."""
    if train.consistency:
        return paired_batches(train_ds, train.seed), class_weight
    if not train.mixup:
        return train_ds, class_weight
    return mix_batches(train_ds, train.mixup, train.seed, class_weight), None


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, flush=True)


def _read_data(config: ExperimentConfig) -> ImageTable:
    if not config.data.data_dir:
        raise RunError("config.data.data_dir is empty: say where the images are (--data-dir)")
    return load_table(config.data)


def _build(config: ExperimentConfig, table: ImageTable, train_ds: tf.data.Dataset, weighting: dict,
           quiet: bool = True, application: keras.Model | None = None) -> keras.Model:
    """The model, its output bias set to the priors the weighted loss sees (so the first steps start calm), or
    started from the weights of `model.init_from`. `application`: the pretrained backbone `resolve_weights`
    loaded (built once per run)."""
    m = config.model
    targets = table.split("train").targets()
    bias = initial_bias(targets, table.task, positive_weight(weighting, table.task, targets.shape[1]))
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


def _metadata(config: ExperimentConfig, table: ImageTable, weighting: dict) -> dict:
    preprocessing = ("inside the model (" + ("CLAHE, " if config.model.clahe else "")
                     + "gray to RGB, backbone normalisation)")
    return ModelMetadata(
        task=table.task, classes=table.classes,
        positive_class=table.classes[table.positive_index] if table.task == "binary" else None,
        input={"shape": [config.data.image_size, config.data.image_size, 1], "dtype": "float32", "range": [0, 255],
               "resize": config.data.resize, "preprocessing": preprocessing},
        backbone=config.model.backbone, weights=config.model.weights, monitor=config.train.monitor,
        versions=versions(), training_prior=training_prior(config, table, weighting),
    ).to_dict()


def _ema(train) -> dict:
    """Adam's own exponential moving average of the weights (Keras' `use_ema`), when asked for."""
    return {} if train.ema_momentum is None else {"use_ema": True, "ema_momentum": train.ema_momentum}
