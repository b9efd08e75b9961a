"""What a model file says about itself (`best.json`, `<model>.json`): one record shape for the toolkit's runs,
ensembles and wrapped foreign models, written by `ModelMetadata.to_dict` and checked on reading by
`ModelMetadata.check`. Evaluation adds its operating point (`threshold`, `threshold_rule`,
`validation_operating_point`) and calibration (`calibration`) to the same file; the export's model card starts
from it."""

from __future__ import annotations

import dataclasses

from cxr_keras.choices import TASKS

FORMAT = "cxr_keras.model/1"
DEFAULT_RULE_TEXT = "default 0.5; choose an operating point on validation with cxr evaluate"


@dataclasses.dataclass
class ModelMetadata:
    """The fields every command reads; those that do not apply stay None and are not written."""

    task: str
    classes: list[str]
    positive_class: str | None = None
    input: dict = dataclasses.field(default_factory=lambda: {"resize": "stretch"})
    threshold: float | list[float] = 0.5
    threshold_rule: str = DEFAULT_RULE_TEXT
    backbone: str | None = None
    weights: str | None = None
    monitor: str | None = None
    training_prior: list[float] | None = None
    versions: dict | None = None
    ensemble: list[str] | None = None  # the member runs of an ensemble
    foreign: dict | None = None  # how a wrapped foreign model is fed and read
    format: str = FORMAT

    def to_dict(self) -> dict:
        """The JSON object of best.json: every field that applies (None ones left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @staticmethod
    def check(values: object, where: str) -> dict:
        """`values` read from `where`, refused in one line when it is not a model's metadata."""
        if not isinstance(values, dict):
            raise ValueError(f"{where} holds no JSON object; it is not a model's metadata")
        task, classes = values.get("task"), values.get("classes")
        if task not in TASKS or not isinstance(classes, list) or len(classes) < 2:
            raise ValueError(f"{where} has no valid task ({task!r}) or class list ({classes!r}); it is not the "
                             "metadata of a cxr_keras model (train with `cxr train`, or export with `cxr export`)")
        return values
