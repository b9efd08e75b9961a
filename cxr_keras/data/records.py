"""What a layout adapter finds before verification: one entry per image, plus its notes and dropped files."""

from __future__ import annotations

from dataclasses import dataclass, field

from cxr_keras.data.table import Dropped


class DataError(ValueError):
    """A dataset cannot be used as given; the message says which file or option and what to do."""


@dataclass
class Records:
    """The images an adapter found (paths, labels, patients, original splits) and what it decided."""

    layout: str
    paths: list[str] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    patients: list[str | None] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    classes: list[str] | None = None
    multilabel: bool = False
    dropped: list[Dropped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, list] = field(default_factory=dict)

    def add(self, path: str, labels: list[str], patient: str | None, split: str | None) -> None:
        self.paths.append(path)
        self.labels.append(labels)
        self.patients.append(patient)
        self.splits.append(split)
