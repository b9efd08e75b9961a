"""The disk cache (data larger than RAM): the same batches as the memory cache, a build that resumes after a kill,
a key that follows the files, and `cache="auto"` choosing it when the images exceed the memory budget."""

import glob
import json
import os

import numpy as np
import pytest
from helpers import write_blob_dataset

from cxr_keras.data import disk_cache
from cxr_keras.data.decode import decode_all
from cxr_keras.data.pipeline import make_dataset
from cxr_keras.data.sources import load_dataset


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return load_dataset(write_blob_dataset(str(tmp_path_factory.mktemp("dc") / "data"), n_per_class=20, size=40))


def _epochs(ds, n=2):
    return [(x.numpy(), y.numpy()) for _ in range(n) for x, y in ds]


def test_disk_and_memory_caches_give_the_same_batches_for_the_same_seed(table):
    def batches(cache):
        return _epochs(make_dataset(table.paths, table.targets(), (32, 32), 8, training=True, augment="standard",
                                    seed=5, cache=cache))

    memory, disk = batches("memory"), batches("disk")
    assert len(memory) == len(disk) == 10
    for (xm, ym), (xd, yd) in zip(memory, disk):
        np.testing.assert_array_equal(xm, xd)
        np.testing.assert_array_equal(ym, yd)
    assert not np.array_equal(memory[0][0], memory[5][0])  # epochs differ: reshuffled, re-augmented


def test_a_killed_build_resumes_where_it_stopped(table, tmp_path, monkeypatch):
    calls = []
    real = disk_cache._decode

    def dying(paths, size, resize):
        calls.append(len(paths))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while decoding the second chunk
        return real(paths, size, resize)

    monkeypatch.setattr(disk_cache, "CHUNK", 16)
    monkeypatch.setattr(disk_cache, "_decode", dying)
    folder = str(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        disk_cache.open_cache(table.paths, (32, 32), folder=folder)
    assert glob.glob(os.path.join(folder, "*.partial")) and not glob.glob(os.path.join(folder, "*.u8"))
    assert json.load(open(glob.glob(os.path.join(folder, "*.json"))[0]))["done"] == 16

    monkeypatch.setattr(disk_cache, "_decode", lambda paths, size, resize: calls.append(len(paths)) or real(
        paths, size, resize))
    images = disk_cache.open_cache(table.paths, (32, 32), folder=folder)
    assert calls[2:] == [16, 8]  # the first chunk was not decoded again
    np.testing.assert_array_equal(images.read(np.arange(len(images))), decode_all(table.paths, (32, 32)))
    np.testing.assert_array_equal(images.read([5, 2]), decode_all([table.paths[5], table.paths[2]], (32, 32)))
    assert sorted(os.listdir(folder)) == [os.path.basename(images.path)]  # partial and progress gone


def test_the_key_follows_the_files_and_the_decoding(table, tmp_path):
    key = disk_cache.cache_key(table.paths, (32, 32), "stretch")
    assert disk_cache.cache_key(table.paths, (32, 32), "pad") != key
    assert disk_cache.cache_key(table.paths, (40, 32), "stretch") != key
    copy = str(tmp_path / "a.png")
    with open(table.paths[0], "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    paths = [copy, *table.paths[1:]]
    before = disk_cache.cache_key(paths, (32, 32), "stretch")
    os.utime(copy, ns=(1, 1))  # same bytes, other mtime: rebuilt rather than trusted
    assert disk_cache.cache_key(paths, (32, 32), "stretch") != before


def test_auto_chooses_disk_above_the_budget_and_says_why():
    kind, why = disk_cache.choose(1000, (224, 224), budget=10**9)
    assert kind == "memory" and "0.05 GB" in why and "budget 1.00 GB, given" in why
    kind, why = disk_cache.choose(100_000, (224, 224), budget=10**9)
    assert kind == "disk" and "5.02 GB" in why
    assert disk_cache.choose(10, (32, 32))[0] == "memory"  # the default budget: half the available RAM


def test_a_run_whose_images_exceed_the_budget_trains_from_the_disk_cache(table, tmp_path, capsys):
    from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
    from cxr_keras.train import run_experiment

    config = ExperimentConfig(
        name="disk", runs_dir=str(tmp_path / "runs"),
        data=DataConfig(data_dir=os.path.dirname(os.path.dirname(table.paths[0])), image_size=32, batch_size=8,
                        split_ratios=(0.6, 0.2, 0.2), augment="none", cache_budget_gb=1e-6),
        model=ModelConfig(backbone="baseline", weights="none"),
        train=TrainConfig(stages=[StageConfig(epochs=1, trainable="all")], tensorboard=False))
    run_dir = run_experiment(config)
    out = capsys.readouterr().out
    assert "cache: disk (32 images at 32x32 need 0.00 GB; memory budget 0.00 GB, given)" in out
    assert os.path.exists(os.path.join(run_dir, "best.keras"))
    assert glob.glob(os.path.join(os.environ["CXR_KERAS_CACHE_DIR"], "images", "*.u8"))
