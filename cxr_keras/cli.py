"""The `cxr` command: `cxr train` trains a model, `cxr evaluate` measures one, `cxr gradcam` explains its
predictions, `cxr data-report` describes a dataset, `cxr synth` writes sample data."""

from __future__ import annotations

import argparse
import os
import sys

from cxr_keras.data_options import SOURCE_KEYS, add_source_arguments
from cxr_keras.io_utils import check_out


def add_data_arguments(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    """The options that say where a dataset is and how to read it (shared by every command that reads data)."""
    group = parser.add_argument_group("data")
    where = "dataset root folder (or the images folder of a CSV dataset)"
    if positional:  # `cxr data-report DIR`, and --data-dir as every other command spells it
        group.add_argument("data_dir", nargs="?", help=where)
        group.add_argument("--data-dir", dest="data_dir_option", metavar="DATA_DIR", help="the same, as an option")
    else:
        group.add_argument("--data-dir", help=where)
    add_source_arguments(group)


READ_KEYS = ("data_dir", *SOURCE_KEYS)


def load_from_args(args: argparse.Namespace):
    """The dataset the options of `add_data_arguments` describe (through `DataConfig.load_table`)."""
    from cxr_keras.config import DataConfig

    return DataConfig(**{key: getattr(args, key) for key in READ_KEYS}).load_table()


def add_out_argument(parser: argparse.ArgumentParser, help: str, **kwargs) -> None:
    parser.add_argument("--out", help=help, **kwargs)
    parser.add_argument("--overwrite", action="store_true", help="write over earlier results in --out")


def cmd_data_report(args: argparse.Namespace) -> int:
    from cxr_keras.data.report import format_report, write_report
    from cxr_keras.data.splits import save_splits, split_table

    check_out(args.out, args.overwrite)
    args.data_dir = args.data_dir or args.data_dir_option
    if not args.data_dir:
        raise ValueError("say which dataset to report on: cxr data-report DIR (or --data-dir DIR)")
    table = load_from_args(args)
    if args.split:
        table = split_table(table, tuple(args.split_ratios), seed=args.seed, keep_existing=not args.resplit)
    print(format_report(table))
    paths = write_report(table, args.out)
    if args.split:
        paths["splits.csv"] = os.path.join(args.out, "splits.csv")
        save_splits(table, paths["splits.csv"])
    print("\nWrote " + ", ".join(paths.values()))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from cxr_keras.data.synthetic import write_dataset

    if os.path.exists(args.out) and os.listdir(args.out):
        print(f"error: {args.out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2  # synth only writes into a new folder: mixing two generated datasets would mislabel
    write_dataset(args.out, args.task, n_patients=args.patients, size=args.size, seed=args.seed)
    print(f"Wrote a synthetic {args.task} dataset ({args.patients} patients, {args.size} px) to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cxr_keras.evaluate.evaluate import evaluate_run, summary_line

    args.stress_options = _stress_options(args)  # checked before anything is computed
    _check_evaluate_options(args)

    if args.run:
        if args.tta:
            print("error: --tta is for --model: a run's threshold is chosen for best.keras as it is", file=sys.stderr)
            return 2
        out = args.out or os.path.join(args.run, "evaluation")
        check_out(out, args.overwrite)
        results = evaluate_run(args.run, args.rule, args.out, args.resamples, args.seed, args.calibrate,
                               args.stress_options, args.cohort_pattern, args.cohort_column)
        stress = results.pop("stress", None)
        for split, metrics in results.items():
            print(f"{split}: {summary_line(metrics)}")
        if stress:
            print(f"stress test ({stress['split']}): {_worst_line(stress)}")
        threshold = results["val"]["threshold"]
        if results["val"]["task"] == "multiclass" and args.rule_given:
            print("Multi-class model: each image gets its arg-max class; --rule does not apply")
        if results["val"]["task"] != "multiclass":
            shown = f"{threshold:.4f}" if isinstance(threshold, float) else "per finding " + " ".join(
                f"{t:.3f}" for t in threshold)
            print(f"Threshold {shown} ({results['val']['threshold_rule']})")
        print(f"Wrote {out}/")
        return 0
    if not (args.model and args.data_dir):
        print("error: give --run RUN_DIR, or --model MODEL and --data-dir DIR", file=sys.stderr)
        return 2
    args.out = args.out or "evaluation"
    check_out(args.out, args.overwrite)
    metrics = _evaluate_model(args)
    if metrics.get("dropped"):
        print(f"{metrics['dropped']['count']} unreadable files left out: see {args.out}/dropped.csv")
    print(summary_line(metrics))
    if metrics.get("stress"):
        print(f"stress test: {_worst_line(metrics['stress'])}")
    print(f"Wrote {args.out}/metrics.json, report.md and figures")
    return 0


def _evaluate_model(args: argparse.Namespace) -> dict:
    import json

    import numpy as np

    from cxr_keras.evaluate.evaluate import write_evaluation
    from cxr_keras.evaluate.inference import describe_model, predict_scores, truth
    from cxr_keras.models.saving import load_model

    model, metadata = load_model(args.model, compile=False)
    spec = describe_model(model, metadata, class_names=args.class_names, task=args.model_task,
                          preprocess=args.preprocess, output=args.output)
    if args.tta:
        if spec.preprocess != "none":
            raise ValueError("--tta needs a model that takes 0..255 pixels (--preprocess none): its views are "
                             "taken before the model's own preprocessing")
        from cxr_keras.models.tta import with_tta

        model = with_tta(model)
    if args.image_size:
        spec.image_size = (args.image_size, args.image_size)
    if args.channels:
        spec.channels = args.channels
    table = load_from_args(args)
    mapped = None
    if args.class_map:
        from cxr_keras.data.table import relabel

        before = len(table)
        table = relabel(table, dict(args.class_map))
        unknown = sorted(set(table.classes) - set(spec.classes))
        if unknown:
            raise ValueError(f"after --class-map the data has classes {unknown} that the model does not know "
                             f"(its classes: {spec.classes}): map each to one of them, or leave it out with "
                             f"{unknown[0]}=-")
        mapped = {"mapping": dict(args.class_map), "images": len(table), "images_before": before}
    threshold, how = spec.threshold, spec.threshold_rule
    if args.threshold_from:
        with open(args.threshold_from) as f:
            threshold, how = json.load(f)["threshold"], f"from {args.threshold_from}"
    if args.threshold is not None:
        threshold, how = args.threshold, "given with --threshold"
    if np.ndim(threshold) and spec.task == "binary":
        raise ValueError("a binary model takes one threshold")
    y = truth(table, spec)
    scores = predict_scores(model, table.paths, spec, args.batch_size)
    from cxr_keras.data.cohorts import cohort_names

    metrics = write_evaluation(args.out, spec, table, y, scores, threshold, how, args.resamples, args.seed,
                               cohort_names(table, args.cohort_pattern, args.cohort_column, require_match=True),
                               model,
                               class_map=mapped)
    options = args.stress_options
    if options is not None:
        from cxr_keras.evaluate.stress import stress_split

        metrics["stress"] = stress_split(os.path.join(args.out, "stress"), model, spec, table.paths, y, threshold,
                                         batch_size=args.batch_size, **options)
    return metrics


def _check_evaluate_options(args: argparse.Namespace) -> None:
    """Options that would do nothing in this mode, or make no sense, are refused in one line."""
    import math

    if not args.run:
        for option, value in (("--calibrate", args.calibrate), ("--rule", args.rule)):
            if value is not None:
                raise ValueError(f"{option} is for --run (a threshold chosen on a run's validation split); with "
                                 "--model give --threshold or --threshold-from")
    else:
        from cxr_keras.choices import DEFAULT_RULE

        args.rule_given, args.rule = args.rule is not None, args.rule or DEFAULT_RULE
    if args.threshold is not None and not (math.isfinite(args.threshold) and 0 <= args.threshold <= 1):
        raise ValueError(f"--threshold is a probability in [0, 1], got {args.threshold}")
    if args.class_map:
        sources = [source for source, _ in args.class_map]
        repeated = sorted({s for s in sources if sources.count(s) > 1})
        if repeated:
            raise ValueError(f"--class-map maps {repeated} more than once; give each data class one target")
    if args.cohort_pattern:
        import re

        try:
            re.compile(args.cohort_pattern)
        except re.error as exc:
            raise ValueError(f"--cohort-pattern {args.cohort_pattern!r} is not a valid regular expression "
                             f"({exc})") from None


def _stress_options(args: argparse.Namespace) -> dict | None:
    """--stress: the full stress test; with --run, a quick one unless --no-stress; else None."""
    from cxr_keras.data.shifts import STRENGTHS

    if args.stress_count is not None and args.stress_count < 2:
        raise ValueError(f"--stress-count must be at least 2, got {args.stress_count}")
    if args.stress and args.no_stress:
        raise ValueError("--stress and --no-stress contradict each other; give one")
    chosen = {k: v for k, v in (("shifts", args.stress_shifts), ("count", args.stress_count)) if v is not None}
    if args.stress:
        return {"strengths": tuple(args.stress_strengths or STRENGTHS), "count": None, **chosen}
    if args.run and not args.no_stress:
        return {**({"strengths": tuple(args.stress_strengths)} if args.stress_strengths else {}), **chosen}
    return None


def _mapping(text: str) -> tuple[str, str]:
    source, sep, target = text.partition("=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"--class-map takes DATA_CLASS=MODEL_CLASS (or =- to leave a class out), "
                                         f"got {text!r}")
    return source, target


def _strength(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a shift strength is in (0, 1], got {text}")
    return value


def _worst_line(stress: dict) -> str:
    falls = [f"{key.replace('_', ' ')} falls most under {w['shift']} {w['strength']:.2f} ({w['value']:.3f}, "
             f"-{w['drop']:.3f})" for key, w in stress["worst"].items() if key != "accuracy" and w["drop"] > 5e-4]
    return (", ".join(falls) or "no metric falls by more than 0.0005") + " (see stress/stress.md)"


def cmd_gradcam(args: argparse.Namespace) -> int:
    from cxr_keras.evaluate.explain import ExplainOptions, explain
    from cxr_keras.predict import image_paths

    check_out(args.out, args.overwrite)
    paths = image_paths(args.images)
    if not paths:
        print(f"error: no images found in {args.images}", file=sys.stderr)
        return 2
    options = ExplainOptions(method=args.method, layer=args.layer, class_index=args.class_index,
                             threshold=args.threshold, preprocess=args.preprocess, class_names=args.class_names,
                             batch_size=args.batch_size, figures=args.figures, masks=args.masks, boxes=args.boxes,
                             box_finding=args.box_finding)
    summary = explain(args.model, paths, args.out, options)
    print(f"{summary['method']} on layer {summary['layer']} for {summary['n_images']} images -> {args.out}/")
    if "pointing_game" in summary:
        print(f"pointing game: {summary['pointing_game']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cxr_keras.export import export_model
    from cxr_keras.predict import image_paths

    if args.recalibrate_threshold and not args.eval_data:
        raise ValueError("--recalibrate-threshold needs --eval-data: labelled (validation) images to match on")
    check_out(args.out, args.overwrite)
    if args.calibration_data and not os.path.exists(args.calibration_data):
        raise ValueError(f"--calibration-data {args.calibration_data} does not exist")
    eval_table = _eval_table(args) if args.eval_data else None  # read before anything is written
    calibration = image_paths([args.calibration_data]) if args.calibration_data else None
    card = export_model(args.model, args.out, args.formats, calibration, args.calibration_count, args.int8_io,
                        _foreign(args))
    print(f"Wrote {', '.join(a['file'] for a in card['artifacts'].values())} and model_card.json to {args.out}")
    if eval_table is not None:
        from cxr_keras.export import parity_for_table

        report = parity_for_table(args.model, args.out, eval_table, args.threads, args.recalibrate_threshold,
                                  _foreign(args))
        for name, row in report["artifacts"].items():
            print(f"  {name:<15} AUC {row['roc_auc']:.4f}  max|dp| {row['max_abs_dp']:.2e}  "
                  f"{row['bytes'] / 1e6:7.2f} MB  {row['mean_ms']:6.2f} ms")
        print(f"Parity report: {args.out}/export_report.json and README.md")
    return 0


def _foreign(args: argparse.Namespace):
    from cxr_keras.models.foreign import ForeignOptions

    return ForeignOptions(args.class_names, args.preprocess, args.threshold, args.threshold_from)


def _eval_table(args: argparse.Namespace):
    """--eval-data's images and labels, --eval-count of them spread evenly."""
    import numpy as np

    from cxr_keras.data.sources import load_dataset

    table = load_dataset(args.eval_data)
    if args.eval_count and len(table) > args.eval_count:
        evenly = np.linspace(0, len(table) - 1, args.eval_count).round().astype(int)
        table = table.subset(np.isin(np.arange(len(table)), evenly))
    return table


def cmd_predict(args: argparse.Namespace) -> int:
    from cxr_keras.predict import run

    return run(args)


def cmd_train(args: argparse.Namespace) -> int:
    from cxr_keras.config import ExperimentConfig
    from cxr_keras.train_cli import run_from_args

    if not (args.data_dir or args.config or args.resume):
        print("error: say where the images are (--data-dir DIR), or give --config FILE or --resume RUN_DIR",
              file=sys.stderr)
        return 2
    run_from_args(args, ExperimentConfig(name="train"))
    return 0


# DataError, SplitError, WeightsError, ExportError, OutputExists... are ValueErrors; the OSErrors are a file
# the user named that is missing, in the way or not theirs to read.
EXPECTED = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr", description="Chest X-ray classifiers on Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)

    report = commands.add_parser("data-report", help="counts per class, split and patient; dropped files; chart")
    add_data_arguments(report)
    add_out_argument(report, "folder for report.txt, the chart and dropped.csv (default ./data-report)",
                     default="data-report")
    report.add_argument("--split", action="store_true", help="also make the seeded, patient-grouped split")
    report.add_argument("--split-ratios", nargs=3, type=float, default=[0.8, 0.1, 0.1],
                        metavar=("TRAIN", "VAL", "TEST"), help="split shares (default 0.8 0.1 0.1)")
    report.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    report.add_argument("--resplit", action="store_true", help="ignore the data's own split and make a new one")
    report.set_defaults(func=cmd_data_report)

    from cxr_keras.choices import CALIBRATION_METHODS, DEFAULT_RULE, PREPROCESS, SHIFTS
    from cxr_keras.train_cli import add_train_arguments

    evaluate = commands.add_parser(
        "evaluate", help="metrics with CIs, threshold, figures and report.md for a model on a dataset",
        description="Evaluate a run (--run: threshold chosen by --rule, applied to its test split) "
        "or any Keras classifier on a dataset (--model and --data-dir).")
    evaluate.add_argument("--run", help="a run folder: evaluates its best.keras on its own val and test splits")
    evaluate.add_argument("--rule",
                          help=f"threshold rule (default {DEFAULT_RULE}: the positive rate the training loss saw, 0.5 "
                          "under class weights; docs/results.md says why), or on validation: plateau[:TOL] (middle "
                          "of Youden's optimal plateau), youden, f1, sensitivity:T[+MARGIN], specificity:T[+MARGIN], "
                          "fixed:T; multi-label models get one threshold per finding")
    evaluate.add_argument("--calibrate", choices=CALIBRATION_METHODS,
                          help="with --run: fit probability calibration on validation and store it inside "
                          "best.keras (platt: sigmoid(a*logit(p)+b); temperature: slope only)")
    evaluate.add_argument("--tta", action="store_true",
                          help="with --model: score the mean over four fixed views of each image (the image, a 10%% "
                          "centre zoom, 4%% shifts left and right); costs 4x the inference")
    evaluate.add_argument("--cohort-pattern", help="metrics per cohort too: a regex on file names whose first "
                          "group names the cohort (default with --run: the run's own)")
    evaluate.add_argument("--cohort-column", help="or a per-image CSV column naming the cohort")
    evaluate.add_argument("--stress", action="store_true",
                          help="also re-score the split (a run's test split, else its validation) under graded "
                          "acquisition shifts, every image at 4 strengths, and write stress/ (stress.md, stress.json, "
                          "stress.png). With --run a quick one (2 strengths, 200 images) runs unless --no-stress")
    evaluate.add_argument("--no-stress", action="store_true", help="with --run: skip the quick stress test")
    evaluate.add_argument("--stress-shifts", nargs="+", choices=list(SHIFTS), metavar="SHIFT",
                          help=f"shifts to apply (default all: {', '.join(SHIFTS)})")
    evaluate.add_argument("--stress-strengths", nargs="+", type=_strength, metavar="S",
                          help="strengths in (0, 1] (default 0.25 0.5 0.75 1; quick: 0.5 1)")
    evaluate.add_argument("--stress-count", type=int,
                          help="stress only this many evenly spaced images of the split (default all)")
    evaluate.add_argument("--model", help="a .keras model (ours, or foreign with the options below)")
    add_data_arguments(evaluate, positional=False)
    add_out_argument(evaluate, "output folder (default: RUN/evaluation with --run, else ./evaluation)")
    evaluate.add_argument("--threshold", type=float, help="decision threshold (default: the model's own)")
    evaluate.add_argument("--threshold-from", help="a validation metrics.json whose threshold to apply")
    evaluate.add_argument("--image-size", type=int, help="resize images to this (default: the model's input)")
    evaluate.add_argument("--channels", type=int, choices=[1, 3],
                          help="channels a foreign model takes (default: from its input; gray is repeated to 3)")
    evaluate.add_argument("--preprocess", choices=PREPROCESS,
                          help="a foreign model's input: none (0..255), unit (0..1), tf (-1..1), torch, caffe")
    evaluate.add_argument("--class-names", nargs="+", help="a foreign model's classes, in output order")
    evaluate.add_argument("--class-map", nargs="+", metavar="DATA=MODEL", type=_mapping,
                          help="evaluate on another dataset whose labels mean the model's classes under other "
                          "names: e.g. Normal=NORMAL COVID=- ('-' leaves that class out). Data with one class "
                          "left gives sensitivity or specificity alone (no ROC-AUC)")
    evaluate.add_argument("--model-task", choices=["binary", "multiclass", "multilabel"],
                          help="a foreign model's task (default: from its output layer)")
    evaluate.add_argument("--output", choices=["probabilities", "logits"],
                          help="what the model outputs (default: from its final activation)")
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    evaluate.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    evaluate.set_defaults(func=cmd_evaluate)

    from cxr_keras.choices import EXPORT_FORMATS as FORMATS

    export = commands.add_parser("export", help="SavedModel and TFLite artifacts, model card, parity report")
    export.add_argument("--model", required=True, help="a .keras model: made by cxr train (with its .json), or "
                        "a foreign one described by the options below")
    export.add_argument("--formats", nargs="+", default=["savedmodel", "tflite-fp32"], choices=FORMATS,
                        help="artifacts to write (default savedmodel tflite-fp32)")
    add_out_argument(export, "output folder, e.g. saved_models/NAME (with --overwrite an earlier export there is "
                     "replaced whole)", required=True)
    export.add_argument("--calibration-data", help="folder of representative images for tflite-int8(-mixed)")
    export.add_argument("--calibration-count", type=int, default=200, help="int8 calibration images (default 200)")
    export.add_argument("--int8-io", choices=["float", "int8", "uint8"], default="float",
                        help="tflite-int8 input/output type (default float: quantize inside the model)")
    export.add_argument("--eval-data", help="labelled folder for the parity report (each artifact vs Keras)")
    export.add_argument("--eval-count", type=int, default=400, help="images of it to use (default 400)")
    export.add_argument("--recalibrate-threshold", action="store_true",
                        help="give each TFLite artifact its own threshold, the one that keeps the Keras model's "
                             "sensitivity on --eval-data (use validation images); predict uses it")
    export.add_argument("--threads", type=int, default=2, help="TFLite threads for the latency figures")
    foreign = export.add_argument_group("a foreign model (no .json beside it); its preprocessing goes inside the "
                                        "exported graph, so the device feeds raw pixels")
    foreign.add_argument("--class-names", nargs="+", help="its classes, in output order")
    foreign.add_argument("--preprocess", choices=PREPROCESS, help="what its pixels must look like (see evaluate)")
    foreign.add_argument("--threshold", type=float, help="a binary model's operating threshold")
    foreign.add_argument("--threshold-from", help="the metrics.json of `cxr evaluate --model` on validation data: "
                         "threshold, classes and preprocessing")
    export.set_defaults(func=cmd_export)

    from cxr_keras.predict import add_predict_arguments

    predict = commands.add_parser("predict", help="predictions.csv from a .keras, SavedModel or .tflite model")
    add_predict_arguments(predict)
    predict.set_defaults(func=cmd_predict)

    from cxr_keras.choices import GRADCAM_METHODS as METHODS

    gradcam = commands.add_parser("gradcam", help="Grad-CAM heat maps, figures and the pointing game",
                                  description="Grad-CAM / Grad-CAM++ for a .keras model (flat or nested backbone).")
    gradcam.add_argument("--model", required=True, help="a .keras model")
    gradcam.add_argument("--images", nargs="+", required=True, help="image files and/or folders (recursive)")
    add_out_argument(gradcam, "output folder (default ./gradcam)", default="gradcam")
    gradcam.add_argument("--method", choices=METHODS, default="gradcam", help="default gradcam")
    gradcam.add_argument("--layer", help="conv layer to explain (nested: outer/inner); default: the last 4-D one")
    gradcam.add_argument("--class-index", type=int, help="explain this class (default: the decided one)")
    gradcam.add_argument("--threshold", type=float,
                         help="a binary model's decision threshold, which decides the class explained (default: the "
                         "model's own from best.json, else 0.5)")
    gradcam.add_argument("--masks", action="store_true",
                         help="pointing game against lesion masks beside the images (<class>/masks/<finding>/)")
    gradcam.add_argument("--boxes", help="pointing game against boxes: NIH BBox_List_2017.csv(.gz), by file name")
    gradcam.add_argument("--box-finding", help="only the boxes of this finding (e.g. Pneumonia)")
    gradcam.add_argument("--figures", type=int, default=24, help="per-image figures to draw (default 24)")
    gradcam.add_argument("--preprocess", choices=PREPROCESS, help="a foreign model's input (see evaluate)")
    gradcam.add_argument("--class-names", nargs="+", help="a foreign model's classes, in output order")
    gradcam.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    gradcam.set_defaults(func=cmd_gradcam)

    train = commands.add_parser("train", help="train a classifier: stages, callbacks, a run folder (see --help)",
                                description="Train per the default config (EfficientNetB0, ImageNet weights when "
                                "obtainable, head then top 30% fine-tuned) with any option overridden. From "
                                "scratch (--weights none) the stages are one: --epochs N is enough.")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)

    synth = commands.add_parser("synth", help="write a synthetic chest X-ray dataset with lesion masks")
    synth.add_argument("out", help="new folder to write into")
    synth.add_argument("--task", choices=["binary", "multiclass", "multilabel"], default="binary",
                       help="labels to generate (default binary)")
    synth.add_argument("--patients", type=int, default=120, help="patients (1-3 images each; default 120)")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.set_defaults(func=cmd_synth)
    return parser


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up lines (oneDNN, CUDA, absl notices) kept off the terminal: they come from
    C++ before any log level applies. Shown when the import fails, or always with CXR_KERAS_TF_LOGS=1."""
    if "tensorflow" in sys.modules or os.environ.get("CXR_KERAS_TF_LOGS"):
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except ModuleNotFoundError:
            pass  # a device without TensorFlow: the commands that need it say so
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and usage errors end here, before TensorFlow starts
    import_tensorflow_quietly()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130  # what was interrupted has said how to go on; no traceback for a Ctrl-C
    except EXPECTED as exc:  # messages written for the user; anything else keeps its traceback
        if os.environ.get("CXR_KERAS_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
