"""The consistency option: films beside shifted copies of themselves (data/consistency.py) and the
Jensen-Shannon term between their scores (models/losses.PairConsistency), checked by hand; a run trains with it."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import write_blob_dataset

from cxr_keras.config import ConfigError, DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from cxr_keras.data.consistency import pair, paired_batches
from cxr_keras.models.losses import PairConsistency, jensen_shannon


def js_by_hand(p, q):
    """Bernoulli JS in nats, from the definition."""
    m = [(p + q) / 2, (2 - p - q) / 2]
    kl = lambda a: a[0] * np.log(a[0] / m[0]) + a[1] * np.log(a[1] / m[1])  # noqa: E731
    return (kl([p, 1 - p]) + kl([q, 1 - q])) / 2


def test_the_divergence_is_zero_for_identical_views_and_matches_the_definition():
    p = np.array([[0.2], [0.7], [0.5]], np.float32)
    q = np.array([[0.2], [0.1], [0.99]], np.float32)
    same = keras.ops.convert_to_numpy(jensen_shannon(p, p))
    assert np.allclose(same, 0, atol=1e-6)
    got = keras.ops.convert_to_numpy(jensen_shannon(p, q))
    assert got == pytest.approx([0, js_by_hand(0.7, 0.1), js_by_hand(0.5, 0.99)], abs=1e-5)
    assert got[1] > got[2] > got[0] and got.max() <= np.log(2)
    categorical = keras.ops.convert_to_numpy(jensen_shannon(np.array([[0.5, 0.5]]), np.array([[0.5, 0.5]]), True))
    assert categorical == pytest.approx([0], abs=1e-6)


def test_the_loss_adds_each_pairs_divergence_to_both_rows_and_only_while_active():
    base = keras.losses.BinaryCrossentropy()
    loss = PairConsistency(base, weight=2.0)
    y = np.array([[1], [1], [0], [0]], np.float32)
    identical = np.array([[0.8], [0.8], [0.3], [0.3]], np.float32)
    assert float(loss(y, identical)) == pytest.approx(float(base(y, identical)), abs=1e-6)
    apart = np.array([[0.8], [0.4], [0.3], [0.3]], np.float32)
    expected = float(base(y, apart)) + 2.0 * 2 * js_by_hand(0.8, 0.4) / 4
    assert float(loss(y, apart)) == pytest.approx(expected, rel=1e-5)
    loss.active.assign(0.0)
    assert float(loss(y, apart)) == pytest.approx(float(base(y, apart)), abs=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(PairConsistency(base, 0.5)))
    assert restored.weight == 0.5 and isinstance(restored.base, keras.losses.BinaryCrossentropy)


def test_pairs_interleave_each_film_with_a_shifted_copy_and_repeat_its_target():
    images = tf.constant(np.random.default_rng(0).integers(0, 255, (5, 16, 16, 1)), tf.float32)
    targets = tf.constant([[1.0], [0.0], [1.0], [0.0], [1.0]])
    x, y = pair(images, targets, tf.constant([3, 4], tf.int64))
    assert x.shape == (6, 16, 16, 1) and y.numpy().ravel().tolist() == [1, 1, 0, 0, 1, 1]
    np.testing.assert_array_equal(x.numpy()[0::2], images.numpy()[:3])
    assert not np.array_equal(x.numpy()[1::2], x.numpy()[0::2])  # the copies are shifted
    again, _ = pair(images, targets, tf.constant([3, 4], tf.int64))
    np.testing.assert_array_equal(again.numpy(), x.numpy())  # the same seed, the same shifts
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(5)
    paired = paired_batches(ds, seed=1)
    epochs = [next(iter(paired))[0].numpy() for _ in range(2)]
    assert not np.array_equal(epochs[0][1::2], epochs[1][1::2])  # new draws every epoch


def test_a_run_trains_with_consistency_and_keeps_a_plain_validation_loss(tmp_path):
    from cxr_keras.train import run_experiment

    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=16, size=32, seed=3)
    config = ExperimentConfig(
        name="consistency", runs_dir=str(tmp_path / "runs"),
        data=DataConfig(data_dir=data, image_size=32, batch_size=8, split_ratios=(0.6, 0.4, 0.0), augment="none"),
        model=ModelConfig(backbone="baseline", weights="none"),
        train=TrainConfig(stages=[StageConfig(epochs=1, trainable="all")], tensorboard=False, consistency=1.0))
    run = run_experiment(config, quiet=True)
    assert json.load(open(os.path.join(run, "config.json")))["train"]["consistency"] == 1.0
    from cxr_keras.evaluate.inference import predict_scores, truth
    from cxr_keras.models.contract import describe_model
    from cxr_keras.models.saving import load_model
    from cxr_keras.run_folder import run_table

    model, metadata = load_model(os.path.join(run, "best.keras"), compile=False)
    spec = describe_model(model, metadata)
    val = run_table(run).split("val")
    y, s = truth(val, spec), predict_scores(model, val.paths, spec)
    plain = float(keras.losses.BinaryCrossentropy()(y[:, None], s[:, None]))
    history = open(os.path.join(run, "history.csv")).read().splitlines()
    header, last = history[0].split(","), history[-1].split(",")
    assert float(last[header.index("val_loss")]) == pytest.approx(plain, rel=1e-3)


def test_mixup_and_consistency_together_are_refused():
    config = ExperimentConfig(train=TrainConfig(mixup=0.2, consistency=1.0))
    with pytest.raises(ConfigError, match="choose one"):
        config.check()
