"""Training runs: the run folder, stages, resume, determinism, refusals, and the from-scratch BatchNorm trap."""

import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest
from helpers import write_blob_dataset, write_image
from sklearn.metrics import roc_auc_score

from cxr_keras.callbacks import RunCheckpoints
from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from cxr_keras.data.pipeline import make_dataset
from cxr_keras.data.sources import load_dataset
from cxr_keras.models.saving import load_model
from cxr_keras.models.weights import WeightsError
from cxr_keras.run_folder import run_table
from cxr_keras.train import RunError, run_experiment


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blob_dataset(str(tmp_path_factory.mktemp("blobs") / "data"), n_per_class=40, size=48)


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory):
    """A 'pretrained' MobileNetV2 weights file, so that the stages are the pretrained ones."""
    path = str(tmp_path_factory.mktemp("weights") / "mobilenetv2.weights.h5")
    keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(path)
    return path


def config(data_dir, runs_dir, backbone="baseline", weights="none", stages=None, size=32, **train) -> ExperimentConfig:
    return ExperimentConfig(
        name="t", runs_dir=str(runs_dir),
        data=DataConfig(data_dir=data_dir, image_size=size, batch_size=16, split_ratios=(0.8, 0.1, 0.1),
                        augment="light"),
        model=ModelConfig(backbone=backbone, weights=weights),
        train=TrainConfig(stages=stages or [StageConfig(epochs=2, trainable="all")], tensorboard=False, **train),
    )


def two_stages():
    return [StageConfig(epochs=2, trainable="head", learning_rate=1e-3, name="head"),
            StageConfig(epochs=2, trainable="top:20", learning_rate=1e-4, name="finetune")]


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_a_pretrained_two_stage_run_writes_its_folder(blobs, mobilenet_weights, tmp_path, monkeypatch):
    import cxr_keras.models.weights as weights

    loads = []
    real = weights._file_application
    monkeypatch.setattr(weights, "_file_application", lambda *a: loads.append(a) or real(*a))
    run_dir = run_experiment(config(blobs, tmp_path, "mobilenetv2", mobilenet_weights, two_stages()), quiet=True)
    assert len(loads) == 1  # the pretrained application is built once per run, not once to check and once to use
    for name in ("config.json", "splits.csv", "history.csv", "best.keras", "best.json", "last.keras",
                 "state.json", "curves.png"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    saved = json.load(open(os.path.join(run_dir, "config.json")))
    assert saved["versions"]["keras"] == keras.__version__ and saved["model"]["weights"] == mobilenet_weights
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [r["stage"] for r in rows] == ["1", "1", "2", "2"]
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])  # recompiled
    best = json.load(open(os.path.join(run_dir, "best.json")))
    assert best["classes"] == ["NORMAL", "PNEUMONIA"] and best["input"]["shape"] == [32, 32, 1]
    assert best["val_auc"] == pytest.approx(max(float(r["val_auc"]) for r in rows))

    # BatchNorm stayed frozen through both stages: its statistics are still those of the weights file
    model, _ = load_model(os.path.join(run_dir, "last.keras"))
    source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    source.load_weights(mobilenet_weights)
    np.testing.assert_array_equal(model.get_layer("Conv_1_bn").moving_mean, source.get_layer("Conv_1_bn").moving_mean)
    assert not np.array_equal(model.get_layer("Conv_1").kernel, source.get_layer("Conv_1").kernel)  # it trained


def test_a_weights_file_that_does_not_fit_is_refused_before_the_run_folder_is_made(blobs, tmp_path):
    other = str(tmp_path / "resnet50.weights.h5")
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(other)
    run_dir = tmp_path / "run"
    with pytest.raises(WeightsError, match=r"resnet50.weights.h5 does not fit MobileNetV2 without its top"):
        run_experiment(config(blobs, tmp_path, "mobilenetv2", other, two_stages()), run_dir=str(run_dir), quiet=True)
    assert not run_dir.exists()


