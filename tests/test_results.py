"""experiments.kermany_scratch (one row of the results table) and experiments.results_table (the table)."""

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from helpers import write_blob_dataset
from sklearn.metrics import balanced_accuracy_score, roc_auc_score


@pytest.fixture(scope="module")
def row(tmp_path_factory):
    """A real tiny row: baseline CNN, 32 px, 2 epochs, exported (int8) into the temporary folder."""
    from experiments.kermany_scratch import main

    root = tmp_path_factory.mktemp("results")
    data = write_blob_dataset(str(root / "data"), n_per_class=20, size=32)
    cwd = os.getcwd()
    os.chdir(root)  # the export lands in ./saved_models
    try:
        result = main(["--data-dir", data, "--backbone", "baseline", "--image-size", "32", "--batch-size", "8",
                       "--epochs", "2", "--run-dir", str(root / "row"), "--quiet"])
    finally:
        os.chdir(cwd)
    return root, result


def test_row_metrics_match_sklearn_on_the_written_scores(row):
    from cxr_keras.evaluate.scores import read_scores

    root, result = row
    assert json.load(open(root / "row" / "result.json")) == result
    paths, y, s = read_scores(str(root / "row" / "evaluation" / "val" / "scores.csv"))
    assert len(paths) == result["n_val"] == 8  # 80/20 of 40 one-image patients
    y, s = y[:, 0], s[:, 0]
    decided = (s >= result["threshold"]).astype(int)
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-5)
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, decided), abs=1e-5)
    assert result["sensitivity"] == pytest.approx(decided[y == 1].mean(), abs=1e-5)
    assert result["epochs"] == 2 and result["backbone"] == "baseline" and result["split_seed"] == 0
    assert result["params"] > 1000 and 0 < result["peak_gib"] < 24 and result["train_seconds"] > 0
    assert result["int8_mb"] > 0 and 0 <= result["int8_roc_auc"] <= 1
    assert "--backbone baseline" in result["command"]
    assert result["targets_met"] == (result["roc_auc"] >= 0.99 and result["balanced_accuracy"] >= 0.95)
    assert result["init_from"] is None and result["train_seconds_with_init"] == result["train_seconds"]


def test_time_with_init_adds_the_source_runs_training(tmp_path):
    from experiments.kermany_scratch import _with_init

    source = tmp_path / "small" / "best.keras"
    assert _with_init(str(source), 300.0) is None  # the source run's time is unknown: never a silent 300
    os.makedirs(source.parent)
    json.dump({"train_seconds": 1000.0}, open(source.parent / "result.json", "w"))
    assert _with_init(str(source), 300.0) == 1300.0
    json.dump({"train_seconds": 500.0, "train_seconds_with_init": 1300.0}, open(source.parent / "result.json", "w"))
    assert _with_init(str(source), 300.0) == 1600.0  # a chain of resizings counts every run


def test_table_reuses_finished_rows_and_retrains_interrupted_ones(row, tmp_path, monkeypatch):
    from experiments import results_table

    root, result = row
    out = tmp_path / "table"
    shutil.copytree(root / "row", out / "runs" / "kermany-baseline-seed0")
    moved = dict(result, run_dir=str(out / "runs" / "kermany-baseline-seed0"))
    json.dump(moved, open(out / "runs" / "kermany-baseline-seed0" / "result.json", "w"))
    os.makedirs(out / "runs" / "kermany-baseline-seed1")  # interrupted: no result.json
    open(out / "runs" / "kermany-baseline-seed1" / "last.keras", "w").close()
    launched = []

    def fake_run(command, check):
        launched.append(command)
        raise subprocess.CalledProcessError(1, command)

    monkeypatch.setattr(subprocess, "run", fake_run)
    argv = ["--data-dir", "DATA", "--backbones", "baseline", "--epochs", "baseline=3", "--out", str(out)]
    with pytest.raises(subprocess.CalledProcessError):
        results_table.main([*argv, "--seeds", "0", "1"])
    assert len(launched) == 1 and "--split-seed" in launched[0] and launched[0][-1].endswith("seed1")
    assert launched[0][launched[0].index("--epochs") + 1] == "3"
    assert not os.path.exists(out / "runs" / "kermany-baseline-seed1")  # the partial row was cleared first

    rows = results_table.main([*argv, "--seeds", "0"])  # seed 0 is finished: nothing is trained
    assert len(launched) == 1 and rows == [moved]
    table = open(out / "results.md").read()
    assert f"| baseline | 0 | 2 | {result['roc_auc']:.3f} [" in table and result["command"] in table
    assert os.path.getsize(out / "roc.png") > 0 and os.path.getsize(out / "roc_zoom.png") > 0
    assert os.path.exists(out / "gradcam_best.png")
    assert np.isclose(float(next(csv.DictReader(open(out / "results.csv")))["roc_auc"]), result["roc_auc"])


