"""Commands as a hostile reading drives them (issue 26): one score per film whatever the path, one line for a full
or read-only disk, a data summary on every run, outputs kept out of the data, truncated models named."""

import csv
import errno
import os

import numpy as np
import pytest
from helpers import train_baseline, write_blob_dataset, write_image
from PIL import Image

from cxr_keras.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    data = write_blob_dataset(str(root / "data"), n_per_class=12, size=32, seed=5)
    run_dir = train_baseline(data, str(root / "runs"), epochs=1)
    films = root / "films"  # another size than the model's 32 px: the resize decides the score
    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):
        for k in range(3):
            write_image(str(films / cls / f"f{k}.png"), rng.integers(0, 256, (71, 53)).astype(np.uint8))
    return root, data, run_dir, str(films)


def _train_argv(data, run_dir, *extra):
    return ["train", "--data-dir", data, "--backbone", "baseline", "--weights", "none", "--image-size", "32",
            "--epochs", "1", "--batch-size", "8", "--augment", "none", "--split-ratios", "0.6", "0.2", "0.2",
            "--run-dir", run_dir, *extra]


# row 7
def _sensitive_model(path):
    """A binary model whose score moves with every pixel (a trained 1-epoch baseline barely does): a fixed random
    convolution, amplified, so one resize against another shows in the scores."""
    import keras

    from cxr_keras.models.saving import save_model

    rng = np.random.default_rng(0)
    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(4, 3, use_bias=False, trainable=False, name="conv")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, x)
    model.get_layer("conv").set_weights([rng.normal(0, 1, (3, 3, 1, 4))])
    dense = model.layers[-1]
    dense.set_weights([rng.normal(0, 0.05, dense.get_weights()[0].shape), np.zeros(1)])
    save_model(model, path, {"task": "binary", "classes": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA",
                             "input": {"shape": [32, 32, 1], "resize": "stretch"}, "threshold": 0.5})
    return path


def test_predict_and_evaluate_give_one_film_one_score(trained, tmp_path):
    _, _, _, films = trained
    model = _sensitive_model(str(tmp_path / "m.keras"))
    assert main(["evaluate", "--model", model, "--data-dir", films, "--out", str(tmp_path / "e"),
                 "--threshold", "0.5"]) == 0
    assert main(["predict", "--model", model, "--images", films, "--out", str(tmp_path / "p.csv")]) == 0
    evaluated = {r["path"]: float(r["p_PNEUMONIA"]) for r in csv.DictReader(open(tmp_path / "e" / "scores.csv"))}
    predicted = {r["path"]: float(r["p_PNEUMONIA"]) for r in csv.DictReader(open(tmp_path / "p.csv"))}
    assert len(evaluated) == 6 and set(predicted) == set(evaluated)
    assert np.ptp(list(evaluated.values())) > 0.05  # scores that differ from film to film
    for path, score in evaluated.items():
        assert predicted[path] == pytest.approx(score, abs=1e-4)


# row 5
def test_every_run_prints_its_data_summary(trained, tmp_path, capsys):
    root, _, _, _ = trained
    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=8, size=32, seed=9)
    (tmp_path / "data" / "NORMAL" / "patient0999_0.png").write_bytes(b"broken")
    assert main(_train_argv(data, str(tmp_path / "run"))) == 0
    out = capsys.readouterr().out
    assert f"Data {data}: 16 images, task binary" in out and "layout kermany" in out
    assert "classes: NORMAL 8, PNEUMONIA 8" in out
    assert "train: " in out and "val: " in out and "test: " in out
    assert "dropped: 1 files" in out and "patient0999_0.png: " in out


# row 6
def test_only_a_folder_named_masks_is_skipped(trained, tmp_path, capsys):
    _, _, run_dir, _ = trained
    scans = tmp_path / "masks_2024_scans"
    for name in ("a.png", "inner/masks_extra/b.png", "inner/masks/m.png", "elsewhere/c.png"):
        write_image(str(tmp_path / name if name.startswith("elsewhere") else scans / name),
                    np.full((32, 32), 40, np.uint8))
    os.symlink(tmp_path / "elsewhere", scans / "linked")  # a linked folder is read
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", os.path.join(run_dir, "best.keras"), "--images", str(scans),
                 "--out", str(out)]) == 0
    names = sorted(os.path.relpath(r["path"], scans) for r in csv.DictReader(open(out)))
    assert names == ["a.png", "inner/masks_extra/b.png", "linked/c.png"]
    assert "note: skipped 1 folders (masks/)" in capsys.readouterr().err


