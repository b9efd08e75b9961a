"""experiments.proxies: each rule's threshold and figures on every proxy set, on a tiny run and stand-in sets."""

import json
import os
import shutil

import numpy as np
import pytest
from helpers import train_baseline, write_blob_dataset

from cxr_keras.config import ExperimentConfig
from cxr_keras.evaluate.calibration import apply_calibration, fit_calibration
from experiments import proxies


def test_platt_rule_is_the_raw_threshold_where_the_calibrated_probability_is_one_half():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = 1 / (1 + np.exp(-(3 * (y - 0.5) + rng.normal(0, 1.2, 200))))
    t = proxies.threshold_for("platt", y, s)
    assert apply_calibration(np.array([t]), fit_calibration(y, s, "platt"))[0] == pytest.approx(0.5, abs=1e-9)


def test_proxies_of_a_tiny_run_on_stand_in_datasets(tmp_path, capsys):
    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=30, size=32, seed=1)
    os.rename(os.path.join(data, "NORMAL"), os.path.join(data, "NORMAL_"))  # Kermany's class names, two cohorts
    os.makedirs(os.path.join(data, "NORMAL"))
    for k, name in enumerate(sorted(os.listdir(os.path.join(data, "NORMAL_")))):
        new = ("NORMAL2-IM-" if k % 2 else "IM-") + f"{k:04d}-0001.png"
        os.rename(os.path.join(data, "NORMAL_", name), os.path.join(data, "NORMAL", new))
    os.rmdir(os.path.join(data, "NORMAL_"))
    for k, name in enumerate(sorted(os.listdir(os.path.join(data, "PNEUMONIA")))):
        os.rename(os.path.join(data, "PNEUMONIA", name), os.path.join(data, "PNEUMONIA", f"person{k}_virus_1.png"))
    run = train_baseline(data, str(tmp_path / "runs"), split_ratios=(0.6, 0.4, 0.0), name="p")
    other = tmp_path / "datasets"
    blobs = write_blob_dataset(str(tmp_path / "other"), n_per_class=10, size=40, seed=2)
    shutil.copytree(os.path.join(blobs, "NORMAL"), other / "covid-radiography-2class" / "Normal")
    shutil.copytree(os.path.join(blobs, "PNEUMONIA"), other / "covid-radiography-2class" / "COVID")
    shutil.copytree(os.path.join(blobs, "NORMAL"), other / "darkcovidnet" / "No_findings")
    shutil.copytree(os.path.join(blobs, "PNEUMONIA"), other / "darkcovidnet" / "Pneumonia")
    covid = write_blob_dataset(str(tmp_path / "covid"), n_per_class=10, size=40, seed=3)  # other films: copies
    shutil.copytree(os.path.join(covid, "PNEUMONIA"), other / "darkcovidnet" / "Covid-19")  # under 2 labels: refused
    result = proxies.main(["--run", run, "--datasets", str(other), "--rules", "youden", "plateau", "shift-mean",
                           "--strengths", "0.5", "1", "--stress-count", "10"])
    assert set(result["rules"]) == {"youden", "plateau", "shift-mean"}
    assert result["sets"]["adult_normals"] == {"n_images": 10, "n_positive": 0}
    scores = np.load(os.path.join(run, "proxies", "scores.npz"))
    for row in result["rules"].values():
        decided = scores["adult_normals"] >= row["threshold"]
        assert row["adult_normals"]["specificity"] == pytest.approx(1 - decided.mean())
        assert row["adult_normals"]["sensitivity"] is None
        assert set(row["val_cohorts"]) == {"IM", "NORMAL2", "person"}
    from cxr_keras.data.shifts import GROUPS
    from cxr_keras.evaluate.metrics import summary_at_threshold
    from cxr_keras.evaluate.thresholds import choose

    y_val = np.array([1.0 if "person" in os.path.basename(p) else 0.0 for p in scores_paths(run)])
    keep = proxies.stress_rows(len(y_val), 10)
    held_in = [(y_val[keep], scores[f"stress/{s}/{g}"]) for s in GROUPS["held-in"] for g in ("0.5", "1")]
    shift_mean = result["rules"]["shift-mean"]
    expected_threshold = choose(y_val, scores["val"], "shift-mean", shifted=held_in).threshold
    assert shift_mean["threshold"] == pytest.approx(expected_threshold)
    held_out = shift_mean["stress_held_out"]
    assert set(held_out["shifts"]) == set(GROUPS["held-out"])
    worst = min(GROUPS["held-out"], key=lambda s: summary_at_threshold(
        "binary", y_val[keep], scores[f"stress/{s}/0.5"], shift_mean["threshold"])["specificity"])
    assert held_out["min_specificity_at_0.5"]["value"] == pytest.approx(summary_at_threshold(
        "binary", y_val[keep], scores[f"stress/{worst}/0.5"], shift_mean["threshold"])["specificity"])
    # the ranking figure leaves out what the rule chose on: held-out stress and the adult normals only
    expected = np.mean([held_out["balanced_accuracy"], (shift_mean["val"]["sensitivity"] +
                                                         shift_mean["adult_normals"]["specificity"]) / 2])
    assert shift_mean["proxy_balanced_accuracy"] == pytest.approx(expected)
    assert json.load(open(os.path.join(run, "proxies", "proxies.json")))["rules"]["youden"]["threshold"] == \
        result["rules"]["youden"]["threshold"]
    assert "| youden |" in capsys.readouterr().out


def scores_paths(run):
    from cxr_keras.run_folder import run_table

    return run_table(run).split("val").paths


def test_proxies_refuse_what_they_cannot_judge_in_one_line(tmp_path, capsys):

    run = tmp_path / "run"
    run.mkdir()
    ExperimentConfig().save(str(run / "config.json"))
    json.dump({"task": "multiclass", "classes": ["COVID", "NORMAL", "PNEUMONIA"]}, open(run / "best.json", "w"))
    for argv, message in [(["--run", str(run)], "is not a binary NORMAL/PNEUMONIA run"),
                          (["--run", str(tmp_path)], "is not a run folder"),
                          (["--run", str(run), "--rules", "bogus"], "threshold rule must be one of")]:
        with pytest.raises(SystemExit) as exit_:
            proxies.main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err, argv
