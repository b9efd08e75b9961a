"""Export for deployment: SavedModel and TFLite (fp32, fp16, dynamic-range, full int8), a model card with
hashes, and a parity report that proves each artifact still performs.

Conversion goes through the SavedModel (`model.export`, then `TFLiteConverter.from_saved_model`), the path that
works for Keras 3 models. Every artifact is fed raw (1, H, W, 1) pixels in 0..255: the preprocessing is inside.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from cxr_keras.choices import EXPORT_FORMATS
from cxr_keras.display import threshold_text
from cxr_keras.edge import ArtifactError, TFLiteModel, sha256, verify_artifact
from cxr_keras.io_utils import atomic_writer, publish_mode
from cxr_keras.models.foreign import ForeignOptions
from cxr_keras.models.ood import classifier_only, has_ood, split_outputs

FORMATS = EXPORT_FORMATS
# Ops tflite-int8-mixed keeps in float: the sigmoid and product of swish (EfficientNet) and of squeeze-and-excite
# gates, which 8-bit activations represent badly.
FLOAT_OPS = ("LOGISTIC", "MUL")
INTENDED_USE = ("Research and engineering evaluation of chest X-ray classifiers. Not a medical device: it has not "
                "been cleared for diagnosis, and its outputs must not guide patient care.")


class ExportError(ValueError):
    """An export cannot be made as asked; the message says why and what to do."""


def export_savedmodel(model, path: str) -> str:
    """Keras 3 `model.export` (serving signature 'serving_default' with the input named 'image'), atomically."""
    tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".savedmodel-")
    try:
        model.export(tmp, format="tf_saved_model", verbose=False)
        publish_mode(tmp, path)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def convert_tflite(savedmodel: str, kind: str, calibration: np.ndarray | None = None, int8_io: str = "float",
                   clahe: bool = False) -> bytes:
    """TFLite flatbuffer of one kind: fp32, fp16, dynamic, int8 (full integer, calibrated on `calibration`) or
    int8-mixed (int8 calibrated the same way, with the FLOAT_OPS and, for a model with one (`clahe`), the CLAHE
    layer kept in float)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(savedmodel)
    if kind == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif kind in ("int8", "int8-mixed"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in calibration)
        if kind == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io != "float":
            converter.inference_input_type = converter.inference_output_type = getattr(tf, int8_io)
    if kind == "int8-mixed":
        return _selectively_quantized(converter, calibration, _clahe_nodes(savedmodel) if clahe else [])
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError and friends with the op names in the text
        ops = sorted({word.strip(",.'\"") for word in str(exc).split() if word.startswith(("tf.", "TF", "Flex"))})
        raise ExportError(f"TFLite {kind} conversion failed{' on ops ' + ', '.join(ops) if ops else ''}: "
                          f"{str(exc).strip().splitlines()[0]}") from None


def _selectively_quantized(converter, calibration: np.ndarray, nodes: list[str]) -> bytes:
    """int8 with FLOAT_OPS and `nodes` left in float, through TFLite's QuantizationDebugger (the documented way
    to exclude ops from quantization; the converter itself has no such option)."""
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS), denylisted_nodes=nodes)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=converter.representative_dataset, debug_options=options)
    return debugger.get_nondebug_quantized_model()


def with_strange_copies(calibration: np.ndarray) -> np.ndarray:
    """int8 calibration images plus inverted and upside-down copies of a quarter of them each. Calibration sets
    each tensor's int8 range from what it sees; from in-distribution films alone, the out-of-distribution score's
    range ends below its own threshold and no film could ever be flagged on the device. The copies carry the
    range past it (what they cost the classifier's ranges shows in the parity report)."""
    return np.concatenate([calibration, 255 - calibration[::4], calibration[1::4, ::-1]]).astype(np.float32)


def clahe_layers(model) -> list:
    """The model's CLAHE layers, nested models (an ensemble's members) searched too."""
    from cxr_keras.models.clahe import CLAHE

    found = []
    for layer in model.layers:
        found += [layer] if isinstance(layer, CLAHE) else clahe_layers(layer) if hasattr(layer, "layers") else []
    return found


