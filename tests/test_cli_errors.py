"""Every expected failure of the command line is one line naming the file or option, exit code 2; --out has one
policy (a new or empty folder, a new file, or --overwrite); unreadable files are reported, not dropped silently."""

import csv
import json
import os

import pytest
from helpers import write_blob_dataset

from cxr_keras.cli import main
from cxr_keras.models.factory import build_model
from cxr_keras.models.saving import save_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = write_blob_dataset(str(root / "data"), n_per_class=6, size=32)
    (root / "data" / "NORMAL" / "patient0999_0.png").write_bytes(b"")  # an empty PNG
    model = str(root / "model.keras")
    save_model(build_model("baseline", "binary", ["NORMAL", "PNEUMONIA"], 32), model,
               {"task": "binary", "classes": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA"})
    return root, data, model


@pytest.mark.parametrize("command", [["evaluate", "--data-dir", "{data}"], ["gradcam", "--images", "{data}"],
                                     ["export", "--out", "{root}/x"], ["predict", "--images", "{data}"]])
def test_a_missing_model_is_one_line(setup, command, capsys, tmp_path):
    root, data, _ = setup
    argv = [a.format(data=data, root=tmp_path) for a in command] + ["--model", "nope.keras"]
    if command[0] in ("evaluate", "gradcam", "predict"):
        argv += ["--out", str(tmp_path / ("p.csv" if command[0] == "predict" else "o"))]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope.keras" in err and "does not exist" in err and "\n" not in err


@pytest.mark.parametrize("command,out_kind", [("data-report", "file"), ("evaluate", "nonempty"),
                                              ("gradcam", "nonempty"), ("predict", "folder")])
def test_out_is_refused_in_the_way_and_kept_untouched(setup, tmp_path, capsys, command, out_kind):
    root, data, model = setup
    out = tmp_path / "out"
    if out_kind == "file":
        out.write_text("mine")
    else:
        out.mkdir()
        if out_kind == "nonempty":
            (out / "mine.txt").write_text("mine")
    argv = {"data-report": ["data-report", data], "evaluate": ["evaluate", "--model", model, "--data-dir", data],
            "gradcam": ["gradcam", "--model", model, "--images", data],
            "predict": ["predict", "--model", model, "--images", data]}[command]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err and err.count("\n") == 1
    assert (out.read_text() if out_kind == "file" else sorted(os.listdir(out))) == (
        "mine" if out_kind == "file" else (["mine.txt"] if out_kind == "nonempty" else []))
    if out_kind == "nonempty":
        assert main([*argv, "--out", str(out), "--overwrite"]) == 0
        assert (out / "mine.txt").read_text() == "mine"  # --overwrite replaces our files, deletes nothing


def test_gradcam_verifies_images_and_reports_the_bad_one(setup, tmp_path, capsys):
    root, data, model = setup
    out = tmp_path / "cams"
    assert main(["gradcam", "--model", model, "--images", data, "--out", str(out)]) == 0
    assert "1 unreadable files left out" in capsys.readouterr().out
    summary = json.load(open(out / "gradcam.json"))
    assert summary["n_images"] == 12 and summary["dropped"] == 1
    rows = list(csv.DictReader(open(out / "dropped.csv")))
    assert [os.path.basename(r["path"]) for r in rows] == ["patient0999_0.png"] and rows[0]["reason"]


def test_evaluate_reports_what_it_could_not_read(setup, tmp_path, capsys):
    root, data, model = setup
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", model, "--data-dir", data, "--out", str(out), "--resamples", "20"]) == 0
    assert f"1 unreadable files left out: see {out}/dropped.csv" in capsys.readouterr().out
    assert json.load(open(out / "metrics.json"))["dropped"] == {"count": 1, "file": "dropped.csv"}
    assert "1 files could not be read and were left out" in (out / "report.md").read_text()
    assert [os.path.basename(r["path"]) for r in csv.DictReader(open(out / "dropped.csv"))] == ["patient0999_0.png"]


def test_help_prints_no_tensorflow_start_up_noise():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "cxr_keras.cli", "evaluate", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--overwrite" in result.stdout
    assert result.stderr == ""


def test_from_scratch_train_takes_one_epoch_number(capsys, tmp_path):
    assert main(["train", "--data-dir", str(tmp_path), "--weights", "none", "--epochs", "1", "--print-config"]) == 0
    stages = json.loads(capsys.readouterr().out)["train"]["stages"]
    assert [(s["trainable"], s["epochs"]) for s in stages] == [("all", 1)]
    assert main(["train", "--data-dir", str(tmp_path), "--epochs", "1", "--print-config"]) == 2  # two stages here
    assert "--epochs takes one value per stage" in capsys.readouterr().err


@pytest.mark.parametrize("options,message", [(["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
                                             (["--learning-rates", "-1", "1e-4"], "learning rates must be above 0")])
def test_values_no_run_can_use_are_refused_before_anything_is_made(setup, tmp_path, capsys, options, message):
    _, data, _ = setup
    run_dir = tmp_path / "run"
    assert main(["train", "--data-dir", data, "--run-dir", str(run_dir), *options]) == 2
    assert message in capsys.readouterr().err and not run_dir.exists()


def test_predict_refuses_missing_or_empty_image_folders(setup, tmp_path, capsys):
    _, _, model = setup
    (tmp_path / "empty").mkdir()
    for images, message in ((str(tmp_path / "nowhere"), "does not exist"), (str(tmp_path / "empty"), "no image files")):
        assert main(["predict", "--model", model, "--images", images, "--out", str(tmp_path / "p.csv")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_a_file_that_is_no_model_and_broken_metadata_are_named(setup, tmp_path, capsys):
    _, data, model = setup
    garbage = tmp_path / "bad.keras"
    garbage.write_bytes(b"not a zip")
    assert main(["evaluate", "--model", str(garbage), "--data-dir", data, "--out", str(tmp_path / "e")]) == 2
    assert f"not a readable Keras model: {garbage} (truncated or corrupt)" in capsys.readouterr().err
    import shutil

    shutil.copy(model, tmp_path / "m.keras")
    (tmp_path / "m.json").write_text("{ broken")
    assert main(["predict", "--model", str(tmp_path / "m.keras"), "--images", data, "--out",
                 str(tmp_path / "p.csv")]) == 2
    assert "m.json is not valid JSON" in capsys.readouterr().err


def test_ctrl_c_says_how_to_resume(setup, tmp_path, capsys):
    import keras

    from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
    from cxr_keras.train import run_experiment

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    _, data, _ = setup
    config = ExperimentConfig(name="c", data=DataConfig(data_dir=data, image_size=32, batch_size=4, augment="none",
                                                        split_ratios=(0.5, 0.5, 0.0)),
                              model=ModelConfig(backbone="baseline", weights="none"),
                              train=TrainConfig(stages=[StageConfig(epochs=1, trainable="all")], tensorboard=False))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, run_dir=str(tmp_path / "run"), quiet=True, callbacks=[CtrlC()])
    assert f"continue with `cxr train --resume {tmp_path / 'run'}`" in capsys.readouterr().err


def test_data_report_takes_the_folder_either_way(setup, tmp_path, capsys):
    _, data, _ = setup
    assert main(["data-report", "--data-dir", data, "--out", str(tmp_path / "a")]) == 0
    assert main(["data-report", data, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "report.txt").read_text() == (tmp_path / "b" / "report.txt").read_text()
    assert main(["data-report", "--out", str(tmp_path / "c")]) == 2
    assert "cxr data-report DIR (or --data-dir DIR)" in capsys.readouterr().err


@pytest.mark.parametrize("extra, option", [(["--model", "other.keras"], "--model"), (["--data-dir", "x"], "--data-dir"),
                                           (["--threshold", "0.3"], "--threshold"), (["--max-pixels", "10"],
                                                                                     "--max-pixels")])
def test_evaluate_run_refuses_model_mode_options(tmp_path, capsys, extra, option):
    """--run takes its model and data from the run: an option that would be ignored is refused before reading."""
    assert main(["evaluate", "--run", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {option} does nothing with --run"), err
    assert os.listdir(tmp_path) == []
