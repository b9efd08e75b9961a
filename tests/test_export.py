"""Export: every format round-trips from a small trained model, int8 quantization, hashes, predict, edge path."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import train_baseline, write_blob_dataset, write_dicom

from cxr_keras.cli import main
from cxr_keras.export import ExportError, recalibrated_point, verify_card
from cxr_keras.predict import artifact_threshold

FORMATS = ["savedmodel", "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-int8-mixed"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = write_blob_dataset(str(root / "data"), n_per_class=30, size=32, seed=7)
    run_dir = train_baseline(data, str(root / "runs"), epochs=3, name="export")
    out = str(root / "saved")
    assert main(["export", "--model", os.path.join(run_dir, "best.keras"), "--out", out, "--formats", *FORMATS,
                 "--calibration-data", data, "--calibration-count", "40", "--eval-data", data,
                 "--recalibrate-threshold"]) == 0
    return data, run_dir, out


def test_every_artifact_matches_keras_and_the_card(exported):
    data, run_dir, out = exported
    card = verify_card(out)
    assert set(card["artifacts"]) == set(FORMATS) and card["classes"] == ["NORMAL", "PNEUMONIA"]
    assert card["input"]["shape"] == [1, 32, 32, 1] and "Not a medical device" in card["intended_use"]
    report = json.load(open(os.path.join(out, "export_report.json")))["artifacts"]
    assert report["savedmodel"]["max_abs_dp"] < 1e-5 and report["tflite-fp32"]["max_abs_dp"] < 1e-4
    assert report["tflite-fp16"]["max_abs_dp"] < 1e-2
    assert abs(report["tflite-int8"]["roc_auc"] - report["keras"]["roc_auc"]) < 0.05
    assert report["tflite-int8"]["bytes"] < 0.4 * report["tflite-fp32"]["bytes"]
    assert "| tflite-int8 |" in open(os.path.join(out, "README.md")).read()


def test_int8_quantization_parameters_are_applied(exported, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    data, run_dir, _ = exported
    out = str(tmp_path / "uint8")
    assert main(["export", "--model", os.path.join(run_dir, "best.keras"), "--out", out, "--formats",
                 "tflite-int8", "--calibration-data", data, "--calibration-count", "40", "--int8-io", "uint8"]) == 0
    interpreter = Interpreter(model_path=os.path.join(out, "model_int8.tflite"))
    details = interpreter.get_input_details()[0]
    scale, zero = details["quantization"]
    assert details["dtype"] == np.uint8 and scale > 0
    assert 0 <= -zero * scale <= 1e-6 + abs(scale) * 255  # 0..255 pixels map into the uint8 range

    from cxr_keras.edge import TFLiteModel
    from cxr_keras.models.saving import load_model

    model, _ = load_model(os.path.join(run_dir, "best.keras"), compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(TFLiteModel(os.path.join(out, "model_int8.tflite")).predict(x),
                               np.asarray(model(x)), atol=0.1)


def _logistic_output_types(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    tensors = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    return {np.dtype(tensors[op["outputs"][0]]).name for op in interpreter._get_ops_details()
            if op["op_name"] == "LOGISTIC"}


def test_int8_mixed_keeps_the_sigmoid_in_float(exported):
    _, _, out = exported
    assert _logistic_output_types(os.path.join(out, "model_int8.tflite")) == {"int8"}
    assert _logistic_output_types(os.path.join(out, "model_int8_mixed.tflite")) == {"float32"}
    report = json.load(open(os.path.join(out, "export_report.json")))["artifacts"]
    assert report["tflite-int8-mixed"]["max_abs_dp"] < 0.1


def test_recalibrated_thresholds_keep_the_keras_sensitivity(exported):
    _, _, out = exported
    card = verify_card(out)
    report = json.load(open(os.path.join(out, "export_report.json")))["artifacts"]
    for fmt in ("tflite-int8", "tflite-int8-mixed"):
        own = report[fmt]["recalibrated"]
        assert card["artifacts"][fmt]["threshold"] == own["threshold"]
        assert own["sensitivity"] >= report["keras"]["sensitivity"]
        assert artifact_threshold(card, os.path.join(out, card["artifacts"][fmt]["file"])) == own["threshold"]
    assert "threshold" not in card["artifacts"]["savedmodel"]


def test_recalibrated_point_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.5, 0.7, 0.2, 0.6, 0.8, 0.9])
    point = recalibrated_point(y, s, sensitivity=0.75)  # 3 of 4 positives: threshold at the third highest, 0.6
    assert point == {"threshold": 0.6, "sensitivity": 0.75, "specificity": 2 / 3}
    assert recalibrated_point(y, s, 1.0)["threshold"] == 0.2


def test_a_changed_artifact_fails_the_hash_check(exported, tmp_path):
    import shutil

    _, _, out = exported
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    with open(os.path.join(copy, "model_fp16.tflite"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="\\(tflite-fp16\\) model_fp16.tflite does not match model_card.json"):
        verify_card(copy)


def test_int8_without_enough_calibration_data_is_refused(exported, tmp_path, capsys):
    data, run_dir, _ = exported
    assert main(["export", "--model", os.path.join(run_dir, "best.keras"), "--out", str(tmp_path / "x"),
                 "--formats", "tflite-int8", "--calibration-data", data, "--calibration-count", "500"]) == 2
    assert "asks for 500 images but the calibration data has 60" in capsys.readouterr().err


@pytest.mark.parametrize("artifact", ["best.keras", "savedmodel", "model_fp32.tflite", "model_int8.tflite"])
def test_predict_on_each_artifact_with_a_dicom_and_a_broken_file(exported, artifact, tmp_path, capsys):
    data, run_dir, out = exported
    model = os.path.join(run_dir, artifact) if artifact.endswith(".keras") else os.path.join(out, artifact)
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.full((40, 40), 90, np.uint16) * 10
    write_dicom(str(images / "scan.dcm"), pixels)
    (images / "broken.png").write_bytes(b"not an image")
    normal = sorted(os.listdir(os.path.join(data, "PNEUMONIA")))[0]
    target = str(tmp_path / "predictions.csv")
    assert main(["predict", "--model", model, "--images", str(images), os.path.join(data, "PNEUMONIA", normal),
                 "--out", target]) == 0
    rows = {os.path.basename(r["path"]): r for r in csv.DictReader(open(target))}
    assert rows["broken.png"]["error"] and not rows["scan.dcm"]["error"]
    printed = capsys.readouterr()
    assert printed.err.count("are stretched to it") == 1 and "scan.dcm is 40x40 px" in printed.err  # model: 32 px
    assert "2 of 3 images predicted (1 resized, 2 flagged" in printed.out  # both under 64 px: input:tiny
    p = float(rows[normal]["p_PNEUMONIA"])
    card = verify_card(out)
    threshold = artifact_threshold(card, model) if artifact.endswith(".tflite") else card["threshold"]
    assert rows[normal]["decision"] == ("PNEUMONIA" if p >= threshold else "NORMAL")
    assert float(rows[normal]["p_NORMAL"]) == pytest.approx(1 - p)


def test_the_tflite_path_imports_no_tensorflow(exported, tmp_path):
    data, _, out = exported
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'keras', 'keras_cv'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from cxr_keras.predict import main\n"
        f"sys.exit(main(['--model', {os.path.join(out, 'model_int8.tflite')!r}, '--images', {data!r}, "
        f"'--out', {str(tmp_path / 'p.csv')!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "60 of 60 images predicted (0 resized," in result.stdout


def _tampered_copy(out, tmp_path, change):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    card_path = os.path.join(copy, "model_card.json")
    card = json.load(open(card_path))
    change(copy, card)
    json.dump(card, open(card_path, "w"))
    return copy


@pytest.mark.parametrize("artifact", ["model_int8.tflite", "savedmodel"])
def test_predict_refuses_an_artifact_whose_hash_does_not_match_the_card(exported, tmp_path, capsys, artifact):
    data, _, out = exported

    def zero_hashes(copy, card):
        for entry in card["artifacts"].values():
            entry["sha256"] = "0" * 64

    copy = _tampered_copy(out, tmp_path, zero_hashes)
    target = str(tmp_path / "p.csv")
    argv = ["predict", "--model", os.path.join(copy, artifact), "--images", data, "--out", target]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{artifact} does not match model_card.json" in err and not os.path.exists(target)
    assert main([*argv, "--no-verify"]) == 0
    assert "WARNING: --no-verify" in capsys.readouterr().err and os.path.exists(target)


def test_predict_refuses_an_artifact_the_card_does_not_list(exported, tmp_path, capsys):
    import shutil

    data, _, out = exported
    copy = _tampered_copy(out, tmp_path, lambda copy, card: shutil.copy(os.path.join(copy, "model_fp32.tflite"),
                                                                         os.path.join(copy, "extra.tflite")))
    assert main(["predict", "--model", os.path.join(copy, "extra.tflite"), "--images", data,
                 "--out", str(tmp_path / "p.csv")]) == 2
    assert "extra.tflite is not listed in" in capsys.readouterr().err


def test_predict_refuses_images_above_the_pixel_limit_from_their_header(exported, tmp_path, capsys):
    data, _, out = exported
    images = tmp_path / "images"
    images.mkdir()
    write_dicom(str(images / "big.dcm"), np.zeros((40, 40), np.uint16))
    from PIL import Image

    Image.fromarray(np.zeros((40, 40), np.uint8)).save(images / "big.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(images / "small.png")
    os.symlink("/dev/zero", images / "zero.png")  # would never end if read
    target = str(tmp_path / "p.csv")
    assert main(["predict", "--model", os.path.join(out, "model_int8.tflite"), "--images", str(images),
                 "--out", target, "--max-pixels", "1000"]) == 0
    rows = {os.path.basename(r["path"]): r["error"] for r in csv.DictReader(open(target))}
    assert "40 x 40 = 1,600 pixels, above the limit of 1,000" in rows["big.png"]
    assert "40x40 px is above the limit of 1,000 pixels" in rows["big.dcm"]
    assert rows["small.png"] == "" and "not a regular file" in rows["zero.png"]


def _export(run_dir, out, formats, *extra):
    return main(["export", "--model", os.path.join(run_dir, "best.keras"), "--out", out, "--formats", *formats,
                 *extra])


def test_a_re_export_replaces_the_folder_whole_and_only_with_overwrite(exported, tmp_path, capsys):
    data, run_dir, _ = exported
    out = str(tmp_path / "exp")
    assert _export(run_dir, out, ["savedmodel", "tflite-fp32", "tflite-dynamic"]) == 0
    assert _export(run_dir, out, ["tflite-fp32"]) == 2
    assert "already exists and is not empty; choose a new folder or pass --overwrite" in capsys.readouterr().err
    assert _export(run_dir, out, ["tflite-fp32"], "--overwrite") == 0
    card = verify_card(out)
    assert sorted(os.listdir(out)) == ["model_card.json", "model_fp32.tflite"]  # no stale savedmodel/ or dynamic
    assert list(card["artifacts"]) == ["tflite-fp32"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary folder left


def test_a_failed_export_leaves_the_previous_one_untouched(exported, tmp_path, monkeypatch):
    import cxr_keras.export as export

    data, run_dir, _ = exported
    out = str(tmp_path / "exp")
    assert _export(run_dir, out, ["tflite-fp32"]) == 0
    before = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill mid-conversion would

    monkeypatch.setattr(export, "convert_tflite", killed)
    assert _export(run_dir, out, ["savedmodel", "tflite-fp32"], "--overwrite") == 130  # Ctrl-C: no traceback
    assert {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out)} == before
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_export_never_replaces_a_folder_that_is_not_an_export(exported, tmp_path, capsys):
    _, run_dir, _ = exported
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert _export(run_dir, str(mine), ["tflite-fp32"], "--overwrite") == 2
    assert "no model_card.json, so it is not an export to replace" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"


def test_the_parity_report_measures_the_artifact_itself(exported):
    """Recompute each TFLite artifact's figures from the file on the same images: they must be the report's (a
    report that ran the Keras model instead would show max|dp| 0 and the Keras AUC)."""
    from sklearn.metrics import roc_auc_score

    from cxr_keras.data.decode import decode_all
    from cxr_keras.data.sources import load_dataset
    from cxr_keras.edge import TFLiteModel
    from cxr_keras.models.saving import load_model

    data, run_dir, out = exported
    report = json.load(open(os.path.join(out, "export_report.json")))["artifacts"]
    table = load_dataset(data)
    images = decode_all(table.paths, (32, 32)).astype(np.float32)
    y = table.labels[:, 1]
    keras_p = np.asarray(load_model(os.path.join(run_dir, "best.keras"), compile=False)[0](images))[:, 0]
    for fmt, name in (("tflite-int8", "model_int8.tflite"), ("tflite-fp16", "model_fp16.tflite")):
        p = TFLiteModel(os.path.join(out, name)).predict(images)[:, 0].astype(np.float64)
        assert report[fmt]["max_abs_dp"] == pytest.approx(np.max(np.abs(p - keras_p)), abs=1e-6)
        assert report[fmt]["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert report["tflite-int8"]["max_abs_dp"] > 1e-4  # int8 cannot equal the float model exactly


def test_a_calibrated_model_exports_with_its_calibration_inside(exported, tmp_path):
    """Platt scaling lives in the model, so the TFLite file gives calibrated probabilities and the card says so."""
    from cxr_keras.data.decode import decode_all
    from cxr_keras.data.sources import load_dataset
    from cxr_keras.edge import TFLiteModel
    from cxr_keras.evaluate.calibration import apply_calibration
    from cxr_keras.models.calibration import with_calibration
    from cxr_keras.models.saving import load_model, save_model

    data, run_dir, _ = exported
    model, metadata = load_model(os.path.join(run_dir, "best.keras"), compile=False)
    params = {"method": "platt", "slope": [0.4], "intercept": [0.8], "exclusive": False, "fitted_on": "a test"}
    path = str(tmp_path / "calibrated.keras")
    save_model(with_calibration(model, params["slope"], params["intercept"]), path, {**metadata, "calibration": params})
    out = str(tmp_path / "saved")
    assert main(["export", "--model", path, "--out", out, "--formats", "tflite-fp32"]) == 0
    card = json.load(open(os.path.join(out, "model_card.json")))
    assert card["calibration"]["slope"] == [0.4] and "platt-calibrated" in card["output"]["meaning"]
    images = decode_all(load_dataset(data).paths[:16], (32, 32)).astype(np.float32)
    raw = np.asarray(model(images))[:, 0].astype(np.float64)
    p = TFLiteModel(os.path.join(out, "model_fp32.tflite")).predict(images)[:, 0]
    np.testing.assert_allclose(p, apply_calibration(raw, params), atol=1e-5)
    assert np.max(np.abs(p - raw)) > 0.01  # the calibration changes the probabilities


def test_multilabel_decisions_use_each_findings_own_threshold():
    """The model card carries one operating point per finding (as torchxrayvision's op_threshs); predict applies
    each to its own finding."""
    from cxr_keras.predict import _decision

    card = {"threshold": [0.2, 0.7, 0.5], "artifacts": {}}
    cuts = artifact_threshold(card, "model_fp32.tflite")
    row = _decision(np.array([0.3, 0.6, 0.5]), ["Effusion", "Mass", "Nodule"], "multilabel", cuts, card)
    assert row["decision"] == "Effusion|Nodule"  # 0.3 >= 0.2, 0.6 < 0.7, 0.5 >= 0.5
    assert _decision(np.array([0.3, 0.6, 0.5]), ["A", "B", "C"], "multilabel", 0.5, {})["decision"] == "B|C"


@pytest.mark.parametrize("option", ["--eval-data", "--calibration-data"])
def test_a_missing_data_folder_is_refused_before_anything_is_written(exported, tmp_path, capsys, option):
    _, run_dir, _ = exported
    out = str(tmp_path / "exp")
    assert _export(run_dir, out, ["tflite-int8"], "--calibration-data", str(tmp_path), option,
                   str(tmp_path / "nowhere")) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "does not exist" in err and not os.path.exists(out)
