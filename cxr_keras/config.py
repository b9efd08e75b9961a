"""Every option of a run as dataclasses, saved as one resolved `config.json` per run and loaded back from it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing

from cxr_keras.io_utils import atomic_writer

DEFAULT_MAX_PIXELS = 50_000_000  # about 7,000 x 7,000: above any radiograph, far below exhausting memory


class ConfigError(ValueError):
    """A config value or key is wrong; the message names it."""


MIXUP_ALPHAS = (0.05, 10.0)  # the alphas data/mixup.py draws Beta(alpha, alpha) well for

@dataclasses.dataclass
class DataConfig:
    """Where the images are, how to read and split them, and how the pipeline feeds them."""

    data_dir: str = ""
    layout: str = "auto"
    csv: str | None = None
    images_dir: str | None = None
    classes: list[str] | None = None
    task: str | None = None
    patient_pattern: str | None = None
    path_column: str | None = None
    labels_column: str | None = None
    delimiter: str = "|"
    max_pixels: int = DEFAULT_MAX_PIXELS
    allow_outside_paths: bool = False  # CSV paths that are absolute or leave the images folder
    keep_label_case: bool = False  # NORMAL and normal as two classes (default: one, said in the notes)
    copy_conflicts: str = "refuse"  # byte-identical files under two labels: refuse | drop (data/copies.py)
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 42
    split_fold: int = 0  # cross-validation: which rotation of the split's folds (see split_table)
    cohort_pattern: str | None = None  # regex on file names whose first group names an image's cohort
    cohort_column: str | None = None  # or a per-image CSV column (data/cohorts.py)
    hold_out_cohorts: list[str] | None = None  # these cohorts become the test split: leave-one-cohort-out
    resplit: bool = False
    image_size: int = 224
    resize: str = "stretch"
    batch_size: int = 32
    augment: str = "standard"
    cache: str | None = "auto"  # auto | memory | disk | none | a path for tf.data's file cache (data/pipeline.py)
    cache_budget_gb: float | None = None  # auto's memory budget (default: half the RAM available at the start)


@dataclasses.dataclass
class ModelConfig:
    """The backbone, its starting weights and the head (see `cxr_keras.models.factory.build_model`)."""

    backbone: str = "efficientnetb0"
    weights: str = "auto"
    dropout: float = 0.2
    bottleneck: int = 0
    head_batchnorm: bool = False
    bn_momentum: float | None = None
    clahe: float = 0.0  # CLAHE clip limit inside the model (8 x 8 tiles); 0: off
    init_from: str = ""  # a .keras model of an earlier run whose weights start this one (e.g. at a smaller size)


@dataclasses.dataclass
class StageConfig:
    """One fine-tuning stage: what trains, for how long, at which learning rate.

    `trainable`: "head" (backbone frozen), "all", "top:N" (last N backbone layers), "fraction:F" (last share F
    of the backbone layers) or "from:NAME" (from the first layer whose name starts with NAME, e.g. "block6a").
    `schedule`: "constant" or "cosine" (decay to 0 over the stage), after `warmup_epochs` of linear warm-up.
    """

    epochs: int = 1
    trainable: str = "head"
    learning_rate: float = 1e-3
    warmup_epochs: float = 0.0
    schedule: str = "constant"
    name: str = ""


@dataclasses.dataclass
class TrainConfig:
    """How the stages run: balance, regularisation, callbacks, scale and determinism."""

    stages: list[StageConfig] = dataclasses.field(default_factory=lambda: [
        StageConfig(epochs=3, trainable="head", learning_rate=1e-3, name="head"),
        StageConfig(epochs=3, trainable="fraction:0.3", learning_rate=1e-4, warmup_epochs=0.5,
                    schedule="cosine", name="finetune"),
    ])
    balance: str = "auto"
    max_pos_weight: float | None = 10.0
    label_smoothing: float = 0.0
    mixup: float = 0.0  # alpha of mixup's Beta(alpha, alpha); 0: off
    consistency: float = 0.0  # weight of the film / shifted-copy Jensen-Shannon term (data/consistency.py); 0: off
    ema_momentum: float | None = None  # weight averaging: validation, checkpoints and the final model use the EMA
    monitor: str = "val_auc"
    early_stopping_patience: int = 0
    reduce_lr_patience: int = 0
    recalibrate_bn: str | bool = "auto"  # auto (on from scratch), true or false
    recalibrate_batches: int = 20
    steps_per_epoch: int | None = None
    time_budget_s: float | None = None
    strategy: str = "auto"
    mixed_precision: bool = False
    jit: bool = False
    deterministic: bool = True
    seed: int = 0
    tensorboard: bool = True


@dataclasses.dataclass
class ExperimentConfig:
    """One run: a name, the data, the model and the training."""

    name: str = "run"
    runs_dir: str = "runs"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str, **extra) -> None:
        """Write the config (plus `extra` top-level entries such as versions) as JSON, atomically."""
        with atomic_writer(path) as f:
            json.dump({**self.to_dict(), **extra}, f, indent=2)

    @classmethod
    def from_dict(cls, values: dict) -> ExperimentConfig:
        return _from_dict(cls, values, "config")

    @classmethod
    def load(cls, path: str) -> ExperimentConfig:
        """Read a config.json; top-level entries that are not options (e.g. `versions`) are ignored."""
        try:
            with open(path) as f:
                values = json.load(f)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} must hold a JSON object of options")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({k: v for k, v in values.items() if k in fields})

    def check(self) -> None:
        """Values no run can use, named by their option, before anything is built."""
        data = self.data
        if data.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {data.batch_size}")
        if data.image_size < 1:
            raise ConfigError(f"--image-size must be at least 1, got {data.image_size}")
        if self.train.ema_momentum is not None and not 0 < self.train.ema_momentum < 1:
            raise ConfigError(f"--ema is the averaging momentum, in (0, 1) (e.g. 0.99), got {self.train.ema_momentum}")
        if data.cache_budget_gb is not None and not data.cache_budget_gb >= 0:
            raise ConfigError(f"--cache-budget is in GB, at least 0, got {data.cache_budget_gb}")
        if not self.train.stages:
            raise ConfigError("train.stages is empty: a run needs at least one stage (--epochs)")
        if self.train.recalibrate_bn not in ("auto", True, False, "true", "false", "yes", "no", "on", "off"):
            raise ConfigError(f"train.recalibrate_bn must be auto, true or false, got {self.train.recalibrate_bn!r}")
        for stage in self.train.stages:
            if not 0 <= stage.warmup_epochs < float("inf"):
                raise ConfigError(f"warmup_epochs must be at least 0, got {stage.warmup_epochs} for stage "
                                  f"{stage.name or stage.trainable!r}")
            if not stage.learning_rate > 0:
                raise ConfigError(f"learning rates must be above 0 (--learning-rates), got {stage.learning_rate} "
                                  f"for stage {stage.name or stage.trainable!r}")
            if stage.epochs < 1:
                raise ConfigError(f"--epochs: every stage needs at least 1 epoch, got {stage.epochs} for stage "
                                  f"{stage.name or stage.trainable!r}")
            _check_trainable(stage.trainable)
        _check_ranges(self)
        if self.model.clahe and data.image_size < 8:
            raise ConfigError(f"--clahe works on 8 x 8 tiles: --image-size must be at least 8, got {data.image_size}")
        if data.cache not in (None, "auto", "memory", "disk", "none"):
            if os.sep not in data.cache:
                raise ConfigError(f"--cache {data.cache!r} is not auto, memory, disk or none; for tf.data's file "
                                  f"cache give a path prefix with its folder, e.g. .{os.sep}{data.cache}")
            if not os.path.isdir(os.path.dirname(data.cache) or "."):
                raise ConfigError(f"--cache {data.cache}: the folder {os.path.dirname(data.cache)} does not exist; "
                                  "create it first")
        _check_pattern("--patient-pattern", data.patient_pattern)
        _check_pattern("--cohort-pattern", data.cohort_pattern)
        if self.name != os.path.basename(self.name) or self.name.startswith(("-", ".")) or not self.name.strip():
            raise ConfigError(f"--name {self.name!r} must be a plain folder name (no '/', not empty, not starting "
                              "with '-' or '.'); use --runs-dir or --run-dir to choose where")
        if self.model.init_from and not os.path.isfile(self.model.init_from):
            raise ConfigError(f"--init-from {self.model.init_from}: no such model file; give an earlier run's "
                              "best.keras")


def _check_ranges(config: ExperimentConfig) -> None:
    """Numbers outside what their option means, named by the option."""
    train, data = config.train, config.data
    checks = [
        ("--dropout", config.model.dropout, 0 <= config.model.dropout < 1, "in [0, 1)"),
        ("--label-smoothing", train.label_smoothing, 0 <= train.label_smoothing < 1, "in [0, 1)"),
        ("--clahe", config.model.clahe, 0 <= config.model.clahe <= 1000, "a clip limit in [0, 1000] (e.g. 2; 0: off)"),
        ("--mixup", train.mixup, train.mixup == 0 or MIXUP_ALPHAS[0] <= train.mixup <= MIXUP_ALPHAS[1],
         f"0 (off) or an alpha in [{MIXUP_ALPHAS[0]:g}, {MIXUP_ALPHAS[1]:g}] (e.g. 0.2)"),
        ("--consistency", train.consistency, 0 <= train.consistency <= 100, "a weight in [0, 100] (e.g. 1; 0: off)"),
        ("--max-pixels", data.max_pixels, data.max_pixels >= 1, "at least 1"),
        ("--time-budget", train.time_budget_s, train.time_budget_s is None or train.time_budget_s > 0,
         "above 0 seconds"),
        ("--early-stopping", train.early_stopping_patience, train.early_stopping_patience >= 0,
         "at least 0 epochs (0: off)"),
        ("--steps-per-epoch", train.steps_per_epoch, train.steps_per_epoch is None or train.steps_per_epoch >= 1,
         "at least 1"),
    ]
    for option, value, ok, wanted in checks:
        if not ok:
            raise ConfigError(f"{option} must be {wanted}, got {value}")
    if train.mixup and train.consistency:
        raise ConfigError("--mixup and --consistency both remake the training batches (blends, or films beside "
                          "shifted copies); choose one")


def _check_trainable(spec: str) -> None:
    """The grammar of a stage's `trainable` (--unfreeze); whether a from:LAYER exists is known once built."""
    kind, _, arg = spec.partition(":")
    try:
        ok = (kind in ("head", "all") and not arg) or (kind == "top" and int(arg) >= 0) or (
            kind == "fraction" and 0 <= float(arg) <= 1) or (kind == "from" and bool(arg))
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"--unfreeze {spec!r}: give head, all, top:N (N >= 0), fraction:F (0 <= F <= 1) or "
                          "from:LAYER")


