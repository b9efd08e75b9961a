"""Grad-CAM and Grad-CAM++ for any Keras 3 image classifier whose convolutional features can be reached.

Most Grad-CAM code builds `Model(model.input, [conv_layer.output, model.output])`, which fails with "Graph
disconnected" when the conv layer lives inside a nested sub-model (the Keras transfer-learning guide's pattern:
a `keras.applications` backbone called inside a Functional model). Here the outer model is re-traced with
`keras.models.clone_model(..., call_function=...)`, its own layers reused (same weights), and the nested
backbone replaced by a copy that also returns the conv output; Sequential models are re-traced as the chain they
are. This works at any depth of nesting and for any outer graph, not only chains. Keras ships no Grad-CAM.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from cxr_keras.choices import GRADCAM_METHODS

METHODS = GRADCAM_METHODS


def find_conv_layer(model: keras.Model) -> list[str]:
    """Path of layer names to the last layer with a 4-D output, looking inside nested models too:
    ["top_activation"] for a flat model, ["efficientnetb0", "top_activation"] for a nested one."""
    path = _last_feature_layer(model)
    if path is None:
        looked = ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in model.layers[-8:])
        raise ValueError(f"model {model.name} has no layer with a 4-D (convolutional) output for Grad-CAM; looked "
                         f"at its layers and those of its nested models (last ones: {looked})")
    return path


def _last_feature_layer(model: keras.Model) -> list[str] | None:
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            inner = _last_feature_layer(layer)
            if inner is not None:
                return [layer.name, *inner]
            continue
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            rank = len(layer.output.shape)
        except (AttributeError, ValueError):  # a layer never called in this graph
            continue
        if rank == 4:
            return [layer.name]
    return None


def layer_path(model: keras.Model, layer: str | None) -> list[str]:
    if layer is None:
        return find_conv_layer(model)
    path = layer.split("/")
    node = model
    for name in path:
        if not isinstance(node, keras.Model):
            raise ValueError(f"--layer {layer!r}: {node.name} is a layer, not a nested model, so it has no {name!r}")
        try:
            node = node.get_layer(name)
        except ValueError:
            raise ValueError(f"no layer {name!r} in {node.name} (for --layer {layer!r}); nested layers are "
                             "written outer/inner") from None
    if isinstance(node, keras.Model):
        inner = _last_feature_layer(node)
        hint = f" (its last 4-D one: {layer}/{'/'.join(inner)})" if inner else ""
        raise ValueError(f"--layer {layer!r} is a nested model; name a layer inside it as {layer}/LAYER{hint}")
    if len(node.output.shape) != 4:
        raise ValueError(f"layer {layer} has a {len(node.output.shape)}-D output; Grad-CAM needs a 4-D conv output")
    return path


def gradient_model(model: keras.Model, layer: str | None = None) -> tuple[keras.Model, list[str]]:
    """A model x -> (conv output, predictions) sharing `model`'s layers and weights, and the layer path used."""
    path = layer_path(model, layer)
    return _with_features(model, path), path


def _with_features(model: keras.Model, path: list[str]) -> keras.Model:
    """`model` as a Functional model with two outputs: the feature map at `path` and the prediction."""
    target = model.get_layer(path[0])
    if len(path) == 1 and not isinstance(model, keras.Sequential):
        return keras.Model(model.inputs, [target.output, model.outputs[0]])
    inner = _with_features(target, path[1:]) if len(path) > 1 else None
    captured = []

    def call(layer, *args, **kwargs):
        if layer is not target:
            return layer(*args, **kwargs)
        if inner is None:
            output = layer(*args, **kwargs)
            captured.append(output)
            return output
        features, output = inner(*args, **kwargs)
        captured.append(features)
        return output

    if isinstance(model, keras.Sequential):  # clone_model takes no call_function for Sequential: re-trace the chain
        inputs = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype)
        outputs = inputs
        for layer in model.layers:
            outputs = call(layer, outputs)
    else:
        clone = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
        inputs, outputs = clone.inputs[0] if len(clone.inputs) == 1 else clone.inputs, clone.outputs[0]
    return keras.Model(inputs, [captured[-1], outputs])


def class_scores(predictions, class_index):
    """The score each image is explained for: the model's output for its class (1 - p for class 0 of a single
    sigmoid; the logit itself for logit outputs)."""
    if predictions.shape[-1] == 1:
        p = predictions[:, 0]
        return tf.where(class_index == 1, p, 1.0 - p)
    return tf.gather(predictions, class_index, axis=1, batch_dims=1)


