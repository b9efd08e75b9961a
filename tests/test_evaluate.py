"""`cxr evaluate`: runs made here (threshold chosen on val, applied to test) and foreign Keras models."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import write_blob_dataset
from sklearn.metrics import roc_auc_score

from cxr_keras.cli import main
from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from cxr_keras.data.sources import load_dataset
from cxr_keras.data.splits import apply_saved_splits
from cxr_keras.evaluate.calibration import apply_calibration
from cxr_keras.evaluate.evaluate import evaluate_run
from cxr_keras.evaluate.inference import predict_scores, truth
from cxr_keras.evaluate.thresholds import choose
from cxr_keras.models.calibration import Calibration, strip_calibration
from cxr_keras.models.contract import describe_model
from cxr_keras.models.saving import load_model
from cxr_keras.run_folder import run_table
from cxr_keras.train import run_experiment


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blob_dataset(str(tmp_path_factory.mktemp("eval") / "data"), n_per_class=40, size=32, seed=5)


@pytest.fixture(scope="module")
def run_dir(blobs, tmp_path_factory):
    config = ExperimentConfig(
        name="eval", runs_dir=str(tmp_path_factory.mktemp("runs")),
        data=DataConfig(data_dir=blobs, image_size=32, batch_size=16, split_ratios=(0.6, 0.2, 0.2), augment="none"),
        model=ModelConfig(backbone="baseline", weights="none"),
        train=TrainConfig(stages=[StageConfig(epochs=2, trainable="all")], tensorboard=False))
    return run_experiment(config, quiet=True)


def test_run_evaluation_chooses_the_threshold_on_val_and_applies_it_to_test(run_dir, capsys):
    assert main(["evaluate", "--run", run_dir, "--rule", "sensitivity:0.9", "--resamples", "200"]) == 0
    assert "test: 16 images: ROC-AUC" in capsys.readouterr().out
    out = os.path.join(run_dir, "evaluation")
    val = json.load(open(os.path.join(out, "val", "metrics.json")))
    test = json.load(open(os.path.join(out, "test", "metrics.json")))
    best = json.load(open(os.path.join(run_dir, "best.json")))
    assert val["sensitivity"] >= 0.9 and test["threshold"] == val["threshold"] == best["threshold"]
    assert best["threshold_rule"].startswith("sensitivity>=0.9 on validation")
    for key in ("task", "classes", "n_images", "roc_auc", "accuracy", "threshold", "sensitivity", "specificity",
                "per_class", "confusion_matrix", "ci"):
        assert key in test, key
    for name in ("metrics.json", "report.md", "roc.png", "pr.png", "confusion.png", "threshold_sweep.png",
                 "reliability.png", "per_class.png", "failures.png"):
        assert os.path.getsize(os.path.join(out, "test", name)) > 0, name
    # the failure gallery's tiles carry the model's Grad-CAM; the run's page links both evaluations' pages
    assert test["failures"] and all(f["cam"] and os.path.isfile(os.path.join(out, "test", f["tile"]))
                                    for f in test["failures"])
    run_page = open(os.path.join(run_dir, "report.html"), encoding="utf-8").read()
    for split in ("val", "test"):
        assert f'href="evaluation/{split}/report.html"' in run_page
        assert os.path.isfile(os.path.join(out, split, "report.html"))
    assert "At the threshold chosen on validation" in run_page and "Data" in run_page
    assert 'href="#gradcam"' not in run_page  # no Grad-CAM yet: neither the section nor its link

    # the figures in metrics.json are scikit-learn's on the model's own predictions
    model, metadata = load_model(os.path.join(run_dir, "best.keras"), compile=False)
    config = json.load(open(os.path.join(run_dir, "config.json")))
    table = apply_saved_splits(load_dataset(config["data"]["data_dir"]), os.path.join(run_dir, "splits.csv"))
    part = table.split("test")
    spec = describe_model(model, metadata)
    y, scores = truth(part, spec), predict_scores(model, part.paths, spec)
    assert test["roc_auc"] == pytest.approx(roc_auc_score(y, scores), abs=1e-9)
    decided = scores >= test["threshold"]
    assert test["sensitivity"] == pytest.approx(decided[y == 1].mean(), abs=1e-9)


def foreign_model(path, logits: bool):
    """The commonest transfer-learning pattern: a nested backbone, 0..1 inputs, a 2-way softmax (or logits)."""
    inputs = keras.Input((32, 32, 3))
    backbone = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D()],
                                name="backbone")
    outputs = keras.layers.Dense(2, activation=None if logits else "softmax")(backbone(inputs))
    model = keras.Model(inputs, outputs)
    model.save(path)
    return model


@pytest.mark.parametrize("logits", [False, True])
def test_a_foreign_two_output_model_is_evaluated_as_binary(blobs, tmp_path, logits, capsys):
    path = str(tmp_path / "foreign.keras")
    model = foreign_model(path, logits)
    out = str(tmp_path / "out")
    assert main(["evaluate", "--model", path, "--data-dir", blobs, "--preprocess", "unit", "--class-names",
                 "NORMAL", "PNEUMONIA", "--out", out, "--resamples", "100"]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["task"] == "binary" and metrics["n_images"] == 80

    table = load_dataset(blobs)
    x = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, color_mode="grayscale")) for p in table.paths])
    raw = np.asarray(model(np.repeat(x, 3, axis=-1) / 255.0))
    probability = (np.exp(raw) / np.exp(raw).sum(1, keepdims=True))[:, 1] if logits else raw[:, 1]
    y = table.labels[:, table.classes.index("PNEUMONIA")]
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, probability), abs=1e-6)


def test_class_mismatch_is_refused(blobs, tmp_path, capsys):
    path = str(tmp_path / "foreign.keras")
    foreign_model(path, logits=False)
    assert main(["evaluate", "--model", path, "--data-dir", blobs, "--class-names", "normal", "covid",
                 "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()  # NORMAL is the model's normal, spelt another way; PNEUMONIA it does not know
    assert "the data has classes ['PNEUMONIA'] that the model does not know" in captured.err
    assert "the data's classes ['NORMAL'] are read as the model's ['normal']" in captured.out


def test_calibrating_a_run_stores_platt_scaling_in_best_keras(run_dir, tmp_path, capsys):
    import hashlib

    digest = lambda: hashlib.sha256(open(os.path.join(run_dir, "best.keras"), "rb").read()).hexdigest()  # noqa: E731
    unchanged = digest()
    assert main(["evaluate", "--run", run_dir, "--calibrate", "platt", "--cohort-pattern", "(", "--out",
                 str(tmp_path / "bad")]) == 2  # a bad option fails before the model is touched
    assert main(["evaluate", "--run", run_dir, "--calibrate", "platt", "--cohort-pattern", "nomatch(x)", "--out",
                 str(tmp_path / "bad2")]) == 2
    assert digest() == unchanged and "matches none" in capsys.readouterr().err
    before, _ = load_model(os.path.join(run_dir, "best.keras"), compile=False)
    before = strip_calibration(before)
    out = str(tmp_path / "calibrated")
    assert main(["evaluate", "--run", run_dir, "--calibrate", "platt", "--rule", "fixed:0.5", "--out", out,
                 "--resamples", "50"]) == 0
    assert "Threshold 0.500 (fixed:0.5 on validation (16 images), platt-calibrated)" in capsys.readouterr().out
    model, metadata = load_model(os.path.join(run_dir, "best.keras"), compile=False)
    assert isinstance(model.layers[-1], Calibration) and metadata["calibration"]["method"] == "platt"
    val = run_table(run_dir).split("val")
    spec = describe_model(model, metadata)
    assert spec.output == "probabilities"
    raw = predict_scores(before, val.paths, spec)
    calibrated = predict_scores(model, val.paths, spec)
    np.testing.assert_allclose(calibrated, apply_calibration(raw, metadata["calibration"]), atol=1e-5)
    written = json.load(open(os.path.join(out, "val", "metrics.json")))
    assert written["roc_auc"] == pytest.approx(roc_auc_score(truth(val, spec), raw), abs=1e-9)  # a monotone map
    evaluate_run(run_dir, "youden", str(tmp_path / "again"), resamples=20, calibrate="temperature")
    model, metadata = load_model(os.path.join(run_dir, "best.keras"), compile=False)
    assert sum(isinstance(layer, Calibration) for layer in model.layers) == 1
    assert metadata["calibration"]["method"] == "temperature" and metadata["calibration"]["intercept"] == [0.0]


def test_a_shift_aware_rule_weighs_validation_under_the_held_in_shifts(run_dir, tmp_path, capsys):
    from cxr_keras.data.shifts import GROUPS
    from cxr_keras.evaluate.stress import shifted_copies

    out = str(tmp_path / "shift")
    assert main(["evaluate", "--run", run_dir, "--rule", "shift-mean", "--out", out, "--resamples", "20",
                 "--no-stress"]) == 0
    best = json.load(open(os.path.join(run_dir, "best.json")))
    assert "held-in acquisition shifts" in best["threshold_rule"] and best["threshold_rule"].startswith("shift-mean")
    model, metadata = load_model(os.path.join(run_dir, "best.keras"), compile=False)
    spec = describe_model(model, metadata)
    val = run_table(run_dir).split("val")
    y, s = truth(val, spec), predict_scores(model, val.paths, spec)
    shifted = shifted_copies(model, spec, val.paths, y)
    assert len(shifted) == 2 * len(GROUPS["held-in"])
    assert best["threshold"] == pytest.approx(choose(y, s, "shift-mean", shifted=shifted).threshold)


def test_evaluate_run_returns_val_and_test(run_dir, tmp_path):
    results = evaluate_run(run_dir, "youden", str(tmp_path / "again"), resamples=50)
    assert set(results) == {"val", "test", "stress"} and results["val"]["threshold_rule"].startswith("youden")
    assert results["stress"]["split"] == "test" and results["stress"]["strengths"] == [0.5, 1.0]
    assert set(evaluate_run(run_dir, "youden", str(tmp_path / "plain"), resamples=20, stress=None)) == {"val", "test"}


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_run_evaluation_of_multiclass_and_multilabel_synthetic_runs(task, tmp_path):
    from cxr_keras.data.synthetic import write_dataset

    data = write_dataset(str(tmp_path / "data"), task, n_patients=40, size=32, seed=2)
    config = ExperimentConfig(
        name=task, runs_dir=str(tmp_path / "runs"),
        data=DataConfig(data_dir=data, image_size=32, batch_size=16, split_ratios=(0.6, 0.2, 0.2), augment="none"),
        model=ModelConfig(backbone="baseline", weights="none"),
        train=TrainConfig(stages=[StageConfig(epochs=1, trainable="all")], tensorboard=False))
    run = run_experiment(config, quiet=True)
    results = evaluate_run(run, rule="youden", resamples=50)
    test = results["test"]
    assert test["task"] == task and len(test["per_class"]) == len(test["classes"])
    if task == "multilabel":  # one operating point per finding, chosen on validation, carried in best.json
        best = json.load(open(os.path.join(run, "best.json")))
        model, metadata = load_model(os.path.join(run, "best.keras"), compile=False)
        spec = describe_model(model, metadata)
        val = run_table(run).split("val")
        y, s = truth(val, spec), predict_scores(model, val.paths, spec)
        expected = [choose(y[:, k], s[:, k], "youden").threshold if 0 < y[:, k].mean() < 1 else 0.5
                    for k in range(len(spec.classes))]
        assert best["threshold"] == pytest.approx(expected) == test["threshold"]
        assert len(set(best["threshold"])) > 1 and len(best["validation_operating_point"]) == len(spec.classes)
    assert len(test["confusion_matrix"]) == len(test["classes"])
    assert test["roc_auc"] is None or 0 <= test["roc_auc"] <= 1


def test_another_datasets_normals_give_specificity_alone(run_dir, blobs, tmp_path, capsys):
    """`--class-map` reads other label names; with one class left, specificity is counted and the rest is n/a."""
    out = str(tmp_path / "normals")
    model_path = os.path.join(run_dir, "best.keras")
    assert main(["evaluate", "--model", model_path, "--data-dir", blobs, "--class-map", "PNEUMONIA=-",
                 "--threshold", "0.5", "--out", out, "--resamples", "50"]) == 0
    assert "40 images: ROC-AUC n/a, sensitivity n/a, specificity" in capsys.readouterr().out
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    model, metadata = load_model(model_path, compile=False)
    normals = load_dataset(blobs)
    normals = normals.subset(normals.labels[:, 0] == 1)
    scores = predict_scores(model, normals.paths, describe_model(model, metadata))
    assert metrics["specificity"] == pytest.approx(np.mean(scores < 0.5), abs=1e-12)
    assert metrics["sensitivity"] is None and metrics["roc_auc"] is None and "only negative" in metrics["note"]
    assert metrics["class_map"] == {"mapping": {"PNEUMONIA": "-"}, "images": 40, "images_before": 80}
    for options, message in [(["--class-map", "PNEUMONIA=-", "PNEUMONIA=NORMAL"], "more than once"),
                             (["--class-map", "NORMAL=NORMALL"], "map each to one of them, or leave it out"),
                             (["--calibrate", "platt"], "--calibrate is for --run"),
                             (["--rule", "youden"], "--rule is for --run"),
                             (["--threshold", "5"], "--threshold is a probability in [0, 1]"),
                             (["--cohort-pattern", "zzz(q)"], "matches none of the 80 file names")]:
        assert main(["evaluate", "--model", model_path, "--data-dir", blobs, "--out", str(tmp_path / "x"),
                     *options]) == 2, options
        assert message in capsys.readouterr().err, options


def test_relabel_renames_merges_and_drops_classes():
    from cxr_keras.data.table import ImageTable, relabel

    table = ImageTable(paths=list("abcd"), labels=np.eye(3)[[0, 1, 2, 2]], classes=["COVID", "Normal", "Viral"],
                       task="multiclass", patients=[None] * 4, splits=[None] * 4)
    normals = relabel(table, {"Normal": "NORMAL", "COVID": "-", "Viral": "-"})
    assert normals.paths == ["b"] and normals.classes == ["NORMAL"] and normals.task == "binary"
    merged = relabel(table, {"COVID": "PNEUMONIA", "Viral": "PNEUMONIA", "Normal": "NORMAL"})
    assert merged.classes == ["PNEUMONIA", "NORMAL"] and merged.labels[:, 0].tolist() == [1, 0, 1, 1]
    with pytest.raises(ValueError, match="does not have"):
        relabel(table, {"normal": "NORMAL"})
    with pytest.raises(ValueError, match="drops every class"):
        relabel(table, {"Normal": "-", "COVID": "-", "Viral": "-"})


def test_failure_examples_carry_grad_cam_of_the_finding(run_dir):
    from cxr_keras.data.decode import decode_all
    from cxr_keras.evaluate.failures import failure_cams
    from cxr_keras.evaluate.gradcam import compute_cams

    model, metadata = load_model(os.path.join(run_dir, "best.keras"), compile=False)
    spec = describe_model(model, metadata)
    pixels = decode_all(run_table(run_dir).split("val").paths[:3], spec.image_size)
    cams, note = failure_cams(model, spec, pixels, [0, 0, 0])
    assert cams.shape == (3, *spec.image_size) and "what raises its score" in note
    np.testing.assert_allclose(cams, compute_cams(model, pixels.astype("float32"), class_index=1)[0], atol=1e-6)


def test_a_model_without_conv_features_is_evaluated_with_plain_failure_images(blobs, tmp_path, capsys):
    inputs = keras.Input((32, 32, 1))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(
        inputs)))
    path = str(tmp_path / "dense.keras")
    keras.Model(inputs, outputs).save(path)
    from cxr_keras.evaluate.failures import failure_cams

    spec = describe_model(keras.models.load_model(path), None, class_names=["NORMAL", "PNEUMONIA"])
    cams, note = failure_cams(keras.models.load_model(path), spec, np.zeros((2, 32, 32, 1), np.uint8), [0, 0])
    assert cams is None and note.startswith("no Grad-CAM: no gradient flows from the output to layer")
    out = str(tmp_path / "ev")
    assert main(["evaluate", "--model", path, "--data-dir", blobs, "--class-names", "NORMAL", "PNEUMONIA",
                 "--out", out, "--resamples", "20"]) == 0
    assert os.path.getsize(os.path.join(out, "failures.png")) > 0


def test_run_reports_say_validation_is_optimistic_and_show_the_quick_stress_test(run_dir, tmp_path, capsys):
    out = str(tmp_path / "honest")
    assert main(["evaluate", "--run", run_dir, "--out", out, "--resamples", "20"]) == 0
    assert "stress test (test): " in capsys.readouterr().out
    val_report = open(os.path.join(out, "val", "report.md")).read()
    assert "Optimistic by construction" in val_report and "## Under acquisition shifts" in val_report
    assert "A held-out test split of the same data" in open(os.path.join(out, "test", "report.md")).read()
    stress = json.load(open(os.path.join(out, "stress", "stress.json")))
    assert stress["strengths"] == [0.5, 1.0] and stress["n_images"] == 16 and len(stress["rows"]) == 27
    assert {r["group"] for r in stress["rows"][1:]} == {"held-in", "held-out"}
    assert set(stress["worst_by_group"]) == {"held-in", "held-out"}
    assert "(held-out) |" in val_report
    metrics = json.load(open(os.path.join(out, "val", "metrics.json")))
    assert metrics["stress"]["worst"] == stress["worst"]
    quick = str(tmp_path / "none")
    assert main(["evaluate", "--run", run_dir, "--out", quick, "--resamples", "20", "--no-stress"]) == 0
    assert not os.path.exists(os.path.join(quick, "stress"))
    assert "stress" not in json.load(open(os.path.join(quick, "val", "metrics.json")))
