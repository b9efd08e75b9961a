"""Batch prediction from a .keras model, a SavedModel folder or a .tflite file, into a CSV.

    python -m cxr_keras.predict --model saved_models/NAME/model_int8.tflite --images DIR --out predictions.csv

One row per image: path, the probability of each class, the decision at the model card's threshold, the
out-of-distribution score and flag, and an error column for files that could not be read or are above the pixel
limit (the run goes on). `flag` is empty for an accepted film, `input:<check>` when a cheap check before the model
fails (data/input_checks.py: colour, inverted, blank, saturated, aspect, tiny), or `ood` when the model's own
score (models/ood.py) is above the card's threshold; `--on-flag skip` writes `abstain` as the decision of a
flagged film. An exported
artifact is checked against its model_card.json (listed, same SHA-256) before anything of it is loaded. For
.tflite models this module imports neither TensorFlow nor Keras: it runs with ai-edge-litert, numpy, Pillow and
pydicom alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np

from cxr_keras.config import DEFAULT_MAX_PIXELS
from cxr_keras.data.image_io import IMAGE_EXTENSIONS, read_bytes, read_gray
from cxr_keras.data.input_checks import failed_check
from cxr_keras.data.walk import Found, find_images
from cxr_keras.edge import CARD, TFLiteModel, to_pixels, verify_artifact
from cxr_keras.io_utils import atomic_writer, check_keras_archive, check_out

ON_FLAG = ("keep", "skip")


def find_metadata(model_path: str) -> tuple[dict, str | None]:
    """model_card.json beside an exported artifact (and the card's folder), or `<model>.json` beside a .keras
    file (and None: a run's model has no card)."""
    path = model_path.rstrip(os.sep)
    card_dir = os.path.dirname(os.path.abspath(path))
    for candidate in (os.path.join(card_dir, CARD), os.path.splitext(path)[0] + ".json"):
        if os.path.isfile(candidate):
            try:
                with open(candidate) as f:
                    metadata = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{candidate} is not valid JSON ({exc})") from None
            missing = [key for key in ("task", "classes") if not isinstance(metadata, dict) or not metadata.get(key)]
            if missing:
                raise ValueError(f"{candidate} has no {' or '.join(missing)}; it is not a model card of cxr_keras "
                                 "(re-export the model with `cxr export`)")
            return metadata, (card_dir if candidate.endswith(CARD) else None)
    raise ValueError(f"no model_card.json or {os.path.basename(model_path)} metadata beside {model_path}: classes "
                     "and threshold are unknown; export with `cxr export` or train with `cxr train`")


class Predictor:
    """Raw pixels in, probabilities out, whatever the artifact."""

    def __init__(self, model_path: str, threads: int = 2, verify: bool = True):
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"model {model_path} does not exist; give a .keras, SavedModel or .tflite path")
        if model_path.endswith(".keras"):
            check_keras_archive(model_path)
        self.metadata, card_dir = find_metadata(model_path)
        if card_dir and verify:
            verify_artifact(card_dir, self.metadata, model_path)
        elif card_dir:
            print(f"WARNING: --no-verify: {model_path} is NOT checked against {CARD}. A changed or foreign artifact "
                  "can give wrong answers, and a SavedModel can run any TensorFlow op.", file=sys.stderr)
        if model_path.endswith(".tflite"):
            model = TFLiteModel(model_path, threads)
            self.image_size, self._run = model.image_size, model.predict_scored
        elif os.path.isdir(model_path):
            tf = _tensorflow(model_path)

            serving = tf.saved_model.load(model_path).signatures["serving_default"]
            self.image_size = tuple(serving.structured_input_signature[1]["image"].shape[1:3])
            self._run = lambda x: _split(serving(image=tf.constant(x)))
        else:
            _tensorflow(model_path)
            from cxr_keras.models.saving import load_model

            model = load_model(model_path, compile=False, ood=True)[0]
            self.image_size = tuple(model.input_shape[1:3])
            self._run = lambda x: _split(model(x, training=False))
        self.ood_threshold = (self.metadata.get("ood") or {}).get("threshold")

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, outputs) probabilities of (N, H, W, 1) raw pixels, and their (N,) out-of-distribution scores (None
        for a model that has none)."""
        probabilities, ood = self._run(images.astype(np.float32))
        return (np.asarray(probabilities, dtype=np.float64),
                None if ood is None or self.ood_threshold is None else np.asarray(ood, dtype=np.float64).ravel())


def _split(outputs) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, ood score or None) of what a Keras model or SavedModel signature returned (a dict when the
    model has the score: Keras names its outputs "probabilities" and "ood_score")."""
    if isinstance(outputs, dict):
        if "probabilities" in outputs:
            ood = outputs.get("ood_score")
            return np.asarray(outputs["probabilities"]), None if ood is None else np.asarray(ood)
        return np.asarray(next(iter(outputs.values()))), None
    return np.asarray(outputs), None


