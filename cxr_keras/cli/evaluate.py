"""`cxr evaluate`: a run on its own splits, or any Keras classifier on a dataset."""

from __future__ import annotations

import argparse
import os
import sys

from cxr_keras.cli.common import add_data_arguments, add_out_argument, load_from_args
from cxr_keras.display import threshold_text
from cxr_keras.io_utils import check_out


def add_parser(commands) -> None:
    """`cxr evaluate` and its options."""
    from cxr_keras.choices import CALIBRATION_METHODS, DEFAULT_RULE, PREPROCESS, SHIFTS, TASKS

    evaluate = commands.add_parser(
        "evaluate", help="metrics with CIs, threshold, figures and report.md for a model on a dataset",
        description="Evaluate a run (--run: threshold chosen by --rule, applied to its test split) "
        "or any Keras classifier on a dataset (--model and --data-dir).")
    evaluate.add_argument("--run", help="a run folder: evaluates its best.keras on its own val and test splits")
    evaluate.add_argument("--rule",
                          help=f"threshold rule (default {DEFAULT_RULE}: the highest cut that keeps 90%% of "
                          "validation's positives, the rule the off-site proxies ranked first over two seeds; "
                          "docs/results.md), "
                          "or: balanced (the positive rate the training loss saw), plateau[:TOL] (middle of Youden's "
                          "optimal plateau), youden, f1, sensitivity:T[+MARGIN], specificity:T[+MARGIN], fixed:T, "
                          "shift-mean, shift-worst; multi-label models get one threshold per finding")
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
    evaluate.add_argument("--model-task", choices=TASKS,
                          help="a foreign model's task (default: from its output layer)")
    evaluate.add_argument("--output", choices=["probabilities", "logits"],
                          help="what the model outputs (default: from its final activation)")
    evaluate.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    evaluate.add_argument("--batch-size", type=int, default=32, help="images per model call (default 32)")
    evaluate.set_defaults(func=cmd_evaluate)


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
            print(f"Threshold {threshold_text(threshold)} ({results['val']['threshold_rule']})")
        print(f"Wrote {out}/")
        return 0
    if not (args.model and args.data_dir):
        print("error: give --run RUN_DIR, or --model MODEL and --data-dir DIR", file=sys.stderr)
        return 2
    args.out = args.out or "evaluation"
    check_out(args.out, args.overwrite, data=[args.data_dir, args.images_dir or ""])
    metrics = _evaluate_model(args)
    if metrics.get("dropped"):
        print(f"{metrics['dropped']['count']} unreadable files left out: see {args.out}/dropped.csv")
    print(summary_line(metrics))
    if metrics.get("stress"):
        print(f"stress test: {_worst_line(metrics['stress'])}")
    print(f"Wrote {args.out}/metrics.json, report.md and figures")
    return 0


def _evaluate_model(args: argparse.Namespace) -> dict:
    """`cxr evaluate --model M --data-dir D`: the model on that data at a given or inherited threshold."""
    from cxr_keras.data.cohorts import cohort_names
    from cxr_keras.evaluate.evaluate import evaluate_model
    from cxr_keras.models.contract import describe_model
    from cxr_keras.models.saving import load_model

    model, metadata = load_model(args.model, compile=False)
    spec = describe_model(model, metadata, class_names=args.class_names, task=args.model_task,
                          preprocess=args.preprocess, output=args.output, image_size=args.image_size)
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
    table, mapped = _mapped_table(args, spec)
    threshold, how = _given_threshold(args, spec)
    cohorts = cohort_names(table, args.cohort_pattern, args.cohort_column, require_match=True)
    return evaluate_model(model, spec, table, args.out, threshold, how, resamples=args.resamples, seed=args.seed,
                          cohorts=cohorts, class_map=mapped, stress=args.stress_options, batch_size=args.batch_size,
                          caveat=_training_overlap(args.model, table.paths),
                          ood=None if args.tta else _scored_model(args.model, metadata))