# row 8
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_out_is_one_line_before_any_work(trained, tmp_path, capsys, monkeypatch, code):
    _, data, run_dir, films = trained
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    for argv in (["predict", "--model", os.path.join(run_dir, "best.keras"), "--images", films, "--out",
                  str(tmp_path / "p.csv")],
                 ["evaluate", "--model", os.path.join(run_dir, "best.keras"), "--data-dir", films, "--out",
                  str(tmp_path / "e"), "--threshold", "0.5"],
                 ["data-report", data, "--out", str(tmp_path / "r")],
                 ["gradcam", "--model", os.path.join(run_dir, "best.keras"), "--images", films, "--out",
                  str(tmp_path / "g")],
                 ["export", "--model", os.path.join(run_dir, "best.keras"), "--out", str(tmp_path / "x")],
                 _train_argv(data, str(tmp_path / "run"))):
        assert main(argv) == 2, argv[0]
        err = capsys.readouterr().err
        word = "no space left" if code == errno.ENOSPC else "read-only"
        assert err.startswith("error: ") and err.count("\n") == 1 and word in err, (argv[0], err)
        assert not os.listdir(tmp_path) or set(os.listdir(tmp_path)) <= {"e", "g", "x", "r", "run"} and not any(
            os.listdir(tmp_path / d) for d in os.listdir(tmp_path))


