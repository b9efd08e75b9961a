"""`cxr train` and the experiment modules: options, printed configs, refusals, and a real tiny run."""

import importlib
import json
import os

import pytest
from helpers import write_blob_dataset

from cxr_keras.cli import main


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blob_dataset(str(tmp_path_factory.mktemp("cli") / "data"), n_per_class=20, size=32)


def printed_config(capsys, argv):
    assert main(["train", *argv, "--print-config"]) == 0
    return json.loads(capsys.readouterr().out)


def test_options_override_the_default_config(blobs, capsys):
    config = printed_config(capsys, ["--data-dir", blobs, "--backbone", "mobilenetv2", "--epochs", "1", "2",
                                     "--learning-rates", "0.01", "0.001", "--unfreeze", "top:5", "--image-size",
                                     "64", "--cache", "none", "--split-ratios", "0.6", "0.2", "0.2"])
    assert config["model"]["backbone"] == "mobilenetv2" and config["data"]["image_size"] == 64
    assert config["data"]["cache"] is None and config["data"]["split_ratios"] == [0.6, 0.2, 0.2]
    assert [(s["epochs"], s["learning_rate"], s["trainable"]) for s in config["train"]["stages"]] == [
        (1, 0.01, "head"), (2, 0.001, "top:5")]


def test_train_refusals_are_one_clear_line(blobs, tmp_path, capsys):
    assert main(["train"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    assert main(["train", "--data-dir", blobs, "--epochs", "3"]) == 2
    assert "one value per stage; this experiment has 2 stage(s) (head, finetune)" in capsys.readouterr().err
    assert main(["train", "--data-dir", blobs, "--backbone", "resnet50", "--image-size", "16",
                 "--weights", "none", "--run-dir", str(tmp_path / "small")]) == 2
    assert "ResNet50 needs images of at least 32 px" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "small")  # refused before any folder was made
    assert main(["train", "--data-dir", blobs, "--classes", "NORMAL", "COVID", "--run-dir", str(tmp_path / "c")]) == 2
    assert "PNEUMONIA" in capsys.readouterr().err


def test_train_runs_and_never_overwrites(blobs, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    argv = ["train", "--data-dir", blobs, "--backbone", "baseline", "--weights", "none", "--image-size", "32",
            "--epochs", "1", "1", "--run-dir", run_dir, "--quiet"]
    assert main(argv) == 0
    assert os.path.exists(os.path.join(run_dir, "best.keras"))
    again = printed_config(capsys, ["--config", os.path.join(run_dir, "config.json")])
    assert again["model"]["backbone"] == "baseline" and again["train"]["stages"][0]["epochs"] == 1
    assert main(argv) == 2
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["efficientnet_finetune", "kermany_scratch", "densenet121_multilabel",
                                  "compare_backbones"])
def test_experiments_print_their_config(name, blobs, capsys):
    module = importlib.import_module(f"experiments.{name}")
    argv = ["--data-dir", blobs, "--print-config"]
    module.main(argv) if name != "compare_backbones" else module.parse_args(name, module.__doc__, argv, {})
    if name != "compare_backbones":
        config = json.loads(capsys.readouterr().out)
        assert config["name"] == name and config["data"]["data_dir"] == blobs


def test_main_experiment_runs_on_given_data(blobs, tmp_path, capsys, monkeypatch):
    from experiments.efficientnet_finetune import main as finetune

    monkeypatch.chdir(tmp_path)  # the export lands in ./saved_models

    run_dir = finetune(["--data-dir", blobs, "--image-size", "32", "--batch-size", "8", "--epochs", "1", "1",
                        "--weights", "none", "--run-dir", str(tmp_path / "main"), "--quiet"])
    printed = capsys.readouterr().out
    assert "Everything of this run is in" in printed and "test: " in printed
    assert json.load(open(os.path.join(run_dir, "state.json")))["complete"]
    assert os.path.exists(os.path.join(run_dir, "gradcam", "contact_sheet.png"))
    exported = os.path.join(tmp_path, "saved_models", "main")
    assert {"model_card.json", "model_fp32.tflite", "model_int8.tflite", "README.md"} <= set(os.listdir(exported))
