"""The failure grid of an evaluation: the most confident mistakes, with Grad-CAM where the model allows it."""

from __future__ import annotations

import os

import keras
import numpy as np

from cxr_keras.data.pipeline import make_dataset
from cxr_keras.data.table import ImageTable
from cxr_keras.evaluate import plots
from cxr_keras.evaluate.metrics import predictions
from cxr_keras.models.contract import ModelSpec, feed


def failure_grid(table: ImageTable, spec: ModelSpec, y: np.ndarray, scores: np.ndarray, threshold: float,
                 path: str, count: int = 8, model: keras.Model | None = None) -> list[dict]:
    """The most confident mistakes (binary and multi-label: half false positives, half false negatives when both
    exist), drawn as a grid and as one tile each in a `failures/` folder beside it (with `model`, each with its
    Grad-CAM overlay); returns their file, kind, truth, decision, score and tile."""
    if spec.task == "multiclass":
        decided, actual = scores.argmax(axis=1), y.argmax(axis=1)
        wrong, col_of = np.flatnonzero(decided != actual), {}
        confidence = scores.max(axis=1)[wrong]
        kinds = np.full(len(wrong), "mistake")
        describe = lambda i: (spec.classes[actual[i]], spec.classes[decided[i]], float(scores[i].max()))  # noqa: E731
    else:
        s2, y2 = scores.reshape(len(scores), -1), y.reshape(len(y), -1)
        pred = predictions("binary" if spec.task == "binary" else "multilabel", s2, threshold)
        rows, cols = np.nonzero(pred != y2)
        wrong = rows
        cut = np.broadcast_to(np.asarray(threshold, dtype=float).reshape(-1), (s2.shape[1],))
        confidence = np.abs(s2[rows, cols] - cut[cols])
        kinds = np.where(pred[rows, cols] > 0.5, "false positive", "false negative")
        names = [spec.classes[spec.positive_index]] if spec.task == "binary" else spec.classes
        col_of = dict(zip(rows.tolist(), cols.tolist()))
        label = (lambda v: binary_class(spec, v)) if spec.task == "binary" else None  # multi-label: finding=0/1
        describe = lambda i: (*(label(v) if label else f"{names[col_of[i]]}={int(v)}"  # noqa: E731
                                for v in (y2[i, col_of[i]], pred[i, col_of[i]])), float(s2[i, col_of[i]]))
    chosen = _most_confident(wrong, kinds, confidence, count)
    entries = []
    for i, kind in chosen:
        true, predicted, score = describe(i)
        entries.append({"path": table.paths[i], "kind": kind, "true": true, "predicted": predicted, "score": score})
    rows = [i for i, _ in chosen]
    pixels = load_pixels([table.paths[i] for i in rows], spec)
    captions = [f"{os.path.basename(e['path'])}\ntrue {e['true']}, predicted {e['predicted']} ({e['score']:.2f})"
                for e in entries]
    cams, note = failure_cams(model, spec, pixels, [col_of.get(i, 0) for i in rows] if spec.task != "multiclass"
                              else None) if model is not None and rows else (None, "")
    plots.plot_failures(pixels, captions, path, cams=cams, note=note)
    folder = os.path.join(os.path.dirname(path), "failures")
    for entry, tile in zip(entries, write_tiles(pixels, cams, folder)):
        entry["tile"], entry["cam"] = os.path.join("failures", os.path.basename(tile)), cams is not None
    return entries


def _most_confident(wrong: np.ndarray, kinds: np.ndarray, confidence: np.ndarray, count: int) -> list[tuple]:
    """(row, kind) of the `count` most confident mistakes, each kind given an equal share that the other kinds
    fill when it has fewer; one entry per image, kinds in order, most confident first within a kind."""
    seen, by_kind = set(), {}
    for k in np.argsort(-confidence, kind="stable"):
        if wrong[k] not in seen:
            seen.add(wrong[k])
            by_kind.setdefault(str(kinds[k]), []).append(int(wrong[k]))
    share = dict.fromkeys(by_kind, 0)
    for _ in range(count):
        open_kinds = [kind for kind in sorted(by_kind) if share[kind] < len(by_kind[kind])]
        if not open_kinds:
            break
        share[min(open_kinds, key=share.get)] += 1
    return [(row, kind) for kind, rows in sorted(by_kind.items()) for row in rows[:share[kind]]]


def binary_class(spec: ModelSpec, positive: float) -> str:
    """The class name of a binary model's 0/1 label or decision."""
    return spec.classes[spec.positive_index if positive > 0.5 else 1 - spec.positive_index]


def load_pixels(paths: list[str], spec: ModelSpec) -> np.ndarray:
    """(N, H, W, 1) pixels 0..255 of files as the model sees them (decoded and resized by the pipeline)."""
    if not paths:
        return np.zeros((0, *spec.image_size, 1))
    images = make_dataset(paths, np.zeros((len(paths), 1)), spec.image_size, len(paths), cache=None)
    return next(iter(images))[0].numpy()


def write_tiles(pixels: np.ndarray, cams: np.ndarray | None, folder: str) -> list[str]:
    """One PNG per image (with its Grad-CAM overlay when `cams`), NN.png in `folder`, replacing earlier tiles."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".png") and name[:-4].isdigit():
            os.remove(os.path.join(folder, name))
    return [plots.save_tile(image, None if cams is None else cams[k], os.path.join(folder, f"{k:02d}.png"))
            for k, image in enumerate(pixels)]


def failure_cams(model: keras.Model, spec: ModelSpec, pixels: np.ndarray, columns: list[int] | None
                 ) -> tuple[np.ndarray | None, str]:
    """Grad-CAM maps of the mistakes: for a binary or multi-label model, of the finding each got wrong (what
    drives its score up, be it a false alarm or a weak miss); for a multi-class one, of the predicted class.
    (None, why) when the model gives Grad-CAM nothing to work on; never fails the evaluation."""
    from cxr_keras.evaluate.gradcam import compute_cams

    x = np.asarray(feed(pixels.astype("float32"), spec))
    logits = spec.output == "logits"
    try:
        if columns is None:
            return compute_cams(model, x, logits=logits)[0], "Grad-CAM of the predicted class"
        if spec.task == "binary":
            index = spec.positive_index if model.output_shape[-1] == 2 else 1
            return compute_cams(model, x, class_index=index, logits=logits)[0], (
                f"Grad-CAM of {spec.classes[spec.positive_index]}: what raises its score")
        maps = [compute_cams(model, x[k:k + 1], class_index=c, logits=logits)[0][0] for k, c in enumerate(columns)]
        return np.stack(maps), "Grad-CAM of the finding each image got wrong"
    except Exception as exc:  # a foreign model Grad-CAM cannot open: the grid is still worth having
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]  # tf.function: the last line
        reason = lines[-1].removeprefix("ValueError: ") if lines else type(exc).__name__
        return None, f"no Grad-CAM: {reason[:110]}"