def _clahe_nodes(savedmodel: str) -> list[str]:
    """The TFLite tensors of the model's CLAHE layer: quantised, its grey levels and per-pixel interpolation
    weights come out some levels off (docs/export.md); in float it is exact."""
    float_model = tf.lite.TFLiteConverter.from_saved_model(savedmodel).convert()
    from ai_edge_litert.interpreter import Interpreter

    return [t["name"] for t in Interpreter(model_content=float_model).get_tensor_details() if "cxr_clahe" in t["name"]]


def calibration_images(paths: list[str], size: tuple[int, int], count: int) -> np.ndarray:
    """`count` images for int8 calibration, spread evenly over `paths`."""
    if len(paths) < count:
        raise ExportError(f"int8 calibration asks for {count} images but the calibration data has {len(paths)}; "
                          "give more images or a smaller --calibration-count")
    from cxr_keras.data.decode import decode_all

    chosen = [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]
    return decode_all(chosen, size).astype(np.float32)


def export_model(model_path: str, out: str, formats: list[str], calibration_paths: list[str] | None = None,
                 calibration_count: int = 200, int8_io: str = "float", foreign: ForeignOptions | None = None,
                 loaded: tuple | None = None) -> dict:
    """Write the artifacts and model_card.json into `out`; returns the card.

    Everything is built in a temporary folder beside `out` and swapped in whole at the end, so a killed export
    leaves the previous one intact and a folder never holds an artifact its card does not describe. An existing
    `out` is replaced only if it is an export (has a model_card.json) or empty. A foreign model (no metadata) is
    exported wrapped to take raw pixels, as `foreign` describes it (cxr_keras/models/foreign.py). `loaded`:
    `load_for_export`'s (model, metadata) when the caller has them."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ExportError(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    model, metadata = loaded or load_for_export(model_path, foreign)
    size = tuple(model.input_shape[1:3])
    calibration = None
    if "tflite-int8" in formats or "tflite-int8-mixed" in formats:
        if not calibration_paths:
            raise ExportError("tflite-int8 needs --calibration-data: a folder of representative images")
        calibration = calibration_images(calibration_paths, size, calibration_count)
    _check_replaceable(out)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(out))}.export-")
    try:
        card = _write_artifacts(model, metadata, work, formats, calibration, calibration_count, int8_io)
        publish_mode(work, out)
        _swap_in(work, out)
    except KeyboardInterrupt:
        had = os.path.isfile(os.path.join(out, "model_card.json"))
        print(f"\nExport interrupted: {out} is as it was ({'previous export kept' if had else 'nothing written'}).",
              file=sys.stderr)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return card


def load_for_export(model_path: str, foreign: ForeignOptions | None = None) -> tuple:
    """The model as it is exported (raw pixels in; probabilities, and the out-of-distribution score when it has
    one, out) and its metadata."""
    from cxr_keras.models.foreign import prepare
    from cxr_keras.models.saving import load_model

    return prepare(*load_model(model_path, compile=False, ood=True), foreign)


def _check_replaceable(out: str) -> None:
    if os.path.isfile(out):
        raise ExportError(f"--out {out} is a file; give a folder for the export")
    if os.path.isdir(out) and os.listdir(out) and not os.path.isfile(os.path.join(out, "model_card.json")):
        raise ExportError(f"--out {out} holds files but no model_card.json, so it is not an export to replace; "
                          "choose a new folder")


def _swap_in(work: str, out: str) -> None:
    """Move the finished export to `out`; an older export there is renamed aside first, then deleted."""
    old = None
    if os.path.exists(out):
        old = f"{work}.old"
        os.replace(out, old)
    os.replace(work, out)
    if old:
        shutil.rmtree(old)


def _write_artifacts(model, metadata, out: str, formats: list[str], calibration, calibration_count: int,
                     int8_io: str) -> dict:
    savedmodel = os.path.join(out, "savedmodel")
    export_savedmodel(model, savedmodel)
    artifacts = {}
    has_clahe = bool(clahe_layers(model))
    if calibration is not None and has_ood(model):
        calibration = with_strange_copies(calibration)
    if "savedmodel" in formats:
        artifacts["savedmodel"] = "savedmodel"
    for fmt in formats:
        if fmt.startswith("tflite-"):
            kind = fmt.removeprefix("tflite-")
            name = f"model_{kind.replace('-', '_')}.tflite"
            flatbuffer = convert_tflite(savedmodel, kind, calibration, int8_io, clahe=has_clahe)
            with atomic_writer(os.path.join(out, name), "wb") as f:
                f.write(flatbuffer)
            artifacts[fmt] = name
    if "savedmodel" not in formats:
        shutil.rmtree(savedmodel)
    card = model_card(model, metadata, artifacts, out, calibration_count if calibration is not None else None, int8_io)
    with atomic_writer(os.path.join(out, "model_card.json")) as f:
        json.dump(card, f, indent=2)
    return card


def model_card(model, metadata: dict | None, artifacts: dict[str, str], out: str, calibration: int | None,
               int8_io: str) -> dict:
    """What a deployment needs to run the model correctly, and the hashes that tie the card to its files."""
    import keras

    import cxr_keras

    meta = metadata or {}
    return {
        "format": "cxr_keras.model_card/1",
        "task": meta.get("task"), "classes": meta.get("classes"), "positive_class": meta.get("positive_class"),
        "input": {"name": "image", "shape": [1, *model.input_shape[1:]], "dtype": "float32", "range": [0, 255],
                  "layout": "NHWC, single-channel grayscale", "resize": meta.get("input", {}).get("resize", "stretch"),
                  "preprocessing": _preprocessing(meta, model)},
        "output": {"activation": "softmax" if meta.get("task") == "multiclass" else "sigmoid",
                   "meaning": "probability per output (binary: of the positive class)"
                              + (f", {meta['calibration']['method']}-calibrated inside the model on "
                                 f"{meta['calibration']['fitted_on']}" if meta.get("calibration") else "")},
        "threshold": meta.get("threshold", 0.5), "threshold_rule": meta.get("threshold_rule", "default 0.5"),
        "validation_operating_point": meta.get("validation_operating_point"),
        "calibration": meta.get("calibration"),
        "ood": ({**meta["ood"], "output": "ood_score", "meaning": "Mahalanobis distance of the film's pooled "
                 "features to the nearest training class mean; above `threshold`: not the model's kind of film"}
                if meta.get("ood") and has_ood(model) else None),
        "backbone": meta.get("backbone"), "weights": meta.get("weights"), "foreign": meta.get("foreign"),
        "int8": {"calibration_images": calibration, "io": int8_io} if calibration else None,
        "artifacts": {fmt: {"file": name, "sha256": sha256(os.path.join(out, name)),
                            "bytes": _size(os.path.join(out, name))} for fmt, name in artifacts.items()},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                     "cxr_keras": cxr_keras.__version__},
        "intended_use": INTENDED_USE,
        "limitations": "Measured only on the data in the parity report; performance on other scanners, sites, "
                       "populations and views is unknown until measured there.",
    }


def _preprocessing(meta: dict, model) -> str:
    foreign = meta.get("foreign")
    if not foreign:
        clahe = clahe_layers(model)
        equalise = (f"CLAHE with clip limit {clahe[0].clip_limit:g} on {clahe[0].tiles[0]} x {clahe[0].tiles[1]} "
                    "tiles, " if clahe else "")
        return f"inside the model ({equalise}gray to RGB, the backbone's normalisation): feed raw pixels"
    steps = (["gray to RGB"] if foreign["input_channels"] == 3 else []) + (
        [f"'{foreign['preprocess']}' preprocessing"] if foreign["preprocess"] != "none" else [])
    return f"inside the exported graph ({', '.join(steps) or 'none'}), then the foreign model" + (
        f", its {foreign['output']} turned into probabilities" if foreign["output"] == "logits" else "")


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def verify_card(out: str) -> dict:
    """Read model_card.json and check every artifact's SHA-256; a mismatch is an error naming the file."""
    with open(os.path.join(out, "model_card.json")) as f:
        card = json.load(f)
    for fmt, entry in card["artifacts"].items():
        try:
            verify_artifact(out, card, entry["file"])
        except ArtifactError as exc:
            raise ExportError(f"({fmt}) {exc}") from None
    return card


