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
    """The most confident mistakes, drawn as a grid (with `model`, each with its Grad-CAM overlay); returns
    their file names, truth and scores."""
    if spec.task == "multiclass":
        decided, actual = scores.argmax(axis=1), y.argmax(axis=1)
        wrong, col_of = np.flatnonzero(decided != actual), {}
        confidence = scores.max(axis=1)[wrong]
        describe = lambda i: (spec.classes[actual[i]], spec.classes[decided[i]], float(scores[i].max()))  # noqa: E731
    else:
        s2, y2 = scores.reshape(len(scores), -1), y.reshape(len(y), -1)
        pred = predictions("binary" if spec.task == "binary" else "multilabel", s2, threshold)
        rows, cols = np.nonzero(pred != y2)
        wrong = rows
        cut = np.broadcast_to(np.asarray(threshold, dtype=float).reshape(-1), (s2.shape[1],))
        confidence = np.abs(s2[rows, cols] - cut[cols])
        names = [spec.classes[spec.positive_index]] if spec.task == "binary" else spec.classes
        col_of = dict(zip(rows.tolist(), cols.tolist()))
        describe = lambda i: (f"{names[col_of[i]]}={int(y2[i, col_of[i]])}",  # noqa: E731
                              f"{names[col_of[i]]}={int(pred[i, col_of[i]])}", float(s2[i, col_of[i]]))
    chosen = [int(i) for i in wrong[np.argsort(-confidence)][:count]]
    chosen = list(dict.fromkeys(chosen))
    entries = []
    for i in chosen:
        true, predicted, score = describe(i)
        entries.append({"path": table.paths[i], "true": true, "predicted": predicted, "score": score})
    if chosen:
        images = make_dataset([table.paths[i] for i in chosen], np.zeros((len(chosen), 1)), spec.image_size,
                              len(chosen), cache=None)
        pixels = next(iter(images))[0].numpy()
    else:
        pixels = np.zeros((0, *spec.image_size, 1))
    captions = [f"{os.path.basename(e['path'])}\ntrue {e['true']}, predicted {e['predicted']} ({e['score']:.2f})"
                for e in entries]
    cams, note = failure_cams(model, spec, pixels, [col_of.get(i, 0) for i in chosen] if spec.task != "multiclass"
                              else None) if model is not None and chosen else (None, "")
    plots.plot_failures(pixels, captions, path, cams=cams, note=note)
    return entries


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
