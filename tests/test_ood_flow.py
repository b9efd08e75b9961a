"""The out-of-distribution score end to end: fitted by `cxr evaluate --run`, saved inside best.keras, carried by
SavedModel and TFLite (fp32, int8) exports, and written by `cxr predict` as `ood_score` and `flag`."""

import csv
import json
import os

import numpy as np
import pytest
from helpers import train_baseline, write_blob_dataset, write_image

from cxr_keras.cli import main


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    root = tmp_path_factory.mktemp("ood")
    data = write_blob_dataset(str(root / "data"), n_per_class=40, size=64, seed=5)
    run_dir = train_baseline(data, str(root / "runs"), epochs=2, name="ood")
    before = str(root / "before.keras")
    import shutil

    shutil.copy(os.path.join(run_dir, "best.keras"), before)
    shutil.copy(os.path.join(run_dir, "best.json"), str(root / "before.json"))
    assert main(["evaluate", "--run", run_dir, "--resamples", "20"]) == 0
    strange = root / "strange"
    yy, xx = np.mgrid[:64, :64]
    for k in range(6):  # stripes and checkerboards: nothing like the training films
        write_image(str(strange / f"stripes{k}.png"), ((np.sin(xx / (1.5 + k)) > 0) * 255).astype(np.uint8))
        write_image(str(strange / f"checks{k}.png"), ((((yy // (4 + k)) + (xx // (4 + k))) % 2) * 255).astype(np.uint8))
    out = str(root / "saved")
    assert main(["export", "--model", os.path.join(run_dir, "best.keras"), "--out", out, "--formats", "savedmodel",
                 "tflite-fp32", "tflite-int8", "--calibration-data", data, "--calibration-count", "40"]) == 0
    return data, run_dir, str(strange), out, before


def _rows(path):
    return {os.path.basename(r["path"]): r for r in csv.DictReader(open(path))}


def test_evaluation_fits_the_score_and_its_threshold(flow):
    _, run_dir, _, _, _ = flow
    ood = json.load(open(os.path.join(run_dir, "best.json")))["ood"]
    assert ood["method"] == "mahalanobis" and ood["threshold"] > 0
    from cxr_keras.models.ood import has_ood
    from cxr_keras.models.saving import load_model

    assert has_ood(load_model(os.path.join(run_dir, "best.keras"), compile=False, ood=True)[0])
    assert not has_ood(load_model(os.path.join(run_dir, "best.keras"), compile=False)[0])


def _predict(model, images, out, *extra):
    assert main(["predict", "--model", model, "--images", *images, "--out", out, *extra]) == 0
    return _rows(out)


@pytest.mark.parametrize("artifact", ["best.keras", "savedmodel", "model_fp32.tflite", "model_int8.tflite"])
def test_every_artifact_scores_and_flags_strange_images(flow, artifact, tmp_path):
    data, run_dir, strange, out, _ = flow
    model = os.path.join(run_dir, artifact) if artifact.endswith(".keras") else os.path.join(out, artifact)
    normal = os.path.join(data, "NORMAL")
    rows = _predict(model, [normal, strange], str(tmp_path / "p.csv"))
    threshold = json.load(open(os.path.join(run_dir, "best.json")))["ood"]["threshold"]
    films = [r for name, r in rows.items() if name.startswith("patient")]
    odd = [r for name, r in rows.items() if not name.startswith("patient")]
    assert all(r["ood_score"] != "" for r in rows.values())
    assert np.mean([float(r["ood_score"]) > threshold for r in odd]) >= 0.9
    assert all(r["flag"] for r in odd)
    assert np.median([float(r["ood_score"]) for r in films]) < np.median([float(r["ood_score"]) for r in odd])
    if artifact != "best.keras":
        keras_rows = _predict(os.path.join(run_dir, "best.keras"), [normal, strange], str(tmp_path / "k.csv"))
        agree = np.mean([(float(r["ood_score"]) > threshold) == (float(keras_rows[n]["ood_score"]) > threshold)
                         for n, r in rows.items()])
        assert agree >= (0.9 if "int8" in artifact else 1.0)
        if "int8" not in artifact:
            np.testing.assert_allclose([float(r["ood_score"]) for r in rows.values()],
                                       [float(keras_rows[n]["ood_score"]) for n in rows], rtol=1e-3)


def test_skip_writes_abstain_for_flagged_films(flow, tmp_path):
    _, run_dir, strange, _, _ = flow
    rows = _predict(os.path.join(run_dir, "best.keras"), [strange], str(tmp_path / "p.csv"), "--on-flag", "skip")
    assert {r["decision"] for r in rows.values()} == {"abstain"}


def test_a_model_without_the_score_still_predicts_with_one_notice(flow, tmp_path, capsys):
    data, _, strange, _, before = flow
    rows = _predict(before, [strange], str(tmp_path / "p.csv"))
    assert all(r["ood_score"] == "" and r["decision"] for r in rows.values())
    assert capsys.readouterr().err.count("has no out-of-distribution score") == 1


def test_the_model_card_carries_the_score_and_its_threshold(flow):
    *_, out, _ = flow
    card = json.load(open(os.path.join(out, "model_card.json")))
    assert card["ood"]["output"] == "ood_score" and card["ood"]["threshold"] > 0


def test_evaluating_the_model_on_other_data_reports_accepted_and_flagged_films(flow, tmp_path):
    data, run_dir, _, _, _ = flow
    out = str(tmp_path / "eval")
    assert main(["evaluate", "--model", os.path.join(run_dir, "best.keras"), "--data-dir", data, "--out", out,
                 "--resamples", "20"]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    ood = metrics["ood"]
    assert ood["flagged"] + ood["accepted_metrics"]["n_images"] == metrics["n_images"]
    assert set(ood["risk_coverage"]) == {"confidence", "ood score"}
    assert os.path.isfile(os.path.join(out, "risk_coverage.png"))
    assert "Films not of the model's kind" in open(os.path.join(out, "report.md")).read()
