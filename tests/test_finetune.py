"""Fine-tuning stages: planning, trainable layers, frozen BatchNorm, schedules and BatchNorm recalibration."""

import keras
import numpy as np
import pytest

from cxr_keras.config import StageConfig
from cxr_keras.models.factory import backbone_layers, build_model
from cxr_keras.models.finetune import learning_rate, plan_stages, recalibrate_batchnorm, set_trainable

CLASSES = ["NORMAL", "PNEUMONIA"]


def test_pretrained_stages_are_kept_and_scratch_collapses_to_one_trainable_stage():
    stages = [StageConfig(epochs=2, trainable="head"), StageConfig(epochs=3, trainable="top:10", learning_rate=1e-4)]
    assert plan_stages(stages, pretrained=True) == stages
    with pytest.warns(UserWarning, match="random weights.*one all-trainable stage of 5 epochs"):
        (only,) = plan_stages(stages, pretrained=False)
    assert (only.trainable, only.epochs, only.learning_rate, only.warmup_epochs) == ("all", 5, 1e-3, 1.0)
    single = [StageConfig(epochs=4, trainable="all")]
    assert plan_stages(single, pretrained=False) == single
    with pytest.raises(ValueError, match="at least 1 epoch"):
        plan_stages([StageConfig(epochs=0)], pretrained=True)


def test_trainable_specs_unfreeze_the_top_of_the_backbone_and_keep_batchnorm_frozen():
    model = build_model("efficientnetb0", "binary", CLASSES, 32)
    layers = backbone_layers(model)
    assert set_trainable(model, "head", freeze_batchnorm=True) == 0
    assert not any(layer.trainable for layer in layers)
    assert model.get_layer("predictions").trainable

    n = set_trainable(model, "from:block6a", freeze_batchnorm=True)
    first = next(i for i, layer in enumerate(layers) if layer.name.startswith("block6a"))
    assert n == len(layers) - first
    assert not any(layer.trainable for layer in layers[:first])
    for layer in layers[first:]:
        assert layer.trainable == (not isinstance(layer, keras.layers.BatchNormalization))

    assert set_trainable(model, "fraction:0.25", freeze_batchnorm=False) == int(np.ceil(0.25 * len(layers)))
    assert set_trainable(model, "top:7", freeze_batchnorm=False) == 7
    assert [layer.trainable for layer in layers[-7:]] == [True] * 7
    with pytest.raises(ValueError, match="no backbone layer name starts with 'block9'; prefixes here: .*block6a"):
        set_trainable(model, "from:block9", freeze_batchnorm=True)
    with pytest.raises(ValueError, match="head, all, top:N"):
        set_trainable(model, "some", freeze_batchnorm=True)


def test_frozen_batchnorm_statistics_do_not_move_while_fine_tuning():
    model = build_model("mobilenetv2", "binary", CLASSES, 32, bn_momentum=0.5)
    set_trainable(model, "all", freeze_batchnorm=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    bn = [layer for layer in backbone_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    before = [np.asarray(layer.moving_mean).copy() for layer in bn]
    conv_before = np.asarray(model.get_layer("Conv1").kernel).copy()
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 1)).astype("float32")
    model.fit(x, np.arange(8)[:, None] % 2, epochs=2, verbose=0)
    assert all(np.array_equal(b, np.asarray(layer.moving_mean)) for b, layer in zip(before, bn))
    assert not np.array_equal(conv_before, np.asarray(model.get_layer("Conv1").kernel))  # the conv did train


def test_learning_rate_schedules():
    assert learning_rate(StageConfig(epochs=2, learning_rate=1e-3), 10) == 1e-3
    warm = learning_rate(StageConfig(epochs=4, learning_rate=1e-3, warmup_epochs=1, schedule="constant"), 10)
    assert [round(float(warm(s)), 8) for s in (0, 5, 10, 39)] == [0.0, 5e-4, 1e-3, 1e-3]
    cosine = learning_rate(StageConfig(epochs=2, learning_rate=1e-3, schedule="cosine"), 10)
    assert float(cosine(0)) == pytest.approx(1e-3) and float(cosine(10)) == pytest.approx(5e-4, rel=1e-5)
    assert float(cosine(20)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="constant or cosine"):
        learning_rate(StageConfig(schedule="step"), 10)


def test_recalibration_sets_moving_statistics_to_the_average_batch_statistics():
    import tensorflow as tf

    inputs = keras.Input((4,))
    bn = keras.layers.BatchNormalization(momentum=0.999)
    model = keras.Model(inputs, bn(inputs))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, scale, (16, 4)).astype("float32") for loc, scale in ((1, 1), (5, 2), (-2, 3))]
    dataset = tf.data.Dataset.from_tensor_slices(np.concatenate(batches)).batch(16).map(lambda x: (x, x))
    assert recalibrate_batchnorm(model, dataset, batches=10) == 1
    np.testing.assert_allclose(np.asarray(bn.moving_mean), np.mean([b.mean(0) for b in batches], 0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bn.moving_variance), np.mean([b.var(0) for b in batches], 0), rtol=1e-4)
    assert bn.momentum == 0.999  # restored