def latency(predict_one, images: np.ndarray, runs: int = 30) -> dict[str, float]:
    """Mean and p95 single-image latency in milliseconds (after one warm-up call)."""
    predict_one(images[0])
    times = []
    for i in range(runs):
        start = time.perf_counter()
        predict_one(images[i % len(images)])
        times.append((time.perf_counter() - start) * 1000)
    return {"mean_ms": float(np.mean(times)), "p95_ms": float(np.percentile(times, 95))}


def parity_report(model_path: str, out: str, images: np.ndarray, y_true: np.ndarray, threads: int = 2,
                  recalibrate: bool = False, foreign: ForeignOptions | None = None, model=None) -> dict:
    """Each artifact against the Keras model on the same images: ROC-AUC, sensitivity/specificity at the card's
    threshold, accuracy, max |difference in probability|, size, latency; for binary models also each artifact's
    own threshold that keeps the Keras model's sensitivity, and the specificity there. With `recalibrate`, those
    thresholds go into the card (predict uses them). Writes export_report.json and README.md."""
    from cxr_keras.evaluate.metrics import evaluate_scores

    card = verify_card(out)
    if model is None:  # the model as exported (`load_for_export`), unless the caller has it loaded
        model, _ = load_for_export(model_path, foreign)
    reference, reference_ood = split_outputs(model.predict(images, batch_size=32, verbose=0))
    reference = reference.astype(np.float64)
    rows = {"keras": _row(card, reference, reference, y_true, _size(model_path),
                          latency(lambda x: model(x[None], training=False), images), evaluate_scores)}
    ood_threshold = (card.get("ood") or {}).get("threshold")
    for fmt, entry in card["artifacts"].items():
        path = os.path.join(out, entry["file"])
        if fmt == "savedmodel":
            serving = tf.saved_model.load(path).signatures["serving_default"]
            score_one = lambda x, s=serving: tuple(  # noqa: E731
                None if v is None else v[0] for v in split_outputs(s(image=tf.constant(x[None]))))
        else:
            score_one = TFLiteModel(path, threads).score_one
        scored = [score_one(x) for x in images]
        probabilities = np.stack([p for p, _ in scored]).astype(np.float64)
        rows[fmt] = _row(card, probabilities, reference, y_true, entry["bytes"], latency(score_one, images),
                         evaluate_scores)
        if ood_threshold is not None and reference_ood is not None and scored[0][1] is not None:
            rows[fmt]["ood_flag_agreement"] = float(np.mean(
                (np.array([o for _, o in scored], dtype=float) > ood_threshold) == (reference_ood > ood_threshold)))
        if card["task"] == "binary":
            rows[fmt]["recalibrated"] = recalibrated_point(y_true, probabilities[:, 0], rows["keras"]["sensitivity"])
            if recalibrate and fmt.startswith("tflite-"):
                entry["threshold"] = rows[fmt]["recalibrated"]["threshold"]
                entry["threshold_rule"] = (f"keeps the Keras model's sensitivity {rows['keras']['sensitivity']:.4f} "
                                           f"on {len(images)} parity images")
    if recalibrate:
        with atomic_writer(os.path.join(out, "model_card.json")) as f:
            json.dump(card, f, indent=2)
    report = {"n_images": len(images), "threshold": card["threshold"], "threads": threads, "artifacts": rows}
    with atomic_writer(os.path.join(out, "export_report.json")) as f:
        json.dump(report, f, indent=2)
    with atomic_writer(os.path.join(out, "README.md")) as f:
        f.write(format_parity(report, card))
    return report


