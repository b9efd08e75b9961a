"""Cohorts: named from file names or a column; leave-one-cohort-out splits; metrics per cohort."""

import json
import os

import numpy as np
import pytest
from helpers import write_blob_dataset

from cxr_keras.cli import main
from cxr_keras.data.cohorts import cohort_names, held_out_mask
from cxr_keras.data.splits import SplitError, split_holding_out
from cxr_keras.data.table import ImageTable


def table(names, labels=None, patients=None):
    n = len(names)
    labels = np.eye(2)[labels if labels is not None else [k % 2 for k in range(n)]]
    return ImageTable(paths=[f"/d/{name}" for name in names], labels=labels, classes=["NORMAL", "PNEUMONIA"],
                      task="binary", patients=patients or [f"p{k}" for k in range(n)], splits=[None] * n,
                      meta={"site": (["x", "y", None, "x"] * n)[:n]})


def test_cohorts_from_a_pattern_or_a_column():
    t = table(["NORMAL2-IM-1-1.jpeg", "IM-2-1.jpeg", "person3_virus_1.jpeg", "scan.png"])
    assert cohort_names(t, r"^(NORMAL2|IM|person)") == ["NORMAL2", "IM", "person", "other"]
    assert cohort_names(t, r"IM") == ["IM", "IM", "other", "other"]  # no group: the match itself
    assert cohort_names(t, column="site") == ["x", "y", "other", "x"]
    assert cohort_names(t) is None
    with pytest.raises(ValueError, match="not a valid regular expression"):
        cohort_names(t, "(")
    with pytest.raises(ValueError, match="not a per-image column"):
        cohort_names(t, column="scanner")
    with pytest.raises(ValueError, match=r"no such cohort; the data has \{'IM': 1, 'NORMAL2': 1"):
        held_out_mask(t, ["NORMAL3"], r"^(NORMAL2|IM|person)", None)


def test_split_holding_out_puts_the_cohort_in_test_and_splits_the_rest():
    names = [f"{'B' if k < 20 else 'A'}-{k}.png" for k in range(100)]
    t = table(names)
    held = held_out_mask(t, ["B"], r"^([AB])-", None)
    split = split_holding_out(t, held, (0.6, 0.2, 0.2), seed=0)
    splits = np.array(split.splits)
    assert (splits[held] == "test").all() and set(splits[~held]) == {"train", "val"}
    assert (splits == "val").sum() == 20  # 80 images in proportion 0.6 : 0.2
    shared = table(names, patients=["same" if k in (0, 50) else f"p{k}" for k in range(100)])
    with pytest.raises(SplitError, match="more than one split"):
        split_holding_out(shared, held, (0.6, 0.2, 0.2), seed=0)


def test_a_held_out_cohort_run_is_tested_on_that_cohort_only(tmp_path, capsys):
    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=30, size=32, seed=3)
    for name in sorted(os.listdir(os.path.join(data, "NORMAL")))[:12]:  # a second normal cohort, "site B"
        os.rename(os.path.join(data, "NORMAL", name), os.path.join(data, "NORMAL", name.replace("patient", "patientB")))
    run = str(tmp_path / "run")
    assert main(["train", "--data-dir", data, "--backbone", "baseline", "--weights", "none", "--image-size", "32",
                 "--epochs", "1", "--split-ratios", "0.75", "0.25", "0", "--cohort-pattern", "^patient(B)?",
                 "--hold-out-cohort", "B", "--run-dir", run, "--quiet"]) == 0
    splits = open(os.path.join(run, "splits.csv")).read().splitlines()[1:]
    test_rows = [row for row in splits if ",test," in row]
    assert len(test_rows) == 12 and all("patientB" in row for row in test_rows)
    assert not any("patientB" in row for row in splits if ",test," not in row)
    capsys.readouterr()
    assert main(["evaluate", "--run", run, "--resamples", "20", "--rule", "balanced"]) == 0
    best = json.load(open(os.path.join(run, "best.json")))  # the balanced rule: the training prior, 0.5 here
    assert best["training_prior"] == pytest.approx([0.5]) and best["threshold"] == pytest.approx(0.5)
    assert best["threshold_rule"].startswith("balanced (prior 0.5)")
    test = json.load(open(os.path.join(run, "evaluation", "test", "metrics.json")))
    val = json.load(open(os.path.join(run, "evaluation", "val", "metrics.json")))
    assert test["n_images"] == 12 and test["sensitivity"] is None  # the held-out cohort has normals only
    assert set(test["cohorts"]) == {"B"} and set(val["cohorts"]) == {"other"}  # the pattern's empty group
    assert test["cohorts"]["B"]["specificity"] == pytest.approx(test["specificity"])
    assert "## By cohort" in open(os.path.join(run, "evaluation", "val", "report.md")).read()
    capsys.readouterr()
    everything = ["train", "--data-dir", data, "--backbone", "baseline", "--weights", "none", "--image-size", "32",
                  "--epochs", "1", "--cohort-pattern", "^patient(B|0)", "--hold-out-cohort", "B", "0",
                  "--run-dir", str(tmp_path / "none")]
    assert main(everything) == 2  # every NORMAL image held out
    assert "takes every ['NORMAL'] image" in capsys.readouterr().err and not (tmp_path / "none").exists()