def test_a_full_disk_at_the_first_checkpoint_leaves_a_folder_that_starts_again(trained, tmp_path, capsys,
                                                                               monkeypatch):
    from cxr_keras import callbacks

    _, data, _, _ = trained
    real_save = callbacks.save_model

    def full(model, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(callbacks, "save_model", full)
    run = str(tmp_path / "run")
    assert main(_train_argv(data, run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot write ") and "no space left on the device" in err[-1]
    assert main(["train", "--resume", run]) == 2
    assert f"start it again with --config {run}/config.json --run-dir {run}" in capsys.readouterr().err
    monkeypatch.setattr(callbacks, "save_model", real_save)
    other = _train_argv(data, run)
    other[other.index("--image-size") + 1] = "40"
    assert main(other) == 0  # the same folder, started again; with other options, said
    assert "made with other options (differs in ['data.image_size'])" in capsys.readouterr().err
    with open(os.path.join(run, "history.csv")) as f:
        assert len(f.read().strip().splitlines()) == 2  # the header and one epoch: the failed one is gone


# row 10
def test_an_image_size_no_memory_holds_is_refused_before_the_run_folder(trained, tmp_path, capsys):
    _, data, _, _ = trained
    run = tmp_path / "run"
    argv = _train_argv(data, str(run))
    argv[argv.index("--image-size") + 1] = "10000"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--image-size 10000 with --batch-size 8" in err and "GB of memory available" in err
    assert not run.exists()


# row 15
@pytest.mark.parametrize("command", ["gradcam", "predict", "evaluate", "data-report"])
def test_an_out_inside_the_data_folder_is_refused(trained, tmp_path, capsys, command):
    _, data, run_dir, _ = trained
    model = os.path.join(run_dir, "best.keras")
    inside = os.path.join(data, "gradcam" if command != "predict" else "p.csv")
    argv = {"gradcam": ["gradcam", "--model", model, "--images", data],
            "predict": ["predict", "--model", model, "--images", data],
            "evaluate": ["evaluate", "--model", model, "--data-dir", data, "--threshold", "0.5"],
            "data-report": ["data-report", data]}[command]
    assert main([*argv, "--out", inside]) == 2
    assert "is inside the data folder" in capsys.readouterr().err
    assert not os.path.exists(inside)


def test_a_run_folder_inside_the_data_folder_is_refused(trained, tmp_path, capsys):
    _, data, _, _ = trained
    assert main(_train_argv(data, os.path.join(data, "runs", "r"))) == 2
    assert "the run folder" in capsys.readouterr().err and not os.path.exists(os.path.join(data, "runs"))


# row 16
def test_a_truncated_keras_file_is_named_and_init_from_leaves_no_folder(trained, tmp_path, capsys):
    _, data, run_dir, films = trained
    with open(os.path.join(run_dir, "best.keras"), "rb") as f:
        content = f.read()
    cut = tmp_path / "cut.keras"
    cut.write_bytes(content[: len(content) // 2])
    assert main(["predict", "--model", str(cut), "--images", films, "--out", str(tmp_path / "p.csv")]) == 2
    assert f"not a readable Keras model: {cut} (truncated or corrupt)" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(_train_argv(data, str(run), "--init-from", str(cut))) == 2
    assert "not a readable Keras model" in capsys.readouterr().err and not run.exists()


# row 17
def test_unknown_data_classes_are_pointed_to_class_map(trained, tmp_path, capsys):
    _, _, run_dir, _ = trained
    other = tmp_path / "other"
    for k, cls in enumerate(("Covid", "Healthy")):
        for i in range(2):
            write_image(str(other / cls / f"{i}.png"), np.full((32, 32), 30 * k + i, np.uint8))
    assert main(["evaluate", "--model", os.path.join(run_dir, "best.keras"), "--data-dir", str(other), "--out",
                 str(tmp_path / "e"), "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--class-map Covid=NORMAL" in err and "--class-names" not in err


def test_exif_rotated_films_score_as_their_upright_selves(trained, tmp_path):
    _, _, run_dir, _ = trained
    upright = np.random.default_rng(3).integers(0, 256, (32, 48)).astype(np.uint8)
    Image.fromarray(upright).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90 degrees counter-clockwise to view
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, -1))).save(tmp_path / "side.png", exif=exif)
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", os.path.join(run_dir, "best.keras"), "--images", str(tmp_path / "upright.png"),
                 str(tmp_path / "side.png"), "--out", str(out)]) == 0
    scores = [float(r["p_PNEUMONIA"]) for r in csv.DictReader(open(out))]
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)


def test_refusals_that_need_no_model_do_not_start_tensorflow(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from cxr_keras.cli import main; "
            f"rc = main(['data-report', {str(tmp_path / 'none')!r}, '--out', {str(tmp_path / 'r')!r}]); "
            "print(rc, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert done.stderr.strip().startswith("error: data directory") and done.stderr.count("\n") == 1


def test_ctrl_c_during_export_keeps_the_previous_export(trained, tmp_path, capsys, monkeypatch):
    from cxr_keras import export

    _, _, run_dir, _ = trained
    out = str(tmp_path / "x")
    model = os.path.join(run_dir, "best.keras")
    assert main(["export", "--model", model, "--out", out, "--formats", "tflite-fp32"]) == 0
    before = {name: os.path.getmtime(os.path.join(out, name)) for name in os.listdir(out)}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "_write_artifacts", interrupted)
    assert main(["export", "--model", model, "--out", out, "--formats", "tflite-fp32", "--overwrite"]) == 130
    assert f"Export interrupted: {out} is as it was (previous export kept)" in capsys.readouterr().err
    assert {name: os.path.getmtime(os.path.join(out, name)) for name in os.listdir(out)} == before
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


# row 11, as a user meets it
def test_training_with_a_class_of_one_image_is_refused_before_the_run_folder(tmp_path, capsys):
    data = tmp_path / "data"
    for k in range(10):
        write_image(str(data / "PNEUMONIA" / f"patient{k:02d}_0.png"), np.full((32, 32), 10 * k, np.uint8))
    write_image(str(data / "NORMAL" / "patient99_0.png"), np.full((32, 32), 250, np.uint8))
    run = tmp_path / "run"
    assert main(_train_argv(str(data), str(run))) == 2
    err = capsys.readouterr().err
    assert "split has no NORMAL image (the data has 1 in all" in err and not run.exists()


def test_evaluating_a_model_on_its_own_training_films_says_so(trained, tmp_path, capsys):
    _, data, run_dir, _ = trained
    out = tmp_path / "e"
    assert main(["evaluate", "--model", os.path.join(run_dir, "best.keras"), "--data-dir", data, "--out", str(out),
                 "--threshold", "0.5"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: " in err and "in this model's training or validation split" in err
    import json

    assert "not on unseen films" in json.load(open(out / "metrics.json"))["caveat"]