def recalibrated_point(y_true: np.ndarray, scores: np.ndarray, sensitivity: float) -> dict:
    """The highest threshold at which `scores` reach at least `sensitivity` (a quantized model's own threshold
    for the Keras model's operating point), with the sensitivity and specificity there."""
    y = np.asarray(y_true).reshape(-1).astype(bool)
    positives = np.sort(scores[y])[::-1]
    needed = min(len(positives), max(1, int(np.ceil(sensitivity * len(positives) - 1e-9))))
    threshold = float(positives[needed - 1])
    decided = scores >= threshold
    return {"threshold": threshold, "sensitivity": float(decided[y].mean()),
            "specificity": float((~decided[~y]).mean())}


def parity_for_table(model_path: str, out: str, table, threads: int = 2, recalibrate: bool = False,
                     foreign: ForeignOptions | None = None, loaded: tuple | None = None) -> dict:
    """`parity_report` on the images and labels of a table (decoded as the training pipeline decodes them)."""
    from cxr_keras.data.decode import decode_all
    from cxr_keras.evaluate.inference import truth
    from cxr_keras.models.contract import describe_model

    model, metadata = loaded or load_for_export(model_path, foreign)
    spec = describe_model(classifier_only(model), metadata)
    images = decode_all(table.paths, spec.image_size).astype(np.float32)
    return parity_report(model_path, out, images, truth(table, spec), threads, recalibrate, foreign, model)


