"""`cxr train` and the experiment modules: options, printed configs, refusals, and a real tiny run."""

import csv
import importlib
import json
import os

import numpy as np
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


BASE = ["--backbone", "baseline", "--weights", "none", "--image-size", "32", "--quiet"]


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs: every stage needs at least 1 epoch"),
    (["--dropout", "2"], "--dropout must be in [0, 1)"),
    (["--label-smoothing", "5"], "--label-smoothing must be in [0, 1)"),
    (["--mixup", "-0.2"], "--mixup must be 0 (off) or an alpha in [0.05, 10]"),
    (["--mixup", "0.001"], "--mixup must be 0 (off) or an alpha in [0.05, 10]"),
    (["--clahe", "-1"], "--clahe must be a clip limit in [0, 1000]"),
    (["--clahe", "2", "--image-size", "4"], "--image-size must be at least 8"),
    (["--max-pixels", "0"], "--max-pixels must be at least 1"),
    (["--time-budget", "-1"], "--time-budget must be above 0"),
    (["--steps-per-epoch", "0"], "--steps-per-epoch must be at least 1"),
    (["--early-stopping", "-1"], "--early-stopping must be at least 0"),
    (["--init-from", "nowhere.keras"], "--init-from nowhere.keras: no such model file"),
    (["--patient-pattern", "("], "--patient-pattern '(' is not a regular expression"),
    (["--patient-pattern", "^patient"], "needs a group"),
    (["--patient-pattern", "^(nomatch)_"], "matches none of the 40 file names"),
    (["--cache", "bogus"], "--cache 'bogus' is not auto, memory, disk or none"),
    (["--name", "../escaped"], "must be a plain folder name"),
    (["--cache", "no/such/folder/prefix"], "the folder no/such/folder does not exist"),
])
def test_options_no_run_can_use_are_refused_before_a_folder_is_made(blobs, tmp_path, capsys, monkeypatch, argv,
                                                                     message):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data-dir", blobs, *BASE, "--runs-dir", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists() and os.listdir(tmp_path) == []


def test_unfreeze_grammar_is_checked_before_a_folder_is_made(blobs, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data-dir", blobs, "--backbone", "mobilenetv2", "--weights", "none", "--image-size", "32",
                 "--epochs", "1", "1", "--unfreeze", "bogus", "--run-dir", str(run)]) == 2
    assert "--unfreeze 'bogus': give head, all, top:N" in capsys.readouterr().err and not run.exists()


def test_one_epochs_value_suffices_for_a_backbone_without_pretrained_weights(blobs, capsys):
    config = printed_config(capsys, ["--data-dir", blobs, "--backbone", "baseline", "--epochs", "2"])
    assert [(s["epochs"], s["trainable"]) for s in config["train"]["stages"]] == [(2, "all")]
    config = printed_config(capsys, ["--data-dir", blobs, "--backbone", "baseline", "--learning-rates", "0.01"])
    assert [(s["learning_rate"], s["trainable"]) for s in config["train"]["stages"]] == [(0.01, "all")]
    assert main(["train", "--data-dir", blobs, "--learning-rates", "0", "0", "--print-config"]) == 2
    assert "learning rates must be above 0" in capsys.readouterr().err  # a printed config is one that runs


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

    state = os.path.join(run_dir, "state.json")
    with open(state) as f:
        saved = json.load(f)
    with open(state, "w") as f:  # as if killed before its last epoch
        json.dump({**saved, "complete": False}, f)
    before = os.stat(os.path.join(run_dir, "best.keras")).st_mtime_ns
    resumed = printed_config(capsys, ["--resume", run_dir])  # prints the run's own config; trains nothing
    assert resumed["model"]["backbone"] == "baseline" and resumed["data"]["image_size"] == 32
    assert os.stat(os.path.join(run_dir, "best.keras")).st_mtime_ns == before
    for extra, message in ((["--epochs", "5"], "the run was made with another config"),
                           (["--run-dir", "elsewhere"], "--run-dir with --resume")):
        assert main(["train", "--resume", run_dir, *extra]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", ["efficientnet_finetune", "kermany_scratch", "densenet121_multilabel",
                                  "compare_backbones"])
