"""Grad-CAM on the models users bring: every registry backbone plus Xception nested the Keras guide's way, and
every head kind in every wrapping, each against a reference computed eagerly on its flat twin (the same weights
wired without nesting, where the textbook `Model(inputs, [conv.output, model.output])` works)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cxr_keras.evaluate.gradcam import compute_cams, find_conv_layer
from cxr_keras.models.registry import REGISTRY

# Every keras.applications backbone the registry knows, plus Xception (the published model that broke); input
# sizes are the smallest that leave a last feature map of 2x2 or more, so that a map can be other than flat.
APPLICATIONS = {name: (entry.constructor, 64, entry.last_conv) for name, entry in REGISTRY.items()
                if entry.constructor.__module__.startswith("keras.")}
APPLICATIONS["xception"] = (keras.applications.Xception, 71, "block14_sepconv2_act")


def reference_cams(probe: keras.Model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Grad-CAM by the textbook, eagerly, on a flat twin with outputs (conv features, prediction): what the
    toolkit must reproduce on the nested model."""
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        features, out = probe(x, training=False)
        out = tf.cast(out, tf.float32)
        if out.shape[-1] == 1:
            score = tf.where(tf.constant(classes) == 1, out[:, 0], 1 - out[:, 0])
        else:
            score = tf.gather(out, tf.constant(classes), axis=1, batch_dims=1)
    grads = tape.gradient(score, features)
    cam = tf.nn.relu(tf.reduce_sum(features * tf.reduce_mean(grads, axis=(1, 2))[:, None, None, :], axis=-1))
    cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0].numpy()
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def head(kind: str) -> list[keras.layers.Layer]:
    """The guide's head (pooling, Dense, Dropout, output) with an output of `kind`."""
    units, activation = {"sigmoid1": (1, "sigmoid"), "softmax2": (2, "softmax"), "logits2": (2, None),
                         "softmax3": (3, "softmax"), "logits3": (3, None), "multilabel4": (4, "sigmoid")}[kind]
    return [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.3), keras.layers.Dense(units, activation=activation)]


def chain(x, layers):
    for layer in layers:
        x = layer(x)
    return x


def guide_model(backbone: keras.Model, size: int, kind: str) -> keras.Model:
    """keras.io's transfer-learning guide: Input -> Rescaling -> backbone(x, training=False) -> head."""
    inputs = keras.Input((size, size, 3))
    x = backbone(keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs), training=False)
    return keras.Model(inputs, chain(x, head(kind)))


def images(n: int, size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, channels)).astype("float32")


@pytest.mark.parametrize("name", sorted(APPLICATIONS))
def test_every_application_nested_the_guides_way_matches_its_flat_twin(name):
    constructor, size, last_conv = APPLICATIONS[name]
    keras.utils.set_random_seed(0)
    backbone = constructor(weights=None, include_top=False, input_shape=(size, size, 3))
    model = guide_model(backbone, size, "logits2")  # the published model that broke: two logits
    flat_inputs = keras.Input((size, size, 3))
    twin = constructor(weights=None, include_top=False, input_tensor=model.layers[1](flat_inputs))
    twin.set_weights(backbone.get_weights())
    flat = keras.Model(flat_inputs, [twin.output, chain(twin.output, model.layers[3:])])
    path = find_conv_layer(model)
    assert path == [backbone.name, last_conv]
    x = images(3, size)
    cams, explained, predictions = compute_cams(model, x, batch_size=2)
    np.testing.assert_allclose(predictions, np.asarray(flat(x)[1]), atol=1e-4)
    decided = (tf.nn.softmax(predictions).numpy()[:, 1] >= 0.5).astype(int)  # argmax, but for exact ties
    np.testing.assert_array_equal(explained, decided)
    np.testing.assert_allclose(cams, reference_cams(flat, x, explained), atol=1e-4)
    assert cams.shape == (3, size, size) and np.isfinite(cams).all() and (cams.std(axis=(1, 2)) > 0).any()


class SmallBackbone:
    """A conv net standing in for an application, with a residual join (not a chain); `wire` calls its layers on
    any tensor, so the same layers make both the nested model and its flat twin."""

    def __init__(self):
        self.down = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")
        self.side = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
        self.join = keras.layers.Add()
        self.last = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="last_conv")

    def wire(self, x):
        x = self.down(x)
        return self.last(self.join([x, self.side(x)]))

    def model(self, name: str = "backbone") -> keras.Model:
        inputs = keras.Input((32, 32, 3))
        return keras.Model(inputs, self.wire(inputs), name=name)