def _row(card, probabilities, reference, y_true, size, timing, evaluate_scores) -> dict:
    task = card["task"]
    scores = probabilities[:, 0] if task == "binary" else probabilities
    positive = card["classes"].index(card["positive_class"]) if task == "binary" else 1
    metrics = evaluate_scores(task, card["classes"], y_true, scores, card["threshold"], resamples=10,
                              positive_index=positive)
    row = {"roc_auc": metrics["roc_auc"], "accuracy": metrics["accuracy"],
           "max_abs_dp": float(np.max(np.abs(probabilities - reference))), "bytes": size, **timing}
    if task == "binary":
        row.update(sensitivity=metrics["sensitivity"], specificity=metrics["specificity"])
    return row


def format_parity(report: dict, card: dict) -> str:
    lines = [f"# Export of a {card['task']} {card.get('backbone')} model", "",
             f"Classes {card['classes']}; input {card['input']['shape']} float32 0..255; threshold "
             f"{_shown(card['threshold'])} ({card['threshold_rule']}). {INTENDED_USE}", "",
             f"Parity on {report['n_images']} images (latency: single image, {report['threads']} threads). "
             "'Own threshold': the artifact's threshold that keeps the Keras model's sensitivity, and the "
             "specificity there.", "",
             "| artifact | ROC-AUC | sensitivity | specificity | accuracy | max abs dp | MB | mean ms | p95 ms | "
             "own threshold | specificity there |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["artifacts"].items():
        own = r.get("recalibrated")
        lines.append(f"| {name} | {r['roc_auc']:.4f} | {r.get('sensitivity', float('nan')):.4f} | "
                     f"{r.get('specificity', float('nan')):.4f} | {r['accuracy']:.4f} | {r['max_abs_dp']:.2e} | "
                     f"{r['bytes'] / 1e6:.2f} | {r['mean_ms']:.2f} | {r['p95_ms']:.2f} | "
                     + (f"{threshold_text(own['threshold'])} | {own['specificity']:.4f} |" if own else "| |"))
    agreement = {name: r["ood_flag_agreement"] for name, r in report["artifacts"].items() if "ood_flag_agreement" in r}
    if agreement:
        lines += ["", f"Out-of-distribution flag (score > {card['ood']['threshold']:.4g}): agreement with the Keras "
                  "model's flag on the same images: " + ", ".join(f"{k} {v:.3f}" for k, v in agreement.items())]
    return "\n".join(lines) + "\n"


def _shown(threshold: float | list[float]) -> str:
    return threshold_text(threshold)