def _tensorflow(model_path: str):
    """TensorFlow, for SavedModel and .keras models; a device without it is told to use a .tflite file."""
    try:
        import tensorflow as tf
    except ModuleNotFoundError:
        raise ValueError(f"{model_path} needs TensorFlow, which this install does not have (the edge install runs "
                         ".tflite models only); export one with `cxr export --formats tflite-int8`") from None
    return tf


def image_paths(items: list[str]) -> list[str]:
    """Files as given; image files found recursively under folders (data/walk.py: by extension or content, links
    followed, lung-mask and hidden folders skipped, said once on stderr)."""
    paths, skipped = [], []
    for item in items:
        if not os.path.isdir(item):
            paths.append(item)
            continue
        found = find_images(item)
        paths += found.images
        skipped += found.skipped
    if skipped:
        print(f"note: {Found(skipped=skipped).skipped_text()}", file=sys.stderr)
    return paths


def predict_files(model_path: str, images: list[str], out_csv: str, batch_size: int = 16, threads: int = 2,
                  verify: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, on_flag: str = "keep") -> dict:
    """Write predictions.csv; returns counts of images predicted, resized (another size than the model's: said
    once on stderr), flagged and failed."""
    if on_flag not in ON_FLAG:
        raise ValueError(f"--on-flag must be one of {', '.join(ON_FLAG)}, got {on_flag!r}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    missing = [item for item in images if not os.path.exists(item)]
    if missing:
        raise FileNotFoundError(f"--images {missing[0]} does not exist")
    paths = image_paths(images)
    if not paths:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}, or DICOM by content) in "
                         f"{' '.join(images)}")
    predictor = Predictor(model_path, threads, verify)
    meta = predictor.metadata
    if predictor.ood_threshold is None:
        print(f"note: {model_path} has no out-of-distribution score (a model evaluated before the score existed, "
              "or one not made here); ood_score stays empty and only the input checks flag films. Re-run "
              "`cxr evaluate --run` on its run, and export again, to add it", file=sys.stderr)
    classes, task, threshold = meta["classes"], meta["task"], artifact_threshold(meta, model_path)
    height, width = predictor.image_size
    resize = (meta.get("input") or {}).get("resize", "stretch")
    rows, failed, resized, flagged = [], 0, 0, 0
    order = {path: k for k, path in enumerate(paths)}
    for start in range(0, len(paths), batch_size):
        batch, readable, reasons = [], [], []
        for path in paths[start : start + batch_size]:
            try:
                data = read_bytes(path)
                image = read_gray(data, max_pixels)
            except Exception as exc:  # any unreadable file: reported in its row, the run goes on
                failed += 1
                rows.append({"path": path, "error": str(exc) if isinstance(exc, ValueError) else
                             f"{type(exc).__name__}: {exc}"})
                continue
            if image.shape != (height, width):
                if not resized:  # said once, not once per image
                    how = "stretched" if resize == "stretch" else "fitted and padded"
                    print(f"note: {path} is {image.shape[1]}x{image.shape[0]} px; images of another size than the "
                          f"model's {width}x{height} are {how} to it, as in training", file=sys.stderr)
                resized += 1
            batch.append(to_pixels(image, predictor.image_size, resize))
            readable.append(path)
            failed_input = failed_check(image, data)
            reasons.append(f"input:{failed_input}" if failed_input else "")
        if batch:
            probabilities, ood = predictor.predict(np.stack(batch))
            for k, (path, output) in enumerate(zip(readable, probabilities)):
                row = {"path": path, **_decision(output, classes, task, threshold, meta), "error": ""}
                if ood is not None:
                    row["ood_score"] = float(ood[k])
                row["flag"] = reasons[k] or ("ood" if ood is not None and ood[k] > predictor.ood_threshold else "")
                if row["flag"]:
                    flagged += 1
                    if on_flag == "skip":
                        row["decision"] = "abstain"
                rows.append(row)
    fields = ["path", *[f"p_{c}" for c in classes], "decision", "ood_score", "flag", "error"]
    with atomic_writer(out_csv, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda row: order[row["path"]]))  # the order the images were given
    return {"images": len(paths), "predicted": len(paths) - failed, "failed": failed, "resized": resized,
            "flagged": flagged}


