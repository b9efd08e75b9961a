"""Grad-CAM and Grad-CAM++ for this toolkit's flat models and for foreign models with a nested backbone.

Most Grad-CAM code builds `Model(model.input, [conv_layer.output, model.output])`, which fails with "Graph
disconnected" when the conv layer lives inside a nested sub-model (the commonest Keras transfer-learning
pattern). Here the outer model is re-run layer by layer with the nested backbone replaced by a copy that also
returns the conv output, so both kinds work. Outer models must be a chain (each layer takes the previous
layer's output), which that pattern is; our flat models need no rewiring at all.
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
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            try:
                return [layer.name, *find_conv_layer(layer)]
            except ValueError:
                continue
        shape = getattr(layer, "output", None)
        if shape is not None and len(layer.output.shape) == 4 and not isinstance(layer, keras.layers.InputLayer):
            return [layer.name]
    raise ValueError(f"model {model.name} has no layer with a 4-D (convolutional) output: Grad-CAM needs one")


def _resolve(model: keras.Model, layer: str | None) -> list[str]:
    if layer is None:
        return find_conv_layer(model)
    path = layer.split("/")
    node = model
    for name in path:
        try:
            node = node.get_layer(name)
        except ValueError:
            raise ValueError(f"no layer {name!r} in {node.name} (for --layer {layer!r}); nested layers are "
                             "written outer/inner") from None
    if len(node.output.shape) != 4:
        raise ValueError(f"layer {layer} has a {len(node.output.shape)}-D output; Grad-CAM needs a 4-D conv output")
    return path


def gradient_model(model: keras.Model, layer: str | None = None):
    """A callable x -> (conv output, predictions), for flat and nested models; and the layer path used."""
    path = _resolve(model, layer)
    if len(path) == 1:
        return keras.Model(model.inputs, [model.get_layer(path[0]).output, model.output]), path
    nested = model.get_layer(path[0])
    inner, _ = gradient_model(nested, "/".join(path[1:]))

    def forward(x, training=False):
        features = None
        for item in model.layers:
            if isinstance(item, keras.layers.InputLayer):
                continue
            if item is nested:
                features, x = inner(x, training=training)
            else:
                x = item(x, training=training)
        return features, x

    return forward, path


def class_scores(predictions, class_index):
    """The score each image is explained for: the probability of its class (1 - p for class 0 of a sigmoid)."""
    if predictions.shape[-1] == 1:
        p = predictions[:, 0]
        return tf.where(class_index == 1, p, 1.0 - p)
    return tf.gather(predictions, class_index, axis=1, batch_dims=1)


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cam_function(model: keras.Model, layer: str | None, method: str):
    """A compiled (x, class_index) -> (maps, explained class, predictions) step, cached per model and layer."""
    cache = _COMPILED.setdefault(model, {})
    if (layer, method) in cache:
        return cache[(layer, method)]
    forward, path = gradient_model(model, layer)

    @tf.function(reduce_retracing=True)
    def step(x, class_index):
        with tf.GradientTape() as tape:
            features, predictions = forward(x, training=False)
            predictions = tf.cast(predictions, tf.float32)
            if predictions.shape[-1] == 1:
                predicted = tf.cast(predictions[:, 0] >= 0.5, tf.int32)
            else:
                predicted = tf.argmax(predictions, axis=1, output_type=tf.int32)
            index = tf.where(class_index < 0, predicted, class_index)
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

    cache[(layer, method)] = step
    return step


def compute_cams(model: keras.Model, images: np.ndarray, method: str = "gradcam", layer: str | None = None,
                 class_index: int | None = None, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heat maps (N, H, W) in 0..1 at the input size, the explained class per image and the predictions.

    `class_index` None explains the predicted class (binary sigmoid: 1 when p >= 0.5).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    _resolve(model, layer)
    n_out = model.output_shape[-1]
    if class_index is not None and not 0 <= class_index < max(n_out, 2):
        raise ValueError(f"class index {class_index} is out of range for a model with {n_out} output(s)")
    step = _cam_function(model, layer, method)
    cams, explained, outputs = [], [], []
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start : start + batch_size], dtype=tf.float32)
        wanted = tf.fill([tf.shape(x)[0]], -1 if class_index is None else int(class_index))
        cam, index, predictions = step(x, wanted)
        cams.append(cam.numpy())
        explained.append(index.numpy())
        outputs.append(predictions.numpy())
    return np.concatenate(cams), np.concatenate(explained), np.concatenate(outputs)


def pointing_game(cams: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: whether the heat map's peak falls inside the lesion mask ("hit"), and the share of the map's
    energy inside it. Images with an empty mask are left out (NaN)."""
    cams, masks = np.asarray(cams, dtype=float), np.asarray(masks, dtype=bool)
    flat = cams.reshape(len(cams), -1)
    peak = flat.argmax(axis=1)
    has_lesion = masks.reshape(len(masks), -1).any(axis=1)
    hit = masks.reshape(len(masks), -1)[np.arange(len(cams)), peak].astype(float)
    total = flat.sum(axis=1)
    inside = (flat * masks.reshape(len(masks), -1)).sum(axis=1)
    energy = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return {"hit": np.where(has_lesion, hit, np.nan), "energy": np.where(has_lesion, energy, np.nan)}