def _decisions(predictions, threshold, logits: bool, positive: int):
    """The class each image is decided as: a single output against `threshold` (a probability, so logits are
    squashed first); two outputs of a binary model by the positive class's probability against it; else argmax."""
    units = predictions.shape[-1]
    if units > 2 or positive < 0:
        return tf.argmax(predictions, axis=1, output_type=tf.int32)
    if units == 1:
        p = tf.sigmoid(predictions[:, 0]) if logits else predictions[:, 0]
        return tf.cast(p >= threshold, tf.int32)
    p = (tf.nn.softmax(predictions, axis=1) if logits else predictions)[:, positive]
    return tf.where(p >= threshold, positive, 1 - positive)


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cam_function(model: keras.Model, layer: str | None, method: str, logits: bool, positive: int):
    """A compiled (x, class_index, threshold) -> (maps, explained class, predictions) step, cached per model,
    layer and decision rule."""
    cache = _COMPILED.setdefault(model, {})
    key = (layer, method, logits, positive)
    if key in cache:
        return cache[key]
    forward, path = gradient_model(model, layer)

    @tf.function(reduce_retracing=True)
    def step(x, class_index, threshold):
        with tf.GradientTape() as tape:
            features, predictions = forward(x, training=False)
            predictions = tf.cast(predictions, tf.float32)
            decided = _decisions(predictions, threshold, logits, positive)
            index = tf.where(class_index < 0, decided, class_index)
            score = class_scores(predictions, index)
        grads = tape.gradient(score, features)
        if grads is None:  # known while tracing: the output does not depend on that layer through a gradient
            raise ValueError(f"no gradient flows from the output to layer {'/'.join(path)}; Grad-CAM needs a "
                             "convolutional layer the prediction depends on (choose one with --layer)")
        if method == "gradcam":
            weights = tf.reduce_mean(grads, axis=(1, 2))
        else:  # Grad-CAM++ (Chattopadhay et al. 2018), with the usual exponential-score closed form
            g2, g3 = grads**2, grads**3
            denominator = 2 * g2 + tf.reduce_sum(features, axis=(1, 2), keepdims=True) * g3
            alpha = tf.math.divide_no_nan(g2, denominator)
            weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
        cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))
        cam = tf.image.resize(cam[..., None], tf.shape(x)[1:3], method="bilinear")[..., 0]
        return tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=(1, 2), keepdims=True)), index, predictions

    cache[key] = step
    return step


def compute_cams(model: keras.Model, images: np.ndarray, method: str = "gradcam", layer: str | None = None,
                 class_index: int | None = None, batch_size: int = 32, threshold: float = 0.5,
                 logits: bool | None = None, positive_index: int = 1, exclusive: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heat maps (N, H, W) in 0..1 at the input size, the explained class per image and the predictions.

    `class_index` None explains the decided class: for a binary model, the positive class (`positive_index` of
    two outputs) when its probability reaches `threshold` (the model's own operating point), else the other; the
    top class otherwise. `logits` None reads it from the last layer's activation. `exclusive` False (multi-label
    models) explains the top-scoring finding whatever the output count.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    layer_path(model, layer)
    n_out = model.output_shape[-1]
    if class_index is not None and not 0 <= class_index < max(n_out, 2):
        raise ValueError(f"class index {class_index} is out of range for a model with {n_out} output(s)")
    if logits is None:
        from cxr_keras.models.contract import final_activation

        logits = final_activation(model) in ("linear", None)
    step = _cam_function(model, layer, method, bool(logits), positive_index if exclusive else -1)
    cams, explained, outputs = [], [], []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start : start + batch_size], dtype=tf.float32)
        wanted = tf.fill([tf.shape(x)[0]], -1 if class_index is None else int(class_index))
        try:
            cam, index, predictions = step(x, wanted, tf.constant(float(threshold), tf.float32))
        except ValueError as exc:  # raised while tracing: keep our line, not tf.function's frame dump
            ours = [line.strip() for line in str(exc).splitlines() if "no gradient flows" in line]
            if not ours:
                raise
            raise ValueError(ours[-1].removeprefix("ValueError: ")) from None
        cams.append(cam.numpy())
        explained.append(index.numpy())
        outputs.append(predictions.numpy())
    return np.concatenate(cams), np.concatenate(explained), np.concatenate(outputs)