def _scored_model(model_path: str, metadata: dict | None) -> tuple | None:
    """The model with its out-of-distribution score and the score's threshold, when it has one."""
    if not (metadata or {}).get("ood"):
        return None
    from cxr_keras.models.ood import has_ood
    from cxr_keras.models.saving import load_model

    scored = load_model(model_path, compile=False, ood=True)[0]
    return (scored, metadata["ood"]["threshold"]) if has_ood(scored) else None


def _training_overlap(model_path: str, paths: list[str]) -> str:
    """A caveat (also printed) when the run beside the model trained or validated on some of these films."""
    from cxr_keras.run_folder import seen_in_training

    seen, splits = seen_in_training(model_path, paths)
    if not seen:
        return ""
    caveat = (f"{seen} of {len(paths)} images are in this model's training or validation split ({splits}): these "
              "figures are not on unseen films; `cxr evaluate --run RUN` scores the run's own test split")
    print(f"WARNING: {caveat}", file=sys.stderr)
    return caveat


def _mapped_table(args: argparse.Namespace, spec) -> tuple:
    """The data the options describe, its classes mapped by --class-map (and what the mapping did), or as is."""
    table = load_from_args(args)
    if not args.class_map:
        return table, None
    from cxr_keras.data.table import relabel

    before = len(table)
    table = relabel(table, dict(args.class_map))
    unknown = sorted(set(table.classes) - set(spec.classes))
    if unknown:
        raise ValueError(f"after --class-map the data has classes {unknown} that the model does not know "
                         f"(its classes: {spec.classes}): map each to one of them, or leave it out with "
                         f"{unknown[0]}=-")
    return table, {"mapping": dict(args.class_map), "images": len(table), "images_before": before}


def _given_threshold(args: argparse.Namespace, spec) -> tuple:
    """(threshold, how it was set): --threshold, else --threshold-from's, else the model's own; checked."""
    threshold, how = spec.threshold, spec.threshold_rule
    if args.threshold_from:
        from cxr_keras.models.foreign import read_evaluation

        evaluation = read_evaluation(args.threshold_from)
        if "threshold" not in evaluation:
            raise ValueError(f"--threshold-from {args.threshold_from} has no threshold; give a metrics.json of "
                             "`cxr evaluate`")
        threshold, how = evaluation["threshold"], f"from {args.threshold_from}"
    if args.threshold is not None:
        threshold, how = args.threshold, "given with --threshold"
    if spec.task != "multiclass":
        from cxr_keras.models.foreign import check_threshold

        check_threshold(threshold, spec, how)
    return threshold, how

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

        ignored = [option for option, value in _model_mode_options(args) if value]
        if ignored:
            hint = ("a fixed threshold is --rule fixed:T" if ignored[0].startswith("--threshold") else
                    "to score it on other data use --model RUN/best.keras --data-dir DIR")
            raise ValueError(f"{ignored[0]} does nothing with --run, which evaluates the run's best.keras on its own "
                             f"data and splits (config.json); {hint}")
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


def _model_mode_options(args: argparse.Namespace) -> list[tuple[str, object]]:
    """The options that describe a model and its data, which --run takes from the run itself."""
    from cxr_keras.config import DEFAULT_MAX_PIXELS

    given = [(f"--{key.replace('_', '-')}", getattr(args, key)) for key in (
        "model", "data_dir", "csv", "images_dir", "classes", "task", "patient_pattern", "path_column",
        "labels_column", "image_size", "channels", "preprocess", "class_names", "class_map", "model_task", "output",
        "threshold", "threshold_from", "allow_outside_paths", "keep_label_case")]
    return given + [("--layout", args.layout != "auto"), ("--delimiter", args.delimiter != "|"),
                    ("--max-pixels", args.max_pixels != DEFAULT_MAX_PIXELS),
                    ("--copy-conflicts", args.copy_conflicts != "refuse")]


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
    falls = [f"{key.replace('_', ' ')} falls most under {w['shift']} at strength {w['strength']:.2f} "
             f"({w['value']:.3f}, "
             f"-{w['drop']:.3f})" for key, w in stress["worst"].items() if key != "accuracy" and w["drop"] > 5e-4]
    return (", ".join(falls) or "no metric falls by more than 0.0005") + " (see stress/stress.md)"
