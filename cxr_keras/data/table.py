"""The one record shape every data source yields: an `ImageTable`."""

from __future__ import annotations

import csv
import dataclasses
from collections import Counter

import numpy as np

from cxr_keras.choices import TASKS

NORMAL_NAMES = ("normal", "no finding", "no_finding", "no_findings", "no findings", "non-covid", "negative")


@dataclasses.dataclass(frozen=True)
class Dropped:
    """A file left out of a dataset, and why."""

    path: str
    reason: str


@dataclasses.dataclass
class ImageTable:
    """Images with their labels, one row each.

    `labels` is (N, K) float32 over `classes`: one-hot for binary and multi-class data, multi-hot for
    multi-label data (an all-zero row means "no finding"). `patients` and `splits` hold None where the
    data does not say. `dropped` lists the files that were found but left out, with the reason; `notes` says what
    the loader decided (layout, missing rows); `meta` holds extra per-image columns (e.g. NIH view position).
    """

    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    task: str
    patients: list[str | None]
    splits: list[str | None]
    layout: str = "unknown"
    root: str = ""
    dropped: list[Dropped] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, list] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float32).reshape(len(self.paths), len(self.classes))
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        lengths = {len(self.paths), len(self.patients), len(self.splits), *map(len, self.meta.values())}
        if len(lengths) > 1:
            raise ValueError("paths, patients and splits must have one entry per image")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def positive_index(self) -> int:
        """For binary data, the index of the positive (abnormal) class."""
        normal = [i for i, c in enumerate(self.classes) if c.lower() in NORMAL_NAMES]
        return 1 - normal[0] if len(self.classes) == 2 and normal else len(self.classes) - 1

    def targets(self) -> np.ndarray:
        """Model targets: (N, 1) for binary, one-hot (N, K) for multi-class, multi-hot (N, K) for multi-label."""
        if self.task == "binary":
            return self.labels[:, [self.positive_index]]
        return self.labels

    def class_counts(self) -> dict[str, int]:
        """Images per class (per label for multi-label data)."""
        return {c: int(n) for c, n in zip(self.classes, self.labels.sum(axis=0))}

    def subset(self, mask: np.ndarray | list[bool]) -> ImageTable:
        """The rows where `mask` is true, as a new table (dropped files and notes are kept)."""
        idx = np.flatnonzero(np.asarray(mask, dtype=bool))
        return dataclasses.replace(
            self,
            paths=[self.paths[i] for i in idx],
            labels=self.labels[idx],
            patients=[self.patients[i] for i in idx],
            splits=[self.splits[i] for i in idx],
            meta={k: [v[i] for i in idx] for k, v in self.meta.items()},
        )

    def split(self, name: str) -> ImageTable:
        """The rows of one split ('train', 'val' or 'test')."""
        return self.subset([s == name for s in self.splits])

    def group_ids(self) -> list[str]:
        """The split group of each row: its patient (or the file itself where the patient is unknown), joined
        with every group that holds a copy of one of its films (`meta["copy_group"]`, data/copies.py)."""
        ids = [p if p is not None else f"file:{path}" for p, path in zip(self.patients, self.paths)]
        copies = self.meta.get("copy_group")
        if not copies or not any(copies):
            return ids
        parent: dict[str, str] = {}

        def root(key: str) -> str:
            while parent.get(key, key) != key:
                key = parent[key]
            return key

        for own, copy in zip(ids, copies):
            if copy:
                a, b = root(own), root(f"copies:{copy}")
                if a != b:
                    parent[b] = a
        return [root(own) for own in ids]

    def split_counts(self) -> dict[str, Counter]:
        """Images per class within each split."""
        out: dict[str, Counter] = {}
        for split, row in zip(self.splits, self.labels):
            counter = out.setdefault(split or "unsplit", Counter())
            for k in np.flatnonzero(row):
                counter[self.classes[k]] += 1
        return out


def write_dropped(dropped: list[Dropped], path: str) -> None:
    """Write the dropped-file list as CSV (path, reason), atomically."""
    from cxr_keras.io_utils import atomic_writer

    with atomic_writer(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows((d.path, d.reason) for d in dropped)


def relabel(table: ImageTable, mapping: dict[str, str]) -> ImageTable:
    """The table with its classes renamed by `mapping` ({'Normal': 'NORMAL', 'COVID': '-'}): '-' drops the
    class (single-label data: its images; multi-label data: its column); classes mapped to one name merge.
    For evaluating a model on another dataset whose labels mean the same under other names."""
    unknown = sorted(set(mapping) - set(table.classes))
    if unknown:
        raise ValueError(f"--class-map names {unknown}, which the data does not have (its classes: "
                         f"{table.classes})")
    names = [mapping.get(c, c) for c in table.classes]
    kept = list(dict.fromkeys(n for n in names if n != "-"))
    if not kept:
        raise ValueError("--class-map drops every class of the data")
    labels = np.zeros((len(table), len(kept)), dtype=np.float32)
    for k, name in enumerate(names):
        if name != "-":
            labels[:, kept.index(name)] = np.maximum(labels[:, kept.index(name)], table.labels[:, k])
    rows = labels.any(axis=1) if table.task != "multilabel" else np.ones(len(table), dtype=bool)
    task = table.task if table.task == "multilabel" else ("binary" if len(kept) <= 2 else "multiclass")
    mapped = dataclasses.replace(table.subset(rows), labels=labels[rows], classes=kept, task=task)
    mapped.notes = [*table.notes, f"classes mapped {mapping}: {len(mapped)} of {len(table)} images kept"]
    return mapped