def wrapped(wrapping: str, kind: str) -> tuple[keras.Model, keras.Model, int]:
    """(model as users build it, its flat twin on the same layers with outputs (features, prediction), input
    channels)."""
    keras.utils.set_random_seed(1)
    net, top, rescale = SmallBackbone(), head(kind), keras.layers.Rescaling(1 / 255.0)
    backbone = net.model()
    if wrapping in ("guide", "sequential"):
        if wrapping == "guide":
            inputs = keras.Input((32, 32, 3))
            model = keras.Model(inputs, chain(backbone(rescale(inputs), training=False), top))
        else:
            model = keras.Sequential([keras.Input((32, 32, 3)), rescale, backbone, *top])
        flat_in = keras.Input((32, 32, 3))
        features = net.wire(rescale(flat_in))
        return model, keras.Model(flat_in, [features, chain(features, top)]), 3
    # two levels deep, gray input, Resizing and a channel join before the backbone
    resize, join = keras.layers.Resizing(32, 32), keras.layers.Concatenate()

    def gray_to_rgb(x):
        x = resize(x)
        return join([x, x, x])

    inner_in = keras.Input((32, 32, 3))
    inner = keras.Model(inner_in, backbone(rescale(inner_in)), name="features")
    inputs = keras.Input((40, 40, 1))
    model = keras.Model(inputs, chain(inner(gray_to_rgb(inputs)), top))
    flat_in = keras.Input((40, 40, 1))
    features = net.wire(rescale(gray_to_rgb(flat_in)))
    return model, keras.Model(flat_in, [features, chain(features, top)]), 1


HEADS = ["sigmoid1", "softmax2", "logits2", "softmax3", "logits3", "multilabel4"]


@pytest.mark.parametrize("wrapping", ["guide", "sequential", "deep-gray"])
@pytest.mark.parametrize("kind", HEADS)
def test_every_head_in_every_wrapping_matches_the_flat_twin(wrapping, kind):
    model, flat, channels = wrapped(wrapping, kind)
    size = model.input_shape[1]
    x = images(6, size, channels, seed=2)
    logits = kind.startswith("logits")
    outputs = np.asarray(flat(x)[1])
    p = tf.nn.softmax(outputs).numpy() if logits else outputs
    binary = kind in ("sigmoid1", "softmax2", "logits2")
    threshold = float(np.median(p[:, -1])) if binary else 0.5  # a cut of its own, between the images' scores
    cams, explained, predictions = compute_cams(model, x, threshold=threshold, exclusive=kind != "multilabel4")
    np.testing.assert_allclose(predictions, outputs, atol=1e-5)
    expected = (p[:, -1] >= threshold).astype(int) if binary else predictions.argmax(axis=1)
    np.testing.assert_array_equal(explained, expected)
    if binary:
        assert 0 < explained.sum() < len(x)  # both classes explained: the cut is not 0.5's
    path = find_conv_layer(model)
    assert path[-1] == "last_conv" and len(path) == (3 if wrapping == "deep-gray" else 2)
    np.testing.assert_allclose(cams, reference_cams(flat, x, explained), atol=1e-5)
    assert (cams.std(axis=(1, 2)) > 0).any()


def test_a_model_without_a_feature_map_is_refused_naming_the_layers_looked_at():
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Flatten(name="flatten")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="scores")(x))
    with pytest.raises(ValueError, match=r"no layer with a 4-D .* flatten \(Flatten\), scores \(Dense\)"):
        compute_cams(model, images(1, 16, 1))


def test_cxr_gradcam_on_a_guide_style_xception_with_two_logits(tmp_path):
    """The published model that broke, rebuilt (random weights): one overlay per image, maps that are not flat."""
    import json
    import os

    from helpers import write_blob_dataset

    from cxr_keras.cli import main

    keras.utils.set_random_seed(0)
    backbone = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    inputs = keras.Input((71, 71, 3))  # no Rescaling: this model takes -1..1 from the caller (--preprocess tf)
    model = keras.Model(inputs, chain(backbone(inputs, training=False), head("logits2")))
    path = str(tmp_path / "xception.keras")
    model.save(path)
    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=3, size=71, seed=4)
    out = str(tmp_path / "cams")
    assert main(["gradcam", "--model", path, "--images", data, "--preprocess", "tf", "--class-names", "NORMAL",
                 "PNEUMONIA", "--out", out]) == 0
    overlays = [f for f in os.listdir(out) if f[:4].isdigit() and f.endswith(".png")]
    cams = np.load(os.path.join(out, "cams.npy"))
    assert len(overlays) == 6 and cams.shape == (6, 71, 71) and (cams.std(axis=(1, 2)) > 0).all()
    assert json.load(open(os.path.join(out, "gradcam.json")))["layer"] == "xception/block14_sepconv2_act"
