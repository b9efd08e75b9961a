"""Seeded, stratified, patient-grouped train/val/test splits, saved as splits.csv so a run can be repeated."""

from __future__ import annotations

import csv
import dataclasses
from fractions import Fraction

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from cxr_keras.data.copies import copies_across_splits
from cxr_keras.data.table import ImageTable
from cxr_keras.io_utils import atomic_writer

SPLITS = ("train", "val", "test")


class SplitError(ValueError):
    """A split cannot be made or would leak patients; the message says what to change."""


def split_table(
    table: ImageTable,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    keep_existing: bool = True,
    fold: int = 0,
) -> ImageTable:
    """Assign every row to train/val/test, grouped by patient and stratified by label.

    `fold` rotates the folds the ratios are made of, for cross-validation: with ratios (0.8, 0.2, 0.0) (5 folds)
    and one seed, folds 0-4 each put a different fifth of the patients in val, together covering every patient
    once.

    The data's own split is kept when `keep_existing` and every row has one; rows with no split (or a table
    whose split lacks val or test) are split from the rest by `ratios` = (train, val, test). A patient never
    lands in two splits: this is checked, and a data-provided split that breaks it is refused.
    """
    _check_ratios(ratios)
    existing = [s for s in table.splits if s is not None]
    if keep_existing and existing and len(existing) != len(table):
        example = next(p for p, s in zip(table.paths, table.splits) if s is None)
        raise SplitError(f"the data's own split covers {len(existing):,} of {len(table):,} images ({example} has "
                         "none): give every image a split (train, val or test), or pass --resplit to split them all "
                         "anew")
    if keep_existing and existing:
        # e.g. only a train folder: carve the missing splits out of train, in proportion
        carve = [r if name == "train" or name not in existing else 0.0 for name, r in zip(SPLITS, ratios)]
        if sum(carve) > ratios[0]:
            table = _carve(table, tuple(r / sum(carve) for r in carve), seed, fold)
        _say_copies_across_splits(table)
    else:
        assignment = _assign(table, ratios, seed, fold)
        table = dataclasses.replace(table, splits=[SPLITS[k] for k in assignment])
    assert_no_patient_leak(table)
    return table


def _say_copies_across_splits(table: ImageTable) -> None:
    """The data's own split can put copies of one film in two splits: kept as given, but said loudly."""
    leaks = copies_across_splits(table)
    if leaks:
        rows = leaks[0]
        example = ", ".join(f"{table.paths[r]} ({table.splits[r]})" for r in rows[:2])
        table.notes = [*table.notes, f"WARNING: the data's own split puts copies of one film in two splits "
                       f"{len(leaks)} times (e.g. {example}): scores on the copies are not on unseen films; "
                       "--resplit keeps each copy group in one split"]


def split_holding_out(table: ImageTable, held: np.ndarray, ratios: tuple[float, float, float], seed: int = 42,
                      fold: int = 0) -> ImageTable:
    """Leave-one-cohort-out: the `held` rows are the test split, the rest split into train and val in the
    proportion of `ratios`' first two shares (its test share is unused). A patient in both is refused."""
    _check_ratios(ratios)
    rest = np.flatnonzero(~held)
    share = ratios[0] + ratios[1]
    assignment = _assign(table.subset(~held), (ratios[0] / share, ratios[1] / share, 0.0), seed, fold)
    splits = ["test"] * len(table)
    for row, k in zip(rest, assignment):
        splits[row] = SPLITS[k]
    table = dataclasses.replace(table, splits=splits)
    assert_no_patient_leak(table)
    return table


def _check_ratios(ratios: tuple[float, float, float]) -> None:
    if len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0 or abs(sum(ratios) - 1.0) > 1e-6:
        raise SplitError(f"split ratios must be three non-negative numbers (train > 0) summing to 1, got {ratios}")


def stratify_key(table: ImageTable) -> np.ndarray:
    """One class per row for stratification: the label itself, or for multi-label rows the rarest positive
    label (all-negative rows get their own key)."""
    if table.task != "multilabel":
        return table.labels.argmax(axis=1)
    frequency = table.labels.sum(axis=0)
    rarity = np.where(table.labels > 0, frequency[None, :], np.inf)
    return np.where(np.isinf(rarity.min(axis=1)), len(table.classes), rarity.argmin(axis=1))