def artifact_threshold(card: dict, model_path: str) -> float | np.ndarray:
    """The artifact's own threshold when export recalibrated one for it, else the model's (multi-label: one per
    finding)."""
    name = os.path.basename(model_path.rstrip(os.sep))
    own = [a["threshold"] for a in card.get("artifacts", {}).values() if a.get("file") == name and "threshold" in a]
    value = own[0] if own else card.get("threshold", 0.5)
    return np.asarray(value, dtype=float) if isinstance(value, list) else float(value)


def _decision(output: np.ndarray, classes: list[str], task: str, threshold: float | np.ndarray, meta: dict
              ) -> dict:
    if task == "binary":
        positive = meta.get("positive_class") or classes[-1]
        negative = [c for c in classes if c != positive][0]
        p = float(output[0])
        return {f"p_{positive}": p, f"p_{negative}": 1 - p, "decision": positive if p >= threshold else negative}
    probabilities = {f"p_{c}": float(v) for c, v in zip(classes, output)}
    if task == "multiclass":
        return {**probabilities, "decision": classes[int(np.argmax(output))]}
    cuts = np.broadcast_to(threshold, (len(classes),))
    return {**probabilities, "decision": "|".join(c for c, v, t in zip(classes, output, cuts) if v >= t)}


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `cxr predict` and `python -m cxr_keras.predict`."""
    parser.add_argument("--model", required=True, help=".keras file, SavedModel folder or .tflite file")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders (recursive)")
    parser.add_argument("--out", default="predictions.csv", help="the CSV to write (default predictions.csv)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads (default 2)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images above this many pixels (default {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--overwrite", action="store_true", help="write over an existing --out file")
    parser.add_argument("--on-flag", choices=ON_FLAG, default="keep",
                        help="what the decision column says for a flagged film (flag column: input:<check> or ood): "
                             "keep its decision (default) or skip it (decision 'abstain')")
    parser.add_argument("--no-verify", action="store_true",
                        help="run an exported artifact that does not match its model_card.json (not advised)")


def main(argv: list[str] | None = None) -> int:
    prog = "cxr-predict" if os.path.basename(sys.argv[0]) == "cxr-predict" else "python -m cxr_keras.predict"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_predict_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Predict as the parsed options say; 0, or 2 with one line on stderr for an expected failure."""
    try:
        check_out(args.out, args.overwrite, folder=False, data=args.images)
        counts = predict_files(args.model, args.images, args.out, args.batch_size, args.threads,
                               verify=not args.no_verify, max_pixels=args.max_pixels, on_flag=args.on_flag)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{counts['predicted']} of {counts['images']} images predicted ({counts['resized']} resized, "
          f"{counts['flagged']} flagged: see the flag column), {counts['failed']} unreadable (see the error column) "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
