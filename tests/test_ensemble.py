"""Ensembles of runs: the averaged model is the mean of its members, goes through evaluate, export and predict
like any run, and runs that cannot be averaged honestly are refused in one line."""

import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest
from helpers import write_blob_dataset

from cxr_keras.cli import main
from cxr_keras.ensemble import average_model
from cxr_keras.evaluate.inference import predict_scores
from cxr_keras.models.contract import describe_model
from cxr_keras.models.factory import build_model
from cxr_keras.models.saving import load_model, save_model


@pytest.mark.parametrize("task, classes", [("binary", ["N", "P"]), ("multiclass", ["a", "b", "c"]),
                                           ("multilabel", ["a", "b", "c"])])
def test_the_averaged_model_is_the_mean_of_its_members_before_and_after_saving(task, classes, tmp_path):
    members = []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        members.append(build_model("baseline", task, classes, 32))
    x = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 1)).astype("float32")
    expected = np.mean([m.predict(x, verbose=0) for m in members], axis=0)
    assert np.ptp([m.predict(x, verbose=0) for m in members], axis=0).max() > 1e-3  # the members differ
    model = average_model(members)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    save_model(model, str(tmp_path / "e.keras"))
    np.testing.assert_allclose(load_model(str(tmp_path / "e.keras"))[0].predict(x, verbose=0), expected, atol=1e-6)


def test_members_of_other_input_sizes_are_refused():
    with pytest.raises(ValueError, match=r"member 1 takes \(48, 48, 1\) images, member 0 \(32, 32, 1\)"):
        average_model([build_model("baseline", "binary", ["N", "P"], 32),
                       build_model("baseline", "binary", ["N", "P"], 48)])


def train(data: str, run_dir: str, seed: int) -> str:
    assert main(["train", "--data-dir", data, "--backbone", "baseline", "--weights", "none", "--image-size", "32",
                 "--epochs", "1", "--augment", "none", "--split-ratios", "0.6", "0.2", "0.2", "--seed", str(seed),
                 "--run-dir", run_dir, "--quiet"]) == 0
    return run_dir


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    data = write_blob_dataset(str(root / "data"), n_per_class=30, size=32, seed=5)
    return data, [train(data, str(root / f"seed{seed}"), seed) for seed in (0, 1)], root


def _scores(path: str) -> dict[str, float]:
    with open(path, newline="") as f:
        return {row["path"]: float(row["p_PNEUMONIA"]) for row in csv.DictReader(f)}


def test_an_ensemble_run_is_evaluated_exported_and_predicted_as_the_mean_of_its_members(two_seeds, tmp_path,
                                                                                         capsys):
    data, runs, _ = two_seeds
    ens = str(tmp_path / "ens")
    assert main(["ensemble", *runs, "--out", ens]) == 0
    assert main(["evaluate", "--run", ens, "--no-stress", "--resamples", "50"]) == 0
    scores = _scores(os.path.join(ens, "evaluation", "test", "scores.csv"))
    members = []
    for run in runs:
        model, meta = load_model(os.path.join(run, "best.keras"), compile=False)
        members.append(np.ravel(predict_scores(model, sorted(scores), describe_model(model, meta))))
    assert np.abs(members[0] - members[1]).max() > 1e-3  # two seeds, two models
    np.testing.assert_allclose([scores[p] for p in sorted(scores)], np.mean(members, axis=0), atol=1e-5)
    meta = json.load(open(os.path.join(ens, "best.json")))
    assert meta["ensemble"] == [os.path.abspath(r) for r in runs] and meta["threshold_rule"].startswith(
        "sensitivity>=0.9 on validation") and "the default rule" in meta["threshold_rule"]

    cams = str(tmp_path / "gradcam")
    assert main(["gradcam", "--model", os.path.join(ens, "best.keras"), "--images", data, "--figures", "0",
                 "--out", cams]) == 0
    assert "An ensemble: the maps are of member_1" in capsys.readouterr().out  # not passed off as the ensemble's
    assert json.load(open(os.path.join(cams, "gradcam.json")))["layer"].startswith("member_1/")

    out = str(tmp_path / "export")
    assert main(["export", "--model", os.path.join(ens, "best.keras"), "--out", out, "--formats", "tflite-fp32"]) == 0
    predictions = str(tmp_path / "p.csv")
    assert main(["predict", "--model", os.path.join(out, "model_fp32.tflite"), "--images", data, "--out",
                 predictions]) == 0
    predicted = _scores(predictions)
    for path, score in scores.items():
        assert predicted[path] == pytest.approx(score, abs=1e-4)


def test_runs_that_cannot_be_averaged_honestly_are_one_line_and_nothing_written(two_seeds, tmp_path, capsys):
    data, runs, _ = two_seeds
    other_split = str(tmp_path / "split1")  # seed 1's run, as if its split had put one image elsewhere
    shutil.copytree(runs[1], other_split)
    with open(os.path.join(other_split, "splits.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    first_val = next(r for r in rows if r["split"] == "val")
    first_val["split"] = "train"
    with open(os.path.join(other_split, "splits.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    empty = tmp_path / "empty"
    empty.mkdir()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [([runs[0], other_split], "was split differently"),
             ([runs[0]], "needs at least two runs"),
             ([runs[0], runs[0] + "/"], "is named twice"),
             ([runs[0], str(empty)], "is not a finished run folder (no config.json, splits.csv, best.keras)")]
    for members, message in cases:
        out = tmp_path / "out"
        assert main(["ensemble", *members, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists()
    assert main(["ensemble", *runs, "--out", str(taken)]) == 2
    assert "not empty" in capsys.readouterr().err and os.listdir(taken) == ["keep.txt"]

    before = {run: os.stat(os.path.join(run, "best.keras")).st_mtime_ns for run in runs}
    for out in (runs[1], runs[0], os.path.join(runs[0], "sub")):  # a member, the first one, inside one
        assert main(["ensemble", *runs, "--out", out, "--overwrite"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is, or is inside, or holds the member run" in err[0], err
    assert {run: os.stat(os.path.join(run, "best.keras")).st_mtime_ns for run in runs} == before
    assert not os.path.exists(os.path.join(runs[0], "sub"))

    ens = str(tmp_path / "ens")
    assert main(["ensemble", *runs, "--out", ens]) == 0
    capsys.readouterr()
    assert main(["ensemble", runs[0], ens, "--out", str(tmp_path / "nested")]) == 2
    assert "is itself an ensemble; name its member runs" in capsys.readouterr().err