def border_mask(size: tuple[int, int], band: float = 0.125) -> np.ndarray:
    """True on the outer `band` share of each side: where borders, corners and burned-in text sit."""
    mask = np.ones(size, dtype=bool)
    dy, dx = max(1, round(band * size[0])), max(1, round(band * size[1]))
    mask[dy:-dy, dx:-dx] = False
    return mask


def border_check(cams: np.ndarray, explained: list[str], band: float = 0.125) -> dict:
    """The shortcut check: share of heat (and of peaks) in the image border, overall and per explained class,
    beside the border's share of the area (what heat spread evenly would give)."""
    mask = border_mask(cams.shape[1:3], band)
    result = pointing_game(cams, np.broadcast_to(mask, cams.shape))
    names = np.asarray(explained)
    per_class = {str(c): {"images": int((names == c).sum()), "energy_share": float(result["energy"][names == c].mean()),
                          "peak_share": float(result["hit"][names == c].mean())} for c in sorted(set(explained))}
    return {"band": band, "area_share": float(mask.mean()), "energy_share": float(result["energy"].mean()),
            "peak_share": float(result["hit"].mean()), "per_class": per_class}


def mean_maps(cams: np.ndarray, explained: list[str]) -> dict[str, np.ndarray]:
    """Per explained class, the average of its heat maps, each first scaled to sum 1: where a class looks on
    most images. A sharp spot off the lungs, the same for every image, is a shortcut's signature."""
    names = np.asarray(explained)
    totals = np.asarray(cams, dtype=np.float64).sum(axis=(1, 2), keepdims=True)
    shares = np.divide(cams, totals, out=np.zeros(np.shape(cams)), where=totals > 0)
    return {str(c): shares[names == c].mean(axis=0) for c in sorted(set(explained))}


def save_mean_maps(cams: np.ndarray, explained: list[str], path: str) -> dict[str, np.ndarray]:
    """`mean_maps` drawn as one figure at `path`, each panel titled with its class's image count."""
    from cxr_keras.evaluate import plots

    maps = mean_maps(cams, explained)
    plots.plot_mean_maps(maps, {c: list(explained).count(c) for c in maps}, path)
    return maps


def _probabilities(predictions: np.ndarray, output: str) -> np.ndarray:
    """(N, K) class probabilities from model outputs (a single sigmoid becomes two columns)."""
    from cxr_keras.evaluate.inference import softmax

    p = np.asarray(predictions, dtype=float)
    if output == "logits":
        p = 1 / (1 + np.exp(-p)) if p.shape[1] == 1 else softmax(p)
    return np.hstack([1 - p, p]) if p.shape[1] == 1 else p


def lesion_mask(image_path: str, size: tuple[int, int]) -> np.ndarray | None:
    """The union of the synthetic data's lesion masks for an image (`<class>/masks/<finding>/<name>`), resized
    to `size`; None when the image has none."""
    import glob
    import os

    from PIL import Image

    folder, name = os.path.split(image_path)
    pattern = os.path.join(os.path.dirname(folder), "masks", "*", name)
    masks = [np.asarray(Image.open(p).convert("L").resize(size[::-1], Image.NEAREST)) > 127
             for p in sorted(glob.glob(pattern))]
    return np.any(masks, axis=0) if masks else None