def _assign(table: ImageTable, ratios: tuple[float, float, float], seed: int, rotation: int = 0) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) per row, via sklearn's StratifiedGroupKFold.

    The ratios become whole folds: (0.8, 0.1, 0.1) is 10 folds, 1 for test and 1 for val; `rotation` shifts
    which folds go where.
    """
    fractions = [Fraction(r).limit_denominator(100) for r in ratios]
    n_folds = int(np.lcm.reduce([f.denominator for f in fractions]))
    folds_per_split = [int(f * n_folds) for f in fractions]
    groups = np.asarray(table.group_ids())
    if n_folds > len(set(groups)):
        raise SplitError(
            f"split ratios {ratios} need at least {n_folds} patients (they are made of {n_folds} equal folds), "
            f"but the data has {len(set(groups))}: add data or use simpler ratios such as (0.8, 0.1, 0.1)"
        )
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.empty(len(table), dtype=int)
    if not 0 <= rotation < n_folds:
        raise SplitError(f"split fold {rotation} is out of range: ratios {ratios} make {n_folds} folds, "
                         f"so the fold is 0 to {n_folds - 1}")
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(table)), stratify_key(table), groups)):
        fold[held] = (k + rotation) % n_folds
    boundaries = np.cumsum(folds_per_split)  # folds [0, b0) train, [b0, b1) val, [b1, n) test
    return np.searchsorted(boundaries, fold, side="right")


def _carve(table: ImageTable, ratios: tuple[float, float, float], seed: int, fold: int = 0) -> ImageTable:
    """Re-split the train rows by `ratios`, patient-grouped and stratified; other rows keep their split."""
    train_rows = np.flatnonzero(np.array(table.splits) == "train")
    assignment = _assign(table.subset(np.isin(np.arange(len(table)), train_rows)), ratios, seed, fold)
    splits = list(table.splits)
    for row, k in zip(train_rows, assignment):
        splits[row] = SPLITS[k]
    return dataclasses.replace(table, splits=splits)


def check_classes_in_splits(table: ImageTable) -> None:
    """Every class in train and validation, and in test when there is one: a class missing from validation
    makes its ROC-AUC undefined (Keras logs 0.0) and checkpointing follows that. Multi-label findings may be
    absent (their AUC is left out); binary and multi-class data are refused, naming the class and its count."""
    if table.task == "multilabel":
        return
    counts = table.split_counts()
    scored = [s for s in SPLITS if s != "test" or counts.get("test")]
    for split in scored:
        missing = [c for c in table.classes if not counts.get(split, {}).get(c)]
        if missing:
            column = table.labels[:, table.classes.index(missing[0])]
            groups = len({g for g, y in zip(table.group_ids(), column) if y})
            raise SplitError(
                f"the {split} split has no {missing[0]} image (the data has {int(column.sum())} in all, from "
                f"{groups} patient group(s)): every class needs images in train, validation and test; add "
                f"{missing[0]} images or change --split-ratios")


def assert_no_patient_leak(table: ImageTable) -> None:
    """Raise SplitError when any patient has images in more than one split."""
    seen: dict[str, str] = {}
    leaks = set()
    for patient, split in zip(table.patients, table.splits):
        if patient is None:
            continue
        if seen.setdefault(patient, split) != split:
            leaks.add(patient)
    if leaks:
        example = sorted(leaks)[:5]
        raise SplitError(
            f"{len(leaks)} patients have images in more than one split (e.g. {example}); the data's own split "
            "leaks patients: re-split with keep_existing=False (--resplit)"
        )


def save_splits(table: ImageTable, path: str) -> None:
    """Write path, split, patient and labels per row to a CSV (atomically)."""
    with atomic_writer(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "split", "patient", *table.classes])
        for row in range(len(table)):
            labels = [int(v) for v in table.labels[row]]
            writer.writerow([table.paths[row], table.splits[row], table.patients[row] or "", *labels])


def apply_saved_splits(table: ImageTable, path: str) -> ImageTable:
    """Restore the split of a previous run from its splits.csv; every image of the table must be listed."""
    with open(path, newline="") as f:
        saved = {row["path"]: row["split"] for row in csv.DictReader(f)}
    missing = [p for p in table.paths if p not in saved]
    if missing:
        raise SplitError(f"{len(missing)} images are not in {path} (e.g. {missing[0]}); the data has changed")
    table = dataclasses.replace(table, splits=[saved[p] for p in table.paths])
    assert_no_patient_leak(table)
    return table
