"""`cxr export`: SavedModel and TFLite artifacts, the model card and the parity report."""

from __future__ import annotations

import argparse
import os

from cxr_keras.cli.common import add_out_argument
from cxr_keras.io_utils import check_out


def add_parser(commands) -> None:
    """`cxr export` and its options."""
    from cxr_keras.choices import EXPORT_FORMATS as FORMATS
    from cxr_keras.choices import PREPROCESS, TASKS

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
                         "threshold, task, classes, preprocessing and output kind")
    foreign.add_argument("--model-task", choices=TASKS,
                         help="its task (default: from its output layer)")
    foreign.add_argument("--output", choices=["probabilities", "logits"],
                         help="what it outputs (default: from its last layer's activation)")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from cxr_keras.export import export_model, load_for_export
    from cxr_keras.predict import image_paths

    if args.recalibrate_threshold and not args.eval_data:
        raise ValueError("--recalibrate-threshold needs --eval-data: labelled (validation) images to match on")
    check_out(args.out, args.overwrite, data=[args.eval_data or ""])  # an export there would be read as a class
    if args.calibration_data and not os.path.exists(args.calibration_data):
        raise ValueError(f"--calibration-data {args.calibration_data} does not exist")
    loaded = load_for_export(args.model, _foreign(args))  # once, and checked before anything is written
    eval_table = None
    if args.eval_data:
        from cxr_keras.evaluate.inference import truth
        from cxr_keras.models.contract import describe_model
        from cxr_keras.models.ood import classifier_only

        eval_table = _eval_table(args)
        # labels the model does not know: refused now, not after the export
        truth(eval_table, describe_model(classifier_only(loaded[0]), loaded[1]))
    calibration = image_paths([args.calibration_data]) if args.calibration_data else None
    card = export_model(args.model, args.out, args.formats, calibration, args.calibration_count, args.int8_io,
                        _foreign(args), loaded)
    print(f"Wrote {', '.join(a['file'] for a in card['artifacts'].values())} and model_card.json to {args.out}")
    if eval_table is not None:
        from cxr_keras.export import parity_for_table

        report = parity_for_table(args.model, args.out, eval_table, args.threads, args.recalibrate_threshold,
                                  _foreign(args), loaded)
        for name, row in report["artifacts"].items():
            print(f"  {name:<15} AUC {row['roc_auc']:.4f}  max|dp| {row['max_abs_dp']:.2e}  "
                  f"{row['bytes'] / 1e6:7.2f} MB  {row['mean_ms']:6.2f} ms")
        print(f"Parity report: {args.out}/export_report.json and README.md")
    return 0


def _foreign(args: argparse.Namespace):
    from cxr_keras.models.foreign import ForeignOptions

    return ForeignOptions(args.class_names, args.preprocess, args.threshold, args.threshold_from, args.output,
                          args.model_task)


def _eval_table(args: argparse.Namespace):
    """--eval-data's images and labels, --eval-count of them spread evenly."""
    import numpy as np

    from cxr_keras.data.sources import load_dataset

    table = load_dataset(args.eval_data)
    if args.eval_count and len(table) > args.eval_count:
        evenly = np.linspace(0, len(table) - 1, args.eval_count).round().astype(int)
        table = table.subset(np.isin(np.arange(len(table)), evenly))
    return table