def test_resume_continues_at_the_right_stage_and_epoch(blobs, mobilenet_weights, tmp_path, monkeypatch):
    cfg = config(blobs, tmp_path, "mobilenetv2", mobilenet_weights, two_stages())
    original = RunCheckpoints.on_epoch_end

    def killed_after_third_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunCheckpoints, "on_epoch_end", killed_after_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, run_dir=str(tmp_path / "run"), quiet=True)
    monkeypatch.setattr(RunCheckpoints, "on_epoch_end", original)
    run_dir = str(tmp_path / "run")
    assert json.load(open(os.path.join(run_dir, "state.json")))["epoch"] == 3

    other = config(blobs, tmp_path, "mobilenetv2", mobilenet_weights, two_stages())
    other.data.image_size = 48
    with pytest.raises(RunError, match=r"another config \(differs in \['data.image_size'\]\)"):
        run_experiment(other, resume=run_dir, quiet=True)

    run_experiment(None, resume=run_dir, quiet=True)
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [r["stage"] for r in rows] == ["1", "1", "2", "2"]
    assert float(rows[3]["learning_rate"]) == pytest.approx(1e-4)
    assert json.load(open(os.path.join(run_dir, "state.json")))["complete"] is True
    with pytest.raises(RunError, match="already complete"):
        run_experiment(None, resume=run_dir, quiet=True)
    with pytest.raises(RunError, match="exists and is not empty; a previous run is never overwritten"):
        run_experiment(cfg, run_dir=run_dir, quiet=True)


def test_same_seed_same_data_gives_the_same_metrics(blobs, tmp_path):
    first = history(run_experiment(config(blobs, tmp_path / "a"), quiet=True))
    second = history(run_experiment(config(blobs, tmp_path / "b"), quiet=True))
    assert first == second
    third = config(blobs, tmp_path / "c")
    third.train.seed = 1
    assert history(run_experiment(third, quiet=True)) != first


def test_from_scratch_inference_predictions_separate_the_classes(blobs, tmp_path):
    """The trap: MobileNetV2 as keras.applications builds it (BN momentum 0.999) fits the training data (AUC
    ~0.99 in fit) yet answers every image the same in inference mode. The toolkit's from-scratch defaults
    (momentum 0.9, BatchNorm statistics recalibrated before each validation) do not."""
    table = load_dataset(blobs)
    images = make_dataset(table.paths, table.targets(), (32, 32), 16)
    y = table.targets().ravel()

    def scratch_run(name, **model):
        cfg = config(blobs, tmp_path / name, "mobilenetv2", "none", [StageConfig(epochs=4, trainable="all")], 32)
        cfg.data.augment = "none"
        cfg.model.bn_momentum = model.get("bn_momentum")
        cfg.train.recalibrate_bn = model.get("recalibrate_bn", "auto")
        run_dir = run_experiment(cfg, quiet=True)
        fitted_auc = float(history(run_dir)[-1]["auc"])
        predictions = load_model(os.path.join(run_dir, "last.keras"))[0].predict(images, verbose=0).ravel()
        return fitted_auc, roc_auc_score(y, predictions), predictions.std()

    fitted, auc, spread = scratch_run("toolkit")
    assert fitted > 0.9 and auc > 0.9 and spread > 0.2, (fitted, auc, spread)
    fitted, auc, spread = scratch_run("plain", bn_momentum=0.999, recalibrate_bn="false")
    assert fitted > 0.9 and auc < 0.75 and spread < 0.05, (fitted, auc, spread)  # the trap, reproduced