def _check_pattern(option: str, pattern: str | None) -> None:
    """A regex that compiles and has the group whose match names the patient or cohort."""
    if not pattern:
        return
    try:
        groups = re.compile(pattern).groups
    except re.error as exc:
        raise ConfigError(f"{option} {pattern!r} is not a regular expression ({exc})") from None
    if groups < 1:
        raise ConfigError(f"{option} {pattern!r} needs a group, e.g. '^(patient\\d+)_': its first group is the id")


def _from_dict(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} in {where}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is list and typing.get_args(hint)[0] is StageConfig:
            _check_list(value, f"{where}.{name}")
            value = [_from_dict(StageConfig, stage, f"{where}.{name}[{i}]") for i, stage in enumerate(value)]
        elif typing.get_origin(hint) is tuple:
            _check_list(value, f"{where}.{name}", typing.get_args(hint))
            value = tuple(value)
        elif any(typing.get_origin(a) is list for a in (hint, *typing.get_args(hint))):  # list[str] | None
            if value is not None:
                _check_list(value, f"{where}.{name}", (str,) * len(value) if isinstance(value, list) else ())
        else:
            _check_scalar(hint, value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


SCALARS = {float: ((int, float), "a number"), int: ((int,), "a whole number"), bool: ((bool,), "true or false"),
           str: ((str,), "a string")}


def _check_list(value, where: str, kinds: tuple = ()) -> None:
    """A JSON list, of `kinds` element by element when given (a list of them, or as many as there are)."""
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where} must be a list, got {json.dumps(value)}")
    if kinds and len(kinds) != len(value):
        raise ConfigError(f"{where} must have {len(kinds)} entries, got {json.dumps(value)}")
    for i, (kind, item) in enumerate(zip(kinds, value)):
        _check_scalar(kind, item, f"{where}[{i}]")


def _check_scalar(hint, value, where: str) -> None:
    """A config file's value of the type its option takes (JSON true is no number, "2" no clip limit)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return
    wanted = [SCALARS[t] for t in options if t in SCALARS]
    if len(wanted) < len([t for t in options if t is not type(None)]):
        return  # a type this check does not know: left to the option's own checks
    if not any(isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)) for kinds, _ in wanted):
        names = " or ".join(name for _, name in wanted) + (" or null" if type(None) in options else "")
        raise ConfigError(f"{where} must be {names}, got {json.dumps(value)}")
