"""Command-line options of a training run, shared by `cxr train` and every `python -m experiments.*` module.

An experiment is a default `ExperimentConfig`; these options override parts of it, and `--config FILE` starts
from a saved config.json instead.
"""

from __future__ import annotations

import argparse
import dataclasses

from cxr_keras.choices import AUGMENT_PRESETS, BACKBONES, STRATEGIES
from cxr_keras.cli.data_options import add_source_arguments
from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that override an experiment's config (left out = the experiment's default)."""
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", help="dataset root folder (or the images folder of a CSV dataset)")
    add_source_arguments(data, keep_config=True)
    data.add_argument("--image-size", type=int, help="square input side in pixels")
    data.add_argument("--batch-size", type=int)
    data.add_argument("--augment", choices=list(AUGMENT_PRESETS), help="augmentation preset")
    data.add_argument("--cache", help="'auto' (default: memory when the images fit the memory budget, else disk), "
                      "'memory', 'disk' (one file read by index, for data larger than RAM), 'none', or a path "
                      "prefix with a folder (e.g. /scratch/cxr) for tf.data's file cache, one per split and data")
    data.add_argument("--cache-budget", dest="cache_budget_gb", type=float, metavar="GB",
                      help="auto's memory budget in GB (default: half the RAM available at the start)")
    data.add_argument("--split-ratios", nargs=3, type=float, metavar=("TRAIN", "VAL", "TEST"))
    data.add_argument("--split-seed", type=int)
    data.add_argument("--split-fold", type=int, help="cross-validation: rotate the split's folds (0 .. folds-1)")
    data.add_argument("--resplit", action="store_true", default=None, help="ignore the data's own split")
    data.add_argument("--cohort-pattern", help="regex on file names whose first group names an image's cohort "
                      "(site, scanner, naming batch), e.g. '^(NORMAL2|IM|person)' for Kermany")
    data.add_argument("--cohort-column", help="or a per-image CSV column naming the cohort")
    data.add_argument("--hold-out-cohort", dest="hold_out_cohorts", nargs="+", metavar="COHORT",
                      help="leave-one-cohort-out: these cohorts are the test split, unseen in training and "
                      "validation (a proxy for another site)")

    model = parser.add_argument_group("model")
    model.add_argument("--backbone", choices=list(BACKBONES))
    model.add_argument("--weights", help="imagenet | none | auto | PATH to a .h5 / .weights.h5 file")
    model.add_argument("--dropout", type=float)
    model.add_argument("--clahe", type=float, metavar="CLIP",
                       help="equalise contrast per tile (CLAHE, 8 x 8 tiles, clip limit CLIP, e.g. 2; 0: off) "
                            "inside the model, so exported models do it too")
    model.add_argument("--init-from", metavar="MODEL",
                       help="start from the weights of an earlier run's .keras model with the same backbone: one "
                            "trained at a smaller --image-size (progressive resizing), or on other classes "
                            "(all but its output layer: in-domain pretraining without ImageNet)")

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", nargs="+", type=int, help="epochs per stage (one number per stage)")
    train.add_argument("--learning-rates", nargs="+", type=float, help="learning rate per stage")
    train.add_argument("--unfreeze", help="stage 2 trainable layers: all | top:N | fraction:F | from:LAYER")
    train.add_argument("--balance", choices=["auto", "none", "class_weight", "pos_weight"])
    train.add_argument("--label-smoothing", type=float)
    train.add_argument("--mixup", type=float, metavar="ALPHA",
                       help="blend pairs of training images and their targets, weight ~ Beta(ALPHA, ALPHA) (ALPHA "
                            "0.05-10, e.g. 0.2; 0: off); class weights follow the mix")
    train.add_argument("--consistency", type=float, metavar="WEIGHT",
                       help="train each film beside a copy under a random held-in acquisition shift and add WEIGHT "
                            "times the Jensen-Shannon divergence of their scores (e.g. 1; 0: off): scores that move "
                            "less with the scanner. Half the distinct films per step")
    train.add_argument("--ema", dest="ema_momentum", type=float, metavar="MOMENTUM",
                       help="average the weights (Adam's EMA, e.g. 0.99): validation, checkpoints and the final "
                       "model use the average")
    train.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE flat epochs")
    train.add_argument("--time-budget", type=float, metavar="SECONDS",
                       help="stop before an epoch would end past SECONDS of training (later stages skipped)")
    train.add_argument("--steps-per-epoch", type=int, help="cap the steps of an epoch (quick runs)")
    train.add_argument("--seed", type=int)
    train.add_argument("--strategy", choices=list(STRATEGIES))
    train.add_argument("--mixed-precision", action="store_true", default=None)
    train.add_argument("--jit", action="store_true", default=None, help="XLA-compile the training step")

    run = parser.add_argument_group("run")
    run.add_argument("--config", help="start from this config.json instead of the experiment's default")
    run.add_argument("--name", help="run name (the folder is RUNS_DIR/NAME-TIMESTAMP)")
    run.add_argument("--runs-dir", help="where run folders go (default runs/)")
    run.add_argument("--run-dir", help="exact folder for this run (must not exist or be empty)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _fields(section, *handled: str) -> tuple[str, ...]:
    """The fields of a config section an option of the same name sets (`handled`: options that set them their
    own way below)."""
    return tuple(f.name for f in dataclasses.fields(section) if f.name not in handled)


DATA_KEYS = _fields(DataConfig, "cache", "split_ratios")
MODEL_KEYS = _fields(ModelConfig)
TRAIN_KEYS = _fields(TrainConfig, "stages", "early_stopping_patience", "time_budget_s")


def config_from_args(args: argparse.Namespace, default: ExperimentConfig) -> ExperimentConfig:
    """`default` (or `--config FILE`) with every option given on the command line applied."""
    config = ExperimentConfig.load(args.config) if args.config else dataclasses.replace(default)
    config = ExperimentConfig.from_dict(config.to_dict())  # a deep copy
    for section, keys in ((config.data, DATA_KEYS), (config.model, MODEL_KEYS), (config.train, TRAIN_KEYS)):
        for key in keys:
            if getattr(args, key, None) is not None:
                setattr(section, key, getattr(args, key))
    if args.cache is not None:
        config.data.cache = None if args.cache == "none" else args.cache
    if args.split_ratios is not None:
        config.data.split_ratios = tuple(args.split_ratios)
    if args.early_stopping is not None:
        config.train.early_stopping_patience = args.early_stopping
    if getattr(args, "time_budget", None) is not None:
        config.train.time_budget_s = args.time_budget
    config.train.stages = _stages(config.train.stages, args, from_scratch=_from_scratch(config))
    for key in ("name", "runs_dir"):
        if getattr(args, key) is not None:
            setattr(config, key, getattr(args, key))
    return config


def _from_scratch(config: ExperimentConfig) -> bool:
    """Random weights: asked for, or a backbone that has no pretrained weights (the baseline CNN)."""
    from cxr_keras.models.registry import REGISTRY

    entry = REGISTRY.get(str(config.model.backbone).lower())
    return config.model.weights in ("none", None, "") or (entry is not None and not entry.pretrained)


def _stages(stages: list[StageConfig], args: argparse.Namespace, from_scratch: bool) -> list[StageConfig]:
    stages = [dataclasses.replace(s) for s in stages]
    if from_scratch and len(stages) > 1 and 1 in (len(args.epochs or []), len(args.learning_rates or [])):
        # random weights make the stages one all-trainable stage anyway (plan_stages): one number is enough
        stages = [StageConfig(name="scratch", epochs=args.epochs[0] if args.epochs else sum(s.epochs for s in stages),
                              trainable="all", learning_rate=stages[0].learning_rate, schedule="cosine")]
    for option, field in (("epochs", "epochs"), ("learning_rates", "learning_rate")):
        values = getattr(args, option)
        if values is None:
            continue
        if len(values) != len(stages):
            raise ValueError(f"--{option.replace('_', '-')} takes one value per stage; this experiment has "
                             f"{len(stages)} stage(s) ({', '.join(s.name or s.trainable for s in stages)})")
        for stage, value in zip(stages, values):
            setattr(stage, field, value)
    if args.unfreeze is not None:
        if len(stages) < 2:
            raise ValueError("--unfreeze sets the second stage's trainable layers; this experiment has one stage")
        stages[1].trainable = args.unfreeze
    return stages


def run_from_args(args: argparse.Namespace, default: ExperimentConfig) -> str | None:
    """Print the config, or train (a new run or `--resume`); returns the run directory."""
    import json

    from cxr_keras.train import run_experiment

    if args.resume:
        return _resume(args)
    config = config_from_args(args, default)
    if args.print_config:
        config.check()  # a printed config is one that would run
        print(json.dumps(config.to_dict(), indent=2))
        return None
    return run_experiment(config, run_dir=args.run_dir, quiet=args.quiet)


RESUME_OVERRIDES = (*DATA_KEYS, *MODEL_KEYS, *TRAIN_KEYS, "epochs", "learning_rates", "unfreeze", "cache",
                    "split_ratios", "early_stopping", "time_budget", "name", "runs_dir")


def _resume(args: argparse.Namespace) -> str | None:
    """`--resume RUN`: the run's own config; an option given beside it must equal the run's (else refused)."""
    import json
    import os

    from cxr_keras.run_folder import CONFIG, run_file
    from cxr_keras.train import RunError, run_experiment

    for option in ("config", "run_dir"):
        if getattr(args, option, None):
            raise RunError(f"--{option.replace('_', '-')} with --resume: a resumed run keeps its own folder and "
                           "config; leave it out")
    given = [k for k in RESUME_OVERRIDES if getattr(args, k, None) is not None]
    saved_path = run_file(args.resume, CONFIG)
    if not (given or args.print_config):
        return run_experiment(None, resume=args.resume, quiet=args.quiet)
    if not os.path.isfile(saved_path):
        raise RunError(f"--resume {args.resume}: no config.json there; give a run folder that `cxr train` made")
    config = config_from_args(args, ExperimentConfig.load(saved_path))
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return None
    return run_experiment(config, resume=args.resume, quiet=args.quiet)