def test_init_from_starts_a_larger_input_run_from_a_smaller_ones_weights(blobs, tmp_path):
    """Progressive resizing: a 32 px run's weights start a 48 px run, which is good from its first epoch."""
    small = run_experiment(config(blobs, tmp_path / "small", stages=[StageConfig(epochs=3, trainable="all")]),
                           quiet=True)
    source = os.path.join(small, "best.keras")
    large = config(blobs, tmp_path / "large", size=48, stages=[StageConfig(epochs=1, trainable="all",
                                                                           learning_rate=1e-9)])
    large.model.init_from = source
    large.train.recalibrate_bn = "false"
    run_dir = run_experiment(large, quiet=True)
    trained, started = load_model(source)[0], load_model(os.path.join(run_dir, "last.keras"))[0]
    assert started.input_shape[1:3] == (48, 48)
    kernels = [w for w in trained.weights if "kernel" in w.path]
    for ours, theirs in zip([w for w in started.weights if "kernel" in w.path], kernels):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert float(history(run_dir)[0]["val_auc"]) > 0.9

    other = config(blobs, tmp_path / "other", backbone="mobilenetv2", size=48)
    other.model.init_from = source
    with pytest.raises(WeightsError, match=r"--init-from .*best.keras: its weights do not fit this model"):
        run_experiment(other, quiet=True)


def test_init_from_a_model_of_other_classes_reuses_all_but_the_output_layer(blobs, tmp_path):
    """In-domain pretraining: a binary run's backbone starts a 3-class run; only the output layer starts fresh."""
    source_dir = run_experiment(config(blobs, tmp_path / "binary", stages=[StageConfig(epochs=1, trainable="all")]),
                                quiet=True)
    source = os.path.join(source_dir, "best.keras")
    three = str(tmp_path / "three")
    rng = np.random.default_rng(1)
    for cls, folder in (("clear", "NORMAL"), ("spot", "PNEUMONIA")):
        os.makedirs(os.path.join(three, cls))
        for name in os.listdir(os.path.join(blobs, folder)):
            shutil.copy(os.path.join(blobs, folder, name), os.path.join(three, cls, name))
    for i in range(40):
        write_image(os.path.join(three, "dark", f"patient9{i:03d}_0.png"),
                    np.clip(rng.normal(40, 25, (48, 48)), 0, 255).astype(np.uint8))
    target = config(three, tmp_path / "multi", stages=[StageConfig(epochs=1, trainable="all", learning_rate=1e-9)])
    target.model.init_from = source
    target.train.recalibrate_bn = "false"
    run_dir = run_experiment(target, quiet=True)
    trained, started = load_model(source)[0], load_model(os.path.join(run_dir, "last.keras"))[0]
    assert started.output_shape[-1] == 3
    body = lambda model: [w for w in model.trainable_weights if not w.path.startswith("predictions/")]  # noqa: E731
    assert len(body(started)) == len(body(trained)) > 0
    for ours, theirs in zip(body(started), body(trained)):
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=ours.path)  # lr 1e-9: still the source's


def _kill_at(monkeypatch, epoch_to_kill, before_checkpoint=False):
    original = RunCheckpoints.on_epoch_end

    def killed(self, epoch, logs=None):
        if epoch == epoch_to_kill and before_checkpoint:
            raise KeyboardInterrupt  # CSVLogger has written the row; the checkpoint never comes
        original(self, epoch, logs)
        if epoch == epoch_to_kill:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunCheckpoints, "on_epoch_end", killed)
    return original


def test_resume_at_a_stage_boundary_recompiles_the_next_stage(blobs, mobilenet_weights, tmp_path, monkeypatch):
    cfg = config(blobs, tmp_path, "mobilenetv2", mobilenet_weights, two_stages())
    run_dir = str(tmp_path / "run")
    original = _kill_at(monkeypatch, 1)  # right after the last epoch of stage 1
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, run_dir=run_dir, quiet=True)
    monkeypatch.setattr(RunCheckpoints, "on_epoch_end", original)
    after_stage_1, _ = load_model(os.path.join(run_dir, "last.keras"))
    run_experiment(None, resume=run_dir, quiet=True)
    rows = history(run_dir)
    assert [r["stage"] for r in rows] == ["1", "1", "2", "2"]
    assert [float(r["learning_rate"]) for r in rows[2:]] == pytest.approx([1e-4, 1e-4])  # stage 2's own rate
    final, _ = load_model(os.path.join(run_dir, "last.keras"))
    assert not np.array_equal(final.get_layer("Conv_1").kernel, after_stage_1.get_layer("Conv_1").kernel)  # top:20


