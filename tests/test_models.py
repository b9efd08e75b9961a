"""Model factory: every backbone and task, flat graphs, preprocessing parity, weights files and their errors."""

import keras
import numpy as np
import pytest

from cxr_keras.models.factory import backbone_layers, build_model
from cxr_keras.models.registry import REGISTRY, get_backbone
from cxr_keras.models.weights import WeightsError, resolve_weights, transfer_weights

TASKS = {"binary": ["NORMAL", "PNEUMONIA"], "multiclass": ["a", "b", "c"], "multilabel": ["w", "x", "y", "z"]}


def pixels(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 1)).astype("float32")


@pytest.mark.parametrize("backbone", list(REGISTRY))
def test_every_backbone_builds_flat_for_every_task(backbone):
    for task, classes in TASKS.items():
        model = build_model(backbone, task, classes, 32)
        out = np.asarray(model(pixels(), training=False))
        assert out.shape == (2, 1 if task == "binary" else len(classes))
        if task == "multiclass":
            np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
        else:
            assert ((out > 0) & (out < 1)).all()
        assert not any(isinstance(layer, keras.Model) for layer in model.layers), "nested sub-model"
        assert model.input_shape == (None, 32, 32, 1)
        assert len(model.get_layer(get_backbone(backbone).last_conv).output.shape) == 4


def test_output_bias_sets_the_untrained_prediction():
    bias = np.log(0.25 / 0.75)
    model = build_model("baseline", "binary", TASKS["binary"], 32, output_bias=np.array([bias]))
    np.testing.assert_allclose(model.get_layer("predictions").get_weights()[1], [bias], rtol=1e-6)


@pytest.mark.parametrize("backbone,module", [("mobilenetv2", "mobilenet_v2"), ("densenet121", "densenet"),
                                             ("resnet50", "resnet50")])
def test_pretrained_preprocessing_matches_keras_preprocess_input(backbone, module):
    """The in-model preprocessing equals keras.applications.<module>.preprocess_input on gray-as-RGB pixels."""
    from cxr_keras.models.factory import _preprocessing

    gray = pixels(3)
    rgb = np.repeat(gray, 3, axis=-1)
    ours = np.asarray(_preprocessing(get_backbone(backbone), pretrained=True, pixel_stats=None)(rgb))
    theirs = getattr(keras.applications, module).preprocess_input(rgb.copy())
    np.testing.assert_allclose(ours, np.asarray(theirs), rtol=1e-5, atol=1e-4)


def test_scratch_preprocessing_standardises_with_the_training_statistics():
    model = build_model("mobilenetv2", "binary", TASKS["binary"], 32, pixel_stats=(100.0, 50.0))
    out = np.asarray(model.get_layer("cxr_preprocess")(np.full((1, 2, 2, 3), 150.0, "float32")))
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)
    # EfficientNet divides by 255 inside its own stem: the standardisation is scaled to survive it
    model = build_model("efficientnetb0", "binary", TASKS["binary"], 32, pixel_stats=(100.0, 50.0))
    out = np.asarray(model.get_layer("cxr_preprocess")(np.full((1, 2, 2, 3), 150.0, "float32")))
    np.testing.assert_allclose(out / 255.0, 1.0, rtol=1e-6)


def test_from_scratch_batchnorm_momentum_is_short_run_friendly():
    bns = [layer for layer in build_model("mobilenetv2", "binary", TASKS["binary"], 32).layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum == 0.9 for layer in bns)  # keras.applications.MobileNetV2 uses 0.999


@pytest.mark.parametrize("backbone", ["efficientnetb0", "mobilenetv2", "densenet121", "resnet50"])
def test_weights_file_is_loaded_into_the_flat_model(backbone, tmp_path):
    entry = get_backbone(backbone)
    application = entry.constructor(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(1)
    application.set_weights([rng.normal(size=w.shape).astype("float32") if w.ndim > 1 else w
                             for w in application.get_weights()])
    path = str(tmp_path / f"{backbone}.weights.h5")
    application.save_weights(path)

    model = build_model(backbone, "binary", TASKS["binary"], 32, weights=path)
    loaded = [w for layer in backbone_layers(model) for w in layer.get_weights()]
    for ours, theirs in zip(loaded, application.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    # same features through the model's own preprocessing as through the application fed preprocessed input
    x = pixels(2)
    features = keras.Model(model.input, model.get_layer(entry.last_conv).output)(x, training=False)
    preprocessed = model.get_layer("cxr_preprocess")(np.repeat(x, 3, axis=-1))
    np.testing.assert_allclose(np.asarray(features), np.asarray(application(preprocessed, training=False)),
                               rtol=1e-4, atol=1e-4)


def test_weights_file_of_another_architecture_is_refused(tmp_path):
    path = str(tmp_path / "mobilenet.weights.h5")
    keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(path)
    with pytest.raises(WeightsError, match="mobilenet.weights.h5 does not fit DenseNet121"):
        build_model("densenet121", "binary", TASKS["binary"], 32, weights=path)
    with pytest.raises(WeightsError, match="does not exist"):
        build_model("mobilenetv2", "binary", TASKS["binary"], 32, weights=str(tmp_path / "missing.h5"))


@pytest.fixture
def offline(monkeypatch):
    """Keras' downloader failing the way it does without network."""
    from keras.src.utils import file_utils

    def fail(fname, origin=None, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", fail)


def test_offline_imagenet_says_which_file_where_and_which_flag(offline):
    with pytest.raises(WeightsError) as info:
        build_model("mobilenetv2", "binary", TASKS["binary"], 32, weights="imagenet")
    message = str(info.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in message
    assert ".keras" in message and "--weights" in message and "--weights none" in message


def test_auto_weights_fall_back_to_scratch_loudly(offline, capsys):
    with pytest.warns(UserWarning, match="FROM SCRATCH"):
        assert resolve_weights(get_backbone("mobilenetv2"), "auto", (32, 32, 3)) == ("none", None)
    assert "NOTICE" in capsys.readouterr().out


def test_transfer_folds_a_rescaling_after_normalization_into_the_variance():
    """EfficientNet's ImageNet graph has Rescaling(1/sqrt(std)) after its Normalization; ours does not."""
    def tiny(with_rescaling):
        inputs = keras.Input((4, 4, 3))
        x = keras.layers.Normalization(axis=-1)(inputs)
        if with_rescaling:
            x = keras.layers.Rescaling([0.5, 2.0, 1.5])(x)
        return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))

    source, target = tiny(True), tiny(False)
    norm = next(layer for layer in source.layers if isinstance(layer, keras.layers.Normalization))
    norm.adapt(np.random.default_rng(2).normal(3.0, 2.0, (16, 4, 4, 3)).astype("float32"))
    transfer_weights(source, target.layers)
    x = np.random.default_rng(3).normal(3.0, 2.0, (2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(target(x)), np.asarray(source(x)), rtol=1e-5, atol=1e-5)


def test_bad_model_requests_are_explained():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'; known backbones: efficientnetb0, mobilenetv2"):
        build_model("vgg16", "binary", TASKS["binary"], 32)
    with pytest.raises(ValueError, match="at least 32 px"):
        build_model("resnet50", "binary", TASKS["binary"], 24)
    with pytest.raises(ValueError, match="exactly 2 classes, got 3"):
        build_model("baseline", "binary", ["a", "b", "c"], 32)
    with pytest.raises(WeightsError, match="no pretrained weights"):
        build_model("baseline", "binary", TASKS["binary"], 32, weights="imagenet")
    assert get_backbone("EfficientNet-B0").name == "EfficientNetB0"