def test_table_refuses_a_malformed_epochs_override():
    from experiments import results_table

    with pytest.raises(SystemExit, match="BACKBONE=N"):
        results_table.main(["--data-dir", "D", "--epochs", "vgg=3"])


def test_cross_validation_covers_every_image_once_and_resumes(tmp_path, monkeypatch):
    from cxr_keras import train
    from experiments.darkcovidnet_cv import main

    monkeypatch.chdir(tmp_path)  # the generated sample data lands in ./runs
    argv = ["--backbone", "baseline", "--image-size", "32", "--epochs", "1", "--folds", "2", "--out", "cv",
            "--quiet"]
    summary = main(argv)
    folds = summary["folds"]
    assert len(folds) == 2 and sum(f["n_val"] for f in folds) == int(np.sum(summary["confusion"]))
    assert summary["accuracy"]["mean"] == pytest.approx(np.mean([f["accuracy"] for f in folds]))
    assert 0 <= summary["border"]["area_share"] < 1 and summary["border"]["per_predicted_class"]
    assert (tmp_path / "cv" / "gradcam_mean.png").stat().st_size > 0
    val_paths = [set(r["path"] for r in csv.DictReader(open(tmp_path / "cv" / f"fold{k}" / "splits.csv"))
                     if r["split"] == "val") for k in range(2)]
    everything = {r["path"] for r in csv.DictReader(open(tmp_path / "cv" / "fold0" / "splits.csv"))}
    assert set().union(*val_paths) == everything and sum(map(len, val_paths)) == len(everything)

    # Each fold from its own model (same split, never a model that saw its validation images).
    larger = main(["--backbone", "baseline", "--image-size", "40", "--epochs", "1", "--folds", "2", "--out", "cv40",
                   "--quiet", "--init-from", "cv/fold{fold}/best.keras"])
    for k in range(2):
        config = json.load(open(tmp_path / "cv40" / f"fold{k}" / "config.json"))
        assert config["model"]["init_from"] == f"cv/fold{k}/best.keras" and config["data"]["image_size"] == 40
        assert {r["path"] for r in csv.DictReader(open(tmp_path / "cv40" / f"fold{k}" / "splits.csv"))
                if r["split"] == "val"} == val_paths[k]
    assert len(larger["folds"]) == 2 and len(larger["pairwise_auc"]) == 6  # 4 sample classes

    monkeypatch.setattr(train, "run_experiment", lambda *a, **k: pytest.fail("a finished fold was trained again"))
    assert main(argv)["accuracy"] == summary["accuracy"]
    assert "mean ± sd" in open(tmp_path / "cv" / "cv.md").read()


def test_pairwise_auc_scores_each_pair_on_its_own_images(tmp_path):
    from experiments.darkcovidnet_cv import pairwise_auc

    rng = np.random.default_rng(0)
    classes, files, truth, probs = ["a", "b", "c"], [], [], []
    for k in range(2):
        t = rng.integers(0, 3, 40)
        p = rng.dirichlet([1, 1, 1], 40) + np.eye(3)[t] * rng.uniform(0, 1, (40, 1))
        p /= p.sum(axis=1, keepdims=True)
        path = tmp_path / f"scores{k}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", *(f"true_{c}" for c in classes), *(f"p_{c}" for c in classes)])
            for i in range(40):
                writer.writerow([f"img{k}_{i}.png", *np.eye(3, dtype=int)[t[i]], *p[i]])
        files.append(str(path))
        truth.append(t)
        probs.append(p)
    truth, probs = np.concatenate(truth), np.concatenate(probs)
    result = pairwise_auc(files, classes)
    assert list(result) == ["a vs b", "a vs c", "b vs c"]
    keep = (truth == 1) | (truth == 2)  # b vs c by hand: images of b or c, score p_c / (p_b + p_c)
    expected = roc_auc_score(truth[keep] == 2, probs[keep, 2] / (probs[keep, 1] + probs[keep, 2]))
    assert result["b vs c"] == pytest.approx(expected)
    assert all(0.5 < v <= 1 for v in result.values())