def test_experiments_print_their_config(name, blobs, capsys):
    module = importlib.import_module(f"experiments.{name}")
    assert not module.main(["--data-dir", blobs, "--print-config", "--image-size", "40"])  # prints, trains nothing
    config = json.loads(capsys.readouterr().out)
    assert config["name"] == {"compare_backbones": "compare"}.get(name, name)
    assert config["data"]["data_dir"] == blobs and config["data"]["image_size"] == 40


def test_compare_backbones_writes_one_row_per_backbone(blobs, tmp_path):
    from sklearn.metrics import roc_auc_score

    from cxr_keras.data.decode import decode_all
    from cxr_keras.models.saving import load_model
    from experiments.compare_backbones import main as compare

    out = str(tmp_path / "table")
    rows = compare(["--data-dir", blobs, "--backbones", "baseline", "mobilenetv2", "--image-size", "32",
                    "--epochs", "1", "1", "--weights", "none", "--runs-dir", str(tmp_path / "runs"), "--out", out,
                    "--quiet"])
    assert [r["backbone"] for r in rows] == ["baseline", "mobilenetv2"]
    with open(os.path.join(out, "comparison.csv")) as f:
        written = list(csv.DictReader(f))
    assert [w["backbone"] for w in written] == ["baseline", "mobilenetv2"]
    for row in rows:  # from scratch the two stages are one of 2 epochs
        assert row["epochs"] == 2 and row["weights"] == "none" and row["params"] > 1000
        val = [r for r in csv.DictReader(open(os.path.join(row["run_dir"], "splits.csv"))) if r["split"] == "val"]
        model, _ = load_model(os.path.join(row["run_dir"], "best.keras"), compile=False)
        p = np.asarray(model(decode_all([r["path"] for r in val], (32, 32)).astype("float32")))[:, 0]
        assert row["val_auc"] == pytest.approx(roc_auc_score([r["path"].split(os.sep)[-2] == "PNEUMONIA"
                                                              for r in val], p), abs=1e-6)
    assert "| baseline | none | 2 |" in open(os.path.join(out, "comparison.md")).read()


def test_main_experiment_runs_on_given_data(blobs, tmp_path, capsys, monkeypatch):
    from experiments.efficientnet_finetune import main as finetune

    monkeypatch.chdir(tmp_path)  # the export lands in ./saved_models

    run_dir = finetune(["--data-dir", blobs, "--image-size", "32", "--batch-size", "8", "--epochs", "1", "1",
                        "--weights", "none", "--backbone", "baseline", "--run-dir", str(tmp_path / "main"), "--quiet"])
    printed = capsys.readouterr().out
    assert "Everything of this run is in" in printed and "test: " in printed
    assert json.load(open(os.path.join(run_dir, "state.json")))["complete"]
    assert os.path.exists(os.path.join(run_dir, "gradcam", "contact_sheet.png"))
    exported = os.path.join(tmp_path, "saved_models", "main")
    assert {"model_card.json", "model_fp32.tflite", "model_int8.tflite", "README.md"} <= set(os.listdir(exported))


@pytest.mark.parametrize("section, key, value, message", [
    ("model", "clahe", "2", 'config.model.clahe must be a number, got "2"'),
    ("train", "mixup", None, "config.train.mixup must be a number, got null"),
    ("model", "dropout", True, "config.model.dropout must be a number, got true"),
    ("data", "image_size", 12.5, "config.data.image_size must be a whole number, got 12.5"),
    ("train", "stages", None, "config.train.stages must be a list, got null"),
    ("data", "split_ratios", ["0.8", "0.1", "0.1"], 'config.data.split_ratios[0] must be a number, got "0.8"'),
    ("data", "classes", ["NORMAL", 2], "config.data.classes[1] must be a string, got 2"),
    ("train", "stages", [], "train.stages is empty"),
    ("train", "recalibrate_bn", "2", "train.recalibrate_bn must be auto, true or false"),
])
def test_a_config_file_value_of_the_wrong_type_is_one_line(blobs, tmp_path, capsys, section, key, value, message):
    from cxr_keras.config import ExperimentConfig

    values = ExperimentConfig().to_dict()
    values[section][key] = value
    (tmp_path / "c.json").write_text(json.dumps(values))
    assert main(["train", "--data-dir", blobs, "--config", str(tmp_path / "c.json"), "--run-dir",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "run").exists()
