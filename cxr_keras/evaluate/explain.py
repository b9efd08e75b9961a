"""`cxr gradcam`'s workflow: heat maps for a folder of images, their figures, and the checks of where they look."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from cxr_keras.data.masks import box_masks, lesion_mask
from cxr_keras.evaluate.gradcam import compute_cams, layer_path
from cxr_keras.evaluate.localisation import border_check, pointing_game, save_mean_maps
from cxr_keras.models.contract import ModelSpec, describe_model, feed, softmax


@dataclasses.dataclass
class ExplainOptions:
    """What to explain and how; the defaults explain each image's decided class with Grad-CAM."""

    method: str = "gradcam"
    layer: str | None = None
    class_index: int | None = None
    threshold: float | None = None  # binary models: the decision's cut (default: the model's own, else 0.5)
    preprocess: str | None = None  # foreign models: what their pixels must look like
    class_names: list[str] | None = None
    batch_size: int = 16
    figures: int = 24
    masks: bool = False  # the synthetic data's lesion masks: pointing game
    boxes: str | None = None  # NIH's BBox_List_2017.csv: pointing game
    box_finding: str | None = None


def explain(model_path: str, paths: list[str], out: str, options: ExplainOptions | None = None,
            loaded: tuple | None = None, truths: dict[str, str] | None = None) -> dict:
    """Grad-CAM for `paths`: per-image figures (the first `options.figures`), a contact sheet, each class's mean
    map, the raw maps (.npy), the border check and, with lesion masks or boxes, the pointing game. Returns the
    summary written to gradcam.json. `loaded`: (model, metadata) of `model_path` when the caller has them;
    `truths`: path -> true label, shown in the captions beside the explained class."""
    from cxr_keras.data.pipeline import make_dataset
    from cxr_keras.data.table import write_dropped
    from cxr_keras.data.verify import verify_files
    from cxr_keras.evaluate import plots
    from cxr_keras.io_utils import atomic_writer
    from cxr_keras.models.saving import load_model

    options = options or ExplainOptions()
    model, metadata = loaded or load_model(model_path, compile=False)
    if metadata and (options.preprocess or options.class_names):
        given = "--preprocess" if options.preprocess else "--class-names"
        raise ValueError(f"{given}: only for a foreign model; {model_path} has its own metadata "
                         f"({os.path.basename(model_path).rsplit('.', 1)[0]}.json), which says its classes and input")
    spec = describe_model(model, metadata, class_names=options.class_names, preprocess=options.preprocess)
    threshold = _binary_threshold(spec, options.threshold)
    layer = layer_path(model, options.layer)  # a bad --layer is refused before anything is written
    if metadata and metadata.get("ensemble") and options.layer is None:
        print(f"An ensemble: the maps are of {layer[0]} (its share of the average), one member of "
              f"{len(metadata['ensemble'])}; --layer member_0/LAYER explains another")
    paths, dropped = verify_files(paths)  # as every command does: a bad file is reported, never met mid-batch
    if dropped:
        write_dropped(dropped, os.path.join(out, "dropped.csv"))
        print(f"{len(dropped)} unreadable files left out (e.g. {dropped[0].path}: {dropped[0].reason}); "
              f"see {os.path.join(out, 'dropped.csv')}")
    if not paths:
        raise ValueError(f"none of the images can be read; see {os.path.join(out, 'dropped.csv')}")
    raw = np.concatenate([x.numpy() for x, _ in make_dataset(paths, np.zeros((len(paths), 1)), spec.image_size,
                                                              options.batch_size, cache=None)])
    fed = np.asarray(feed(tf.constant(raw), spec))
    cams, explained, predictions = compute_cams(
        model, fed, options.method, options.layer, options.class_index, options.batch_size, threshold=threshold,
        logits=spec.output == "logits", positive_index=spec.positive_index, exclusive=spec.task != "multilabel")
    os.makedirs(out, exist_ok=True)
    with atomic_writer(os.path.join(out, "cams.npy"), "wb") as f:
        np.save(f, cams.astype(np.float32))
    names = spec.classes
    probabilities = class_probabilities(predictions, spec)
    captions = []
    for i, path in enumerate(paths):
        k = int(explained[i])
        true = f"true {truths[path]}, " if truths and path in truths else ""
        captions.append(f"{os.path.basename(path)}: {true}{names[k]} {probabilities[i, k]:.2f}")
        if i < options.figures:
            plots.plot_gradcam(raw[i], cams[i], f"{options.method}, {captions[-1]}",
                               os.path.join(out, f"{i:04d}_{os.path.splitext(os.path.basename(path))[0]}.png"))
    plots.plot_contact_sheet(raw, cams, captions, os.path.join(out, "contact_sheet.png"))
    summary: dict = {"method": options.method, "layer": "/".join(layer),
                     "n_images": len(paths), "dropped": len(dropped), "threshold": threshold,
                     "explained": [names[int(k)] for k in explained], "cams": "cams.npy"}
    save_mean_maps(cams, summary["explained"], os.path.join(out, "mean_by_class.png"))
    summary["border"] = border_check(cams, summary["explained"])
    if options.masks or options.boxes:
        summary["pointing_game"] = _pointing_game(cams, paths, spec, options)
    with atomic_writer(os.path.join(out, "gradcam.json")) as f:
        json.dump(summary, f, indent=2)
    return summary


def _binary_threshold(spec: ModelSpec, given: float | None) -> float:
    """The cut that decides a binary model's explained class: `given`, else the model's own; 0.5 for others."""
    if given is not None:
        if spec.task != "binary":
            raise ValueError(f"--threshold decides a binary model's explained class; this {spec.task} model "
                             "explains its top-scoring class (or --class-index)")
        from cxr_keras.models.foreign import check_threshold

        check_threshold(given, spec, "--threshold")
        return float(given)
    return float(spec.threshold) if spec.task == "binary" and np.ndim(spec.threshold) == 0 else 0.5


def class_probabilities(predictions: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(N, K) probabilities in the model's class order from its outputs (a single sigmoid becomes two columns)."""
    p = np.asarray(predictions, dtype=float)
    if spec.output == "logits":
        exclusive = spec.task == "multiclass" or spec.two_column_binary
        p = softmax(p) if exclusive else 1 / (1 + np.exp(-p))
    return np.hstack([1 - p, p]) if p.shape[1] == 1 else p


def _pointing_game(cams: np.ndarray, paths: list[str], spec: ModelSpec, options: ExplainOptions) -> dict:
    found = (box_masks(paths, options.boxes, spec.image_size, options.box_finding) if options.boxes
             else [lesion_mask(p, spec.image_size) for p in paths])
    with_mask = [i for i, m in enumerate(found) if m is not None and m.any()]
    if not with_mask:
        return {"images_with_lesion": 0}
    result = pointing_game(cams[with_mask], np.stack([found[i] for i in with_mask]))
    return {"images_with_lesion": len(with_mask), "hit_rate": float(np.mean(result["hit"])),
            "energy_inside": float(np.mean(result["energy"]))}