def test_a_kill_between_the_history_row_and_the_checkpoint_does_not_duplicate_the_epoch(blobs, tmp_path,
                                                                                        monkeypatch):
    cfg = config(blobs, tmp_path, stages=[StageConfig(epochs=4, trainable="all")])
    run_dir = str(tmp_path / "run")
    original = _kill_at(monkeypatch, 2, before_checkpoint=True)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, run_dir=run_dir, quiet=True)
    monkeypatch.setattr(RunCheckpoints, "on_epoch_end", original)
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2]  # the row of the lost epoch is there
    open(os.path.join(run_dir, ".tmp-abc123.keras"), "wb").close()  # an interrupted save's temporary file
    run_experiment(None, resume=run_dir, quiet=True)
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2, 3]
    assert not [f for f in os.listdir(run_dir) if f.startswith(".") and f != ".lock"]


def test_a_failed_start_leaves_no_folder_and_a_stub_folder_is_reused(blobs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(Exception, match="does not exist"):
        run_experiment(config(str(tmp_path / "nowhere"), tmp_path), run_dir=str(run_dir), quiet=True)
    assert not run_dir.exists()
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")  # what an older failed start left
    (run_dir / "splits.csv").write_text("path,split\n")
    cfg = config(blobs, tmp_path, stages=[StageConfig(epochs=1, trainable="all")])
    assert run_experiment(cfg, run_dir=str(run_dir), quiet=True) == str(run_dir)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(RunError, match="exists and is not empty"):
        run_experiment(cfg, run_dir=str(mine), quiet=True)


def test_a_run_folder_is_trained_by_one_process_at_a_time(blobs, tmp_path):
    import subprocess
    import sys

    cfg = config(blobs, tmp_path, stages=[StageConfig(epochs=2, trainable="all")])
    run_dir = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"os.makedirs({run_dir!r}, exist_ok=True)\n"
        f"f = open(os.path.join({run_dir!r}, '.lock'), 'a')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match="is being trained by another process right now"):
            run_experiment(cfg, run_dir=run_dir, quiet=True)
        assert not os.path.exists(os.path.join(run_dir, "config.json"))  # nothing written into it
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert run_experiment(cfg, run_dir=run_dir, quiet=True) == run_dir  # free again once the holder is gone


def test_ema_validates_and_saves_the_averaged_weights(blobs, tmp_path):
    """--ema: with a momentum near 1 the average stays where Keras starts it (the weights after the first Adam
    step, at most one learning rate, 1e-3, from the initial ones), while plain training moves further; the
    validation AUC in history.csv is that of the saved (averaged) model."""

    class First(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.kernel = [np.array(w) for w in self.model.trainable_weights if "kernel" in w.path][0].copy()

    def run(name, ema):
        cfg = config(blobs, tmp_path / name, stages=[StageConfig(epochs=2, trainable="all")], ema_momentum=ema)
        cfg.data.augment = "none"
        first = First()
        run_dir = run_experiment(cfg, quiet=True, callbacks=[first])
        model = load_model(os.path.join(run_dir, "best.keras"))[0]
        kernel = [np.array(w) for w in model.trainable_weights if "kernel" in w.path][0]
        return run_dir, model, float(np.abs(kernel - first.kernel).max())

    _, _, moved = run("plain", None)
    run_dir, model, averaged = run("ema", 0.999999)
    assert averaged <= 1.001e-3 and moved > 2e-3, (moved, averaged)
    val = run_table(run_dir).split("val")
    p = model.predict(make_dataset(val.paths, val.targets(), (32, 32), 16), verbose=0).ravel()
    assert max(float(r["val_auc"]) for r in history(run_dir)) == pytest.approx(
        roc_auc_score(val.targets().ravel(), p), abs=2e-3)


def test_a_run_with_mixup_trains_on_mixed_weighted_batches(blobs, tmp_path, monkeypatch):
    """fit gets the mixed batches with their weights and no class_weight; the run completes and says so."""
    seen = {}
    real_fit = keras.Model.fit

    def fit(self, x=None, *args, **kwargs):
        seen["element"] = x.element_spec
        seen["class_weight"] = kwargs.get("class_weight")
        return real_fit(self, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit)
    cfg = config(blobs, tmp_path, stages=[StageConfig(epochs=2, trainable="all")], mixup=0.4)
    run_dir = run_experiment(cfg, quiet=True)
    assert len(seen["element"]) == 3 and seen["class_weight"] is None
    assert json.load(open(os.path.join(run_dir, "config.json")))["train"]["mixup"] == 0.4
    assert len(history(run_dir)) == 2 and load_model(os.path.join(run_dir, "best.keras"))[0] is not None


def test_a_kill_between_the_checkpoint_and_state_json_resumes_after_the_checkpointed_epoch(blobs, tmp_path,
                                                                                            monkeypatch):
    """last.keras is written before state.json; killed in between (here in the first epoch, before any
    state.json), the resume follows last.keras, which carries its own epoch, instead of training that epoch again
    on weights that already took it. A last.keras whose state was changed by hand is refused."""
    import zipfile

    import cxr_keras.callbacks as callbacks
    from cxr_keras.models.saving import STATE_MEMBER

    stages = [StageConfig(epochs=3, trainable="all", warmup_epochs=0, schedule="cosine")]
    whole = history(run_experiment(config(blobs, tmp_path / "whole", stages=stages), quiet=True))
    real = callbacks.write_state

    def killed_before_epoch_one_is_recorded(run_dir, state):
        if state["epoch"] == 1:
            raise KeyboardInterrupt
        real(run_dir, state)

    monkeypatch.setattr(callbacks, "write_state", killed_before_epoch_one_is_recorded)
    run_dir = str(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config(blobs, tmp_path, stages=stages), run_dir=run_dir, quiet=True)
    monkeypatch.setattr(callbacks, "write_state", real)
    assert not os.path.exists(os.path.join(run_dir, "state.json"))

    tampered = str(tmp_path / "tampered")
    shutil.copytree(run_dir, tampered)
    with zipfile.ZipFile(os.path.join(run_dir, "last.keras")) as source, \
            zipfile.ZipFile(os.path.join(tampered, "last.keras"), "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, json.dumps({"epoch": 3, "best": 0.9, "best_epoch": 3})
                            if item.filename == STATE_MEMBER else data)
    with pytest.raises(RunError, match="last.keras holds epoch 3; the folder was changed"):
        run_experiment(None, resume=tampered, quiet=True)

    run_experiment(None, resume=run_dir, quiet=True)
    rows = history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    # the same schedule; the metrics are not compared: a new process draws a new data order (docs/robustness.md)
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([float(r["learning_rate"]) for r in whole])


def test_best_json_is_the_one_metadata_record_and_a_broken_one_is_refused(tmp_path):
    import json

    from cxr_keras.models.metadata import FORMAT, ModelMetadata
    from cxr_keras.models.saving import load_metadata

    record = ModelMetadata(task="binary", classes=["NORMAL", "PNEUMONIA"], positive_class="PNEUMONIA").to_dict()
    assert record["format"] == FORMAT and "ensemble" not in record and record["threshold"] == 0.5
    (tmp_path / "m.json").write_text(json.dumps(record))
    assert load_metadata(str(tmp_path / "m.keras")) == record
    for broken in ({"task": "binary"}, {"task": "regression", "classes": ["a", "b"]}, ["not", "an", "object"]):
        (tmp_path / "m.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match="m.json"):
            load_metadata(str(tmp_path / "m.keras"))