def box_masks(paths: list[str], boxes_csv: str, size: tuple[int, int], finding: str | None = None
              ) -> list[np.ndarray | None]:
    """Masks from NIH `BBox_List_2017.csv` boxes (x, y, w, h on the original 1024 x 1024 image), matched by file
    name and drawn at `size` (the images may be stored smaller: the box is scaled as a share of the side)."""
    import csv
    import os

    from cxr_keras.data.sources import _open_text

    boxes: dict[str, list[tuple[float, ...]]] = {}
    with _open_text(boxes_csv) as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if len(row) >= 6 and (finding is None or row[1] == finding):
                boxes.setdefault(row[0], []).append(tuple(float(v) / 1024 for v in row[2:6]))
    masks: list[np.ndarray | None] = []
    height, width = size
    for path in paths:
        found = boxes.get(os.path.basename(path))
        if not found:
            masks.append(None)
            continue
        mask = np.zeros(size, dtype=bool)
        for x, y, w, h in found:
            rows = slice(int(y * height), int(np.ceil((y + h) * height)))
            mask[rows, int(x * width) : int(np.ceil((x + w) * width))] = True
        masks.append(mask)
    return masks


def explain(model_path: str, paths: list[str], out: str, method: str = "gradcam", layer: str | None = None,
            class_index: int | None = None, masks: bool = False, batch_size: int = 16, preprocess: str | None = None,
            class_names: list[str] | None = None, figures: int = 24, boxes: str | None = None,
            box_finding: str | None = None) -> dict:
    """Grad-CAM for `paths`: per-image figures (the first `figures`), a contact sheet, each class's mean map,
    the raw maps (.npy) and, with `masks` (synthetic lesion masks) or `boxes` (NIH box CSV), the pointing game.
    Returns the summary written to gradcam.json."""
    import json
    import os

    from cxr_keras.data.pipeline import make_dataset
    from cxr_keras.data.table import write_dropped
    from cxr_keras.data.verify import verify_files
    from cxr_keras.evaluate import plots
    from cxr_keras.evaluate.inference import describe_model, feed
    from cxr_keras.io_utils import atomic_writer
    from cxr_keras.models.saving import load_model

    model, metadata = load_model(model_path, compile=False)
    spec = describe_model(model, metadata, class_names=class_names, preprocess=preprocess)
    paths, dropped = verify_files(paths)  # as every command does: a bad file is reported, never met mid-batch
    if dropped:
        write_dropped(dropped, os.path.join(out, "dropped.csv"))
        print(f"{len(dropped)} unreadable files left out (e.g. {dropped[0].path}: {dropped[0].reason}); "
              f"see {os.path.join(out, 'dropped.csv')}")
    if not paths:
        raise ValueError(f"none of the images can be read; see {os.path.join(out, 'dropped.csv')}")
    raw = np.concatenate([x.numpy() for x, _ in make_dataset(paths, np.zeros((len(paths), 1)), spec.image_size,
                                                              batch_size, cache=None)])
    fed = np.asarray(feed(tf.constant(raw), spec))
    cams, explained, predictions = compute_cams(model, fed, method, layer, class_index, batch_size)
    os.makedirs(out, exist_ok=True)
    with atomic_writer(os.path.join(out, "cams.npy"), "wb") as f:
        np.save(f, cams.astype(np.float32))
    names = spec.classes
    probabilities = _probabilities(predictions, spec.output)
    captions = []
    for i, path in enumerate(paths):
        k = int(explained[i])
        p = probabilities[i, k]
        captions.append(f"{os.path.basename(path)}: {names[k]} {p:.2f}")
        if i < figures:
            plots.plot_gradcam(raw[i], cams[i], f"{method}, {captions[-1]}",
                               os.path.join(out, f"{i:04d}_{os.path.splitext(os.path.basename(path))[0]}.png"))
    plots.plot_contact_sheet(raw, cams, captions, os.path.join(out, "contact_sheet.png"))
    summary: dict = {"method": method, "layer": "/".join(_resolve(model, layer)), "n_images": len(paths),
                     "dropped": len(dropped),
                     "explained": [names[int(k)] for k in explained], "cams": "cams.npy"}
    save_mean_maps(cams, summary["explained"], os.path.join(out, "mean_by_class.png"))
    summary["border"] = border_check(cams, summary["explained"])
    if masks or boxes:
        found = (box_masks(paths, boxes, spec.image_size, box_finding) if boxes
                 else [lesion_mask(p, spec.image_size) for p in paths])
        with_mask = [i for i, m in enumerate(found) if m is not None and m.any()]
        if with_mask:
            result = pointing_game(cams[with_mask], np.stack([found[i] for i in with_mask]))
            summary["pointing_game"] = {"images_with_lesion": len(with_mask),
                                        "hit_rate": float(np.mean(result["hit"])),
                                        "energy_inside": float(np.mean(result["energy"]))}
        else:
            summary["pointing_game"] = {"images_with_lesion": 0}
    with atomic_writer(os.path.join(out, "gradcam.json")) as f:
        json.dump(summary, f, indent=2)
    return summary
