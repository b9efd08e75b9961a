"""A foreign model built the Keras guide's way (nested backbone, two logits, preprocessing left to the caller)
through the whole flow: evaluate, Grad-CAM, export with its preprocessing inside the graph, predict on raw pixels."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from helpers import write_blob_dataset

from cxr_keras.cli import main
from cxr_keras.export import verify_card


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """(data, model path): a conv backbone nested in a wrapper with 2 logits, fitted a little on blobs, saved by
    Keras alone (no metadata), expecting pixels scaled to [-1, 1] by the caller ('tf' preprocessing). (The
    applications nested this way are in test_gradcam_zoo.py; here the flow matters, and a model that learns.)"""
    root = tmp_path_factory.mktemp("foreign")
    data = write_blob_dataset(str(root / "data"), n_per_class=24, size=32, seed=5)
    keras.utils.set_random_seed(0)
    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(image)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="top_conv")(x)
    backbone = keras.Model(image, x, name="backbone")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
    x = keras.layers.Dropout(0.2)(keras.layers.Dense(16, activation="relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    from cxr_keras.data.decode import decode_all
    from cxr_keras.data.sources import load_dataset

    table = load_dataset(data)
    images = decode_all(table.paths, (32, 32)).astype("float32")
    x = np.repeat(images, 3, axis=-1) / 127.5 - 1
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, table.labels[:, 1].astype(int), epochs=12, batch_size=16, verbose=0)
    path = str(root / "foreign.keras")
    model.save(path)
    return data, path


DESCRIBE = ["--preprocess", "tf", "--class-names", "NORMAL", "PNEUMONIA"]


def _csv(path):
    return {os.path.basename(r["path"]): r for r in csv.DictReader(open(path))}


def test_a_guide_style_model_goes_through_evaluate_gradcam_export_and_predict(foreign, tmp_path):
    data, model = foreign
    evaluation = str(tmp_path / "evaluation")
    assert main(["evaluate", "--model", model, "--data-dir", data, *DESCRIBE, "--threshold", "0.4",
                 "--out", evaluation, "--no-stress", "--resamples", "50"]) == 0
    metrics = json.load(open(os.path.join(evaluation, "metrics.json")))
    assert metrics["threshold"] == 0.4 and metrics["preprocess"] == "tf" and metrics["roc_auc"] > 0.8
    scores = {name: float(row["p_PNEUMONIA"]) for name, row in _csv(os.path.join(evaluation, "scores.csv")).items()}

    cams = str(tmp_path / "gradcam")
    assert main(["gradcam", "--model", model, "--images", data, *DESCRIBE, "--threshold", "0.4", "--figures", "0",
                 "--out", cams]) == 0
    summary = json.load(open(os.path.join(cams, "gradcam.json")))
    assert summary["layer"] == "backbone/top_conv" and summary["threshold"] == 0.4
    names = [os.path.basename(p) for p in sorted(scores)]  # gradcam walks folders in the same sorted order
    assert sorted(summary["explained"]) == sorted("PNEUMONIA" if scores[n] >= 0.4 else "NORMAL" for n in names)

    out = str(tmp_path / "export")
    assert main(["export", "--model", model, "--out", out, "--formats", "savedmodel", "tflite-fp32", "tflite-int8",
                 "--calibration-data", data, "--calibration-count", "24", "--threshold-from",
                 os.path.join(evaluation, "metrics.json"), "--eval-data", data]) == 0
    card = verify_card(out)
    assert card["classes"] == ["NORMAL", "PNEUMONIA"] and card["positive_class"] == "PNEUMONIA"
    assert card["threshold"] == 0.4 and card["input"]["shape"] == [1, 32, 32, 1]
    assert "'tf' preprocessing" in card["input"]["preprocessing"] and card["foreign"]["output"] == "logits"

    for artifact in ("model_fp32.tflite", "savedmodel"):
        predictions = str(tmp_path / f"{artifact}.csv")
        assert main(["predict", "--model", os.path.join(out, artifact), "--images", data, "--out", predictions]) == 0
        rows = _csv(predictions)
        assert set(rows) == set(scores)
        for name, row in rows.items():  # raw pixels in: the same probability `cxr evaluate` computed outside
            assert float(row["p_PNEUMONIA"]) == pytest.approx(scores[name], abs=1e-4)
            assert row["decision"] == ("PNEUMONIA" if float(row["p_PNEUMONIA"]) >= 0.4 else "NORMAL")
    report = json.load(open(os.path.join(out, "export_report.json")))["artifacts"]
    assert report["keras"]["roc_auc"] == pytest.approx(metrics["roc_auc"], abs=1e-6)
    assert report["tflite-int8"]["max_abs_dp"] < 0.2


def test_a_foreign_export_says_what_it_is_missing(foreign, tmp_path, capsys):
    data, model = foreign
    out = str(tmp_path / "x")
    assert main(["export", "--model", model, "--out", out]) == 2
    assert "needs --class-names (in output order) and --preprocess" in capsys.readouterr().err
    assert main(["export", "--model", model, "--out", out, *DESCRIBE]) == 2
    assert "a foreign binary model needs its operating point" in capsys.readouterr().err
    assert main(["export", "--model", model, "--out", out, *DESCRIBE, "--threshold-from", "nope.json"]) == 2
    assert "--threshold-from nope.json is not a file" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_the_toolkits_own_model_refuses_foreign_options(tmp_path, capsys):
    from cxr_keras.models.factory import build_model
    from cxr_keras.models.saving import save_model

    model = build_model("baseline", "binary", ["NORMAL", "PNEUMONIA"], 32)
    path = str(tmp_path / "own.keras")
    save_model(model, path, {"task": "binary", "classes": ["NORMAL", "PNEUMONIA"], "threshold": 0.5})
    assert main(["export", "--model", path, "--out", str(tmp_path / "x"), "--preprocess", "tf"]) == 2
    assert "--preprocess: only for a foreign model" in capsys.readouterr().err


@pytest.mark.parametrize("preprocess", ["none", "unit", "tf", "torch", "caffe"])
@pytest.mark.parametrize("head", ["sigmoid1", "logits2", "softmax3"])
def test_the_wrapped_graph_computes_what_evaluate_computes_outside_it(preprocess, head):
    """wrap(model)(raw pixels) == to_scores(model(feed(raw pixels))): every preprocessing, every output kind."""
    from cxr_keras.models.contract import describe_model, feed, to_scores
    from cxr_keras.models.foreign import wrap

    units, activation = {"sigmoid1": (1, "sigmoid"), "logits2": (2, None), "softmax3": (3, "softmax")}[head]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(units, activation=activation)(x))
    names = ["A", "B", "C"][: max(units, 2)]
    spec = describe_model(model, None, class_names=names, preprocess=preprocess)
    raw = np.random.default_rng(1).uniform(0, 255, (5, 8, 8, 1)).astype("float32")
    wrapped = np.asarray(wrap(model, spec)(raw), dtype=np.float64)
    outside = to_scores(np.asarray(model(feed(raw, spec)), dtype=np.float64), spec)
    np.testing.assert_allclose(wrapped.reshape(outside.shape), outside, atol=1e-6)


def _small(path, head, inputs_shape=(32, 32, 3)):
    """A small conv classifier with the given head (a list of layers), saved without metadata."""
    inputs = keras.Input(inputs_shape)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    for layer in head:
        x = layer(x)
    keras.Model(inputs, x).save(path)
    return path


def test_a_softmax_layer_is_read_as_probabilities_through_export_and_predict(foreign, tmp_path):
    data, _ = foreign
    model = _small(str(tmp_path / "sl.keras"), [keras.layers.Dense(2), keras.layers.Softmax()])
    evaluation = str(tmp_path / "ev")
    assert main(["evaluate", "--model", model, "--data-dir", data, *DESCRIBE, "--threshold", "0.5", "--out",
                 evaluation, "--resamples", "20"]) == 0
    assert json.load(open(os.path.join(evaluation, "metrics.json")))["output"] == "probabilities"
    out = str(tmp_path / "ex")
    assert main(["export", "--model", model, "--out", out, "--formats", "tflite-fp32", "--threshold-from",
                 os.path.join(evaluation, "metrics.json")]) == 0
    assert verify_card(out)["foreign"]["output"] == "probabilities"
    scores = {n: float(r["p_PNEUMONIA"]) for n, r in _csv(os.path.join(evaluation, "scores.csv")).items()}
    assert main(["predict", "--model", os.path.join(out, "model_fp32.tflite"), "--images", data, "--out",
                 str(tmp_path / "p.csv")]) == 0
    for name, row in _csv(str(tmp_path / "p.csv")).items():
        assert float(row["p_PNEUMONIA"]) == pytest.approx(scores[name], abs=1e-5)


def test_the_evaluated_task_travels_to_the_export(foreign, tmp_path):
    data, _ = foreign
    model = _small(str(tmp_path / "ml.keras"), [keras.layers.Dense(2, activation="sigmoid")])
    evaluation = str(tmp_path / "ev")
    assert main(["evaluate", "--model", model, "--data-dir", data, *DESCRIBE, "--model-task", "multilabel",
                 "--out", evaluation, "--resamples", "20"]) == 0
    out = str(tmp_path / "ex")
    assert main(["export", "--model", model, "--out", out, "--formats", "tflite-fp32", "--threshold-from",
                 os.path.join(evaluation, "metrics.json")]) == 0
    card = verify_card(out)
    assert card["task"] == "multilabel" and not card["foreign"]["two_column_binary"]


@pytest.mark.parametrize("case", ["any-size", "duplicate-names", "two-inputs", "list-json", "string-threshold",
                                  "folder", "unknown-eval-labels", "binary-list"])
def test_what_cannot_be_exported_is_one_line_and_nothing_written(foreign, tmp_path, capsys, case):
    data, model = foreign
    args = [*DESCRIBE, "--threshold", "0.5"]
    if case == "any-size":
        model = _small(str(tmp_path / "m.keras"), [keras.layers.Dense(1, activation="sigmoid")], (None, None, 3))
        expected = "takes images of any size"
    elif case == "duplicate-names":
        args, expected = ["--preprocess", "tf", "--class-names", "A", "A", "--threshold", "0.5"], "a name twice"
    elif case == "two-inputs":
        a, b = keras.Input((32, 32, 3)), keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(keras.layers.Add()([a, b])))
        model = str(tmp_path / "two.keras")
        keras.Model([a, b], keras.layers.Dense(1, activation="sigmoid")(x)).save(model)
        expected = "has 2 inputs and 1 outputs"
    elif case in ("list-json", "string-threshold", "binary-list", "folder"):
        path = str(tmp_path / "m.json")
        content = {"list-json": [0.5], "string-threshold": {"threshold": "high"},
                   "binary-list": {"threshold": [0.4, 0.5]}}.get(case)
        json.dump(content, open(path, "w"))
        args = [*DESCRIBE, "--threshold-from", str(tmp_path) if case == "folder" else path]
        expected = {"list-json": "holds a JSON list", "string-threshold": "got 'high'",
                    "binary-list": "takes one threshold", "folder": "is not a file"}[case]
    else:
        args = ["--preprocess", "tf", "--class-names", "A", "B", "--threshold", "0.5", "--eval-data", data]
        expected = "that the model does not know"
    out = str(tmp_path / "out")
    assert main(["export", "--model", model, "--out", out, "--formats", "tflite-fp32", *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err and not os.path.exists(out)


@pytest.mark.parametrize("case", ["nested-model", "through-a-layer", "missing-images", "own-model-preprocess",
                                  "threshold-above-1"])
def test_gradcam_refusals_are_one_line_and_write_nothing(foreign, tmp_path, capsys, case):
    data, model = foreign
    args = ["--images", data, *DESCRIBE]
    if case == "nested-model":
        args += ["--layer", "backbone"]
        expected = ("--layer 'backbone' is a nested model; name a layer inside it as backbone/LAYER (its last 4-D "
                    "one: backbone/top_conv)")
    elif case == "through-a-layer":
        dense = [layer.name for layer in keras.models.load_model(model).layers
                 if isinstance(layer, keras.layers.Dense)][0]  # its name depends on what the process built before
        args += ["--layer", f"{dense}/x"]
        expected = "is a layer, not a nested model"
    elif case == "threshold-above-1":
        args += ["--threshold", "1.5"]
        expected = "a threshold is a probability in [0, 1], got 1.5 (--threshold)"
    elif case == "missing-images":
        args = ["--images", str(tmp_path / "nowhere"), *DESCRIBE]
        expected = "nowhere does not exist"
    else:
        from cxr_keras.models.factory import build_model
        from cxr_keras.models.saving import save_model

        model = str(tmp_path / "own.keras")
        save_model(build_model("baseline", "binary", ["NORMAL", "PNEUMONIA"], 32), model,
                   {"task": "binary", "classes": ["NORMAL", "PNEUMONIA"], "threshold": 0.5})
        args = ["--images", data, "--preprocess", "tf"]
        expected = "--preprocess: only for a foreign model"
    out = str(tmp_path / "out")
    assert main(["gradcam", "--model", model, "--out", out, *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and not os.path.exists(out)
