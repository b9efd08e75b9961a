import csv
import gzip

import numpy as np
import pytest
from conftest import shared_dataset

from cxr_keras.data.sources import NIH_FINDINGS, load_dataset
from cxr_keras.data.splits import (
    SplitError,
    apply_saved_splits,
    assert_no_patient_leak,
    save_splits,
    split_table,
    stratify_key,
)
from cxr_keras.data.table import ImageTable


def _table(n_patients=200, images_per_patient=3, seed=0, task="binary"):
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for p in range(n_patients):
        label = int(rng.random() < 0.25)
        for _ in range(int(rng.integers(1, images_per_patient + 1))):
            patients.append(f"p{p}")
            labels.append([1 - label, label])
    n = len(patients)
    return ImageTable([f"img{i}.png" for i in range(n)], np.array(labels), ["NORMAL", "PNEUMONIA"], task,
                      patients, [None] * n)


def _leak_free(table):
    owner = {}
    return all(owner.setdefault(p, s) == s for p, s in zip(table.patients, table.splits))


def test_split_is_grouped_stratified_and_seeded():
    table = _table()
    a = split_table(table, (0.7, 0.15, 0.15), seed=1)
    assert _leak_free(a) and set(a.splits) == {"train", "val", "test"}
    shares = {s: a.splits.count(s) / len(a) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.7) < 0.05 and abs(shares["test"] - 0.15) < 0.05
    prevalence = table.labels[:, 1].mean()
    for s in ("train", "val", "test"):
        assert abs(a.split(s).labels[:, 1].mean() - prevalence) < 0.06
    assert split_table(table, (0.7, 0.15, 0.15), seed=1).splits == a.splits
    assert split_table(table, (0.7, 0.15, 0.15), seed=2).splits != a.splits


def test_folds_rotate_validation_over_every_patient_once():
    table = _table()
    folds = [split_table(table, (0.8, 0.2, 0.0), seed=3, fold=k) for k in range(5)]
    val_patients = [{p for p, s in zip(f.patients, f.splits) if s == "val"} for f in folds]
    assert all(_leak_free(f) for f in folds)
    assert sum(len(v) for v in val_patients) == len(set(table.patients)) == len(set().union(*val_patients))
    assert folds[0].splits == split_table(table, (0.8, 0.2, 0.0), seed=3).splits  # fold 0 is the plain split
    with pytest.raises(SplitError, match="split fold 5 is out of range: .* so the fold is 0 to 4"):
        split_table(table, (0.8, 0.2, 0.0), fold=5)


def test_existing_split_kept_and_missing_val_carved_from_train():
    table = _table()
    table.splits = ["train"] * len(table)
    out = split_table(table, (0.8, 0.2, 0.0), seed=0)
    assert set(out.splits) == {"train", "val"} and _leak_free(out)
    assert abs(out.splits.count("val") / len(out) - 0.2) < 0.05
    table.splits = ["test" if p in ("p1", "p2") else "train" for p in table.patients]
    out = split_table(table, (0.8, 0.1, 0.1), seed=0)
    assert [s for s, p in zip(out.splits, out.patients) if p in ("p1", "p2")] == ["test"] * sum(
        p in ("p1", "p2") for p in table.patients)
    assert "val" in out.splits


def test_leaking_existing_split_is_refused_unless_resplit():
    table = _table()
    table.splits = ["train" if i % 2 else "test" for i in range(len(table))]
    multi = [p for p in set(table.patients) if table.patients.count(p) > 1]
    assert multi
    with pytest.raises(SplitError, match="more than one split.*--resplit"):
        split_table(table)
    assert _leak_free(split_table(table, keep_existing=False))


def test_images_without_patient_are_their_own_group():
    table = _table(n_patients=50, images_per_patient=1)
    table.patients = [None] * len(table)
    assert set(split_table(table).splits) == {"train", "val", "test"}


def test_bad_ratios():
    with pytest.raises(SplitError, match="summing to 1"):
        split_table(_table(), (0.8, 0.3, 0.1))


def test_multilabel_stratify_key_is_rarest_positive_label():
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 1]])
    table = ImageTable(list("abcd"), labels, ["common", "mid", "rare"], "multilabel", [None] * 4, [None] * 4)
    assert stratify_key(table).tolist() == [1, 0, 3, 2]


def test_saved_splits_round_trip(tmp_path):
    table = split_table(_table(), seed=5)
    save_splits(table, str(tmp_path / "splits.csv"))
    fresh = _table()
    assert apply_saved_splits(fresh, str(tmp_path / "splits.csv")).splits == table.splits
    with open(tmp_path / "splits.csv") as f:
        assert next(csv.reader(f)) == ["path", "split", "patient", "NORMAL", "PNEUMONIA"]


def test_synthetic_dataset_splits_by_patient(synthetic_binary):
    table = split_table(load_dataset(synthetic_binary), seed=0)
    assert all(p is not None for p in table.patients)
    assert_no_patient_leak(table)


def test_full_nih_metadata_never_puts_a_patient_in_two_splits():
    path = shared_dataset("nih-metadata", "Data_Entry_2017_v2020.csv.gz")
    with gzip.open(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    position = {c: i for i, c in enumerate(NIH_FINDINGS)}
    labels = np.zeros((len(rows), len(NIH_FINDINGS)), np.float32)
    for i, row in enumerate(rows):
        for finding in row["Finding Labels"].split("|"):
            if finding != "No Finding":
                labels[i, position[finding]] = 1
    table = ImageTable([r["Image Index"] for r in rows], labels, NIH_FINDINGS, "multilabel",
                       [r["Patient ID"] for r in rows], [None] * len(rows))
    assert len(table) == 112_120 and len(set(table.patients)) == 30_805
    out = split_table(table, (0.7, 0.1, 0.2), seed=0)
    assert _leak_free(out)
    shares = {s: out.splits.count(s) / len(out) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.7) < 0.02 and abs(shares["val"] - 0.1) < 0.02
    for k, finding in enumerate(NIH_FINDINGS):  # every finding, Hernia's 227 included, in every split
        for s in ("train", "val", "test"):
            assert out.split(s).labels[:, k].sum() > 0, (finding, s)
