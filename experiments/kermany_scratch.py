"""The recommended from-scratch recipe (no pretrained weights) for binary chest X-ray classification, as measured
on the Kermany pediatric pneumonia data; see docs/results.md.

    python -m experiments.kermany_scratch --data-dir ../shared/datasets/kermany/train

MobileNetV2 with random weights at 128 px, one all-trainable stage of 16 epochs: Adam 1e-3 with a one-epoch
warm-up and cosine decay to 0, the 'standard' augmentation, class weights, BatchNorm momentum 0.9 and BatchNorm
statistics recalibrated before each validation (docs/training.md explains why). The split is a seeded,
patient-grouped, stratified 80/20 train/validation split of the folder; the operating threshold is the default
rule's (`balanced`: the training prior, 0.5 under class weights; docs/results.md says why not Youden's) and the
validation metrics are reported at it, with bootstrap 95% intervals, beside a quick shift stress test.

Afterwards: Grad-CAM of 12 validation images, SavedModel + TFLite fp32/int8 export with a parity report on the
validation images into saved_models/<run name>/, and RUN/result.json with the row of the results table
(metrics, wall time, peak memory, parameters, int8 size and AUC) and whether the recipe's targets were met.
Every option of `cxr train` applies (`--backbone`, `--epochs`, `--time-budget`, `--split-seed`...).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

from cxr_keras.cli.train_options import run_from_args
from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from cxr_keras.io_utils import atomic_writer
from experiments.sample_data import parse_args

CONFIG = ExperimentConfig(
    name="kermany_scratch",
    data=DataConfig(image_size=128, batch_size=32, augment="standard", split_ratios=(0.8, 0.2, 0.0), split_seed=0),
    model=ModelConfig(backbone="mobilenetv2", weights="none", dropout=0.2),
    train=TrainConfig(stages=[StageConfig(name="scratch", epochs=16, trainable="all", learning_rate=1e-3,
                                          warmup_epochs=1, schedule="cosine")]),
)
SAMPLE = {"image_size": 96, "batch_size": 16, "epochs": [8], "split_ratios": (0.8, 0.2, 0.0)}

# What the recipe must reach on validation, within these resources (issue 6).
TARGETS = {"roc_auc": 0.99, "balanced_accuracy": 0.95, "train_minutes": 40, "peak_gib": 8}


def _extra(parser) -> None:
    parser.add_argument("--no-export", action="store_true", help="skip Grad-CAM and the SavedModel/TFLite export")


def main(argv: list[str] | None = None) -> dict | None:
    return run_recipe("kermany_scratch", __doc__, CONFIG, SAMPLE, argv)


def run_recipe(prog: str, doc: str, config: ExperimentConfig, sample: dict, argv: list[str] | None,
               extra=None, configure=None) -> dict | None:
    """Train `config` (with the command line's overrides), evaluate on validation, export, write RUN/result.json.

    `extra(parser)` adds options; `configure(args, config)` returns the config to run given them."""
    from cxr_keras.evaluate.evaluate import evaluate_run, summary_line

    def options(parser):
        _extra(parser)
        if extra:
            extra(parser)

    args = parse_args(prog, doc, argv, sample, extra=options)
    start = time.perf_counter()
    run_dir = run_from_args(args, configure(args, config) if configure else config)
    if not run_dir:
        return None
    train_seconds = time.perf_counter() - start
    peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    val = evaluate_run(run_dir)["val"]
    print(f"\nvalidation (optimistic: same cohort as training): {summary_line(val)}, "
          f"balanced accuracy {val['balanced_accuracy']:.3f}, threshold {val['threshold']:.3f} "
          f"({val['threshold_rule']})")
    if val.get("stress"):
        print("under acquisition shifts: " + "; ".join(
            f"{k.replace('_', ' ')} down to {w['value']:.3f} ({w['shift']} {w['strength']:g})"
            for k, w in val["stress"]["worst"].items() if k in ("roc_auc", "sensitivity", "specificity")))
    result = result_row(run_dir, val, train_seconds, peak_bytes)
    if not args.no_export:
        result.update(export_int8(run_dir))
    result["targets_met"] = targets_met(result)
    result["command"] = " ".join([f"python -m experiments.{prog}", *(sys.argv[1:] if argv is None else argv)])
    with atomic_writer(os.path.join(run_dir, "result.json")) as f:
        json.dump(result, f, indent=2)
    print(f"\nTargets (val ROC-AUC >= {TARGETS['roc_auc']}, balanced accuracy >= {TARGETS['balanced_accuracy']}, "
          f"<= {TARGETS['train_minutes']} min{' with the --init-from run' if result['init_from'] else ''}, "
          f"<= {TARGETS['peak_gib']} GiB): "
          f"{'met' if result['targets_met'] else 'NOT met'}; {run_dir}/result.json")
    return result


def result_row(run_dir: str, val: dict, train_seconds: float, peak_bytes: int) -> dict:
    """One row of the results table from a finished, evaluated run."""
    from cxr_keras.config import ExperimentConfig
    from cxr_keras.models.saving import load_metadata

    config = ExperimentConfig.load(os.path.join(run_dir, "config.json"))
    meta = load_metadata(os.path.join(run_dir, "best.keras"))
    with open(os.path.join(run_dir, "history.csv")) as f:
        epochs = sum(1 for _ in f) - 1
    return {
        "backbone": config.model.backbone, "weights": config.model.weights, "image_size": config.data.image_size,
        "split_seed": config.data.split_seed, "epochs": epochs, "best_epoch": meta.get("epoch"),
        "n_val": val["n_images"], "threshold": val["threshold"],
        "roc_auc": val["roc_auc"], "roc_auc_ci": val["ci"]["roc_auc"],
        "sensitivity": val["sensitivity"], "sensitivity_ci": val["ci"]["sensitivity"],
        "specificity": val["specificity"], "specificity_ci": val["ci"]["specificity"],
        "balanced_accuracy": val["balanced_accuracy"], "accuracy": val["accuracy"],
        "train_seconds": round(train_seconds, 1), "peak_gib": round(peak_bytes / 2**30, 2),
        "params": _params(run_dir), "run_dir": run_dir, "init_from": config.model.init_from or None,
        "train_seconds_with_init": _with_init(config.model.init_from, train_seconds),
    }


def _with_init(init_from: str, seconds: float) -> float | None:
    """Training time including the run whose weights `--init-from` started from (None: that run's is unknown)."""
    if not init_from:
        return round(seconds, 1)
    source = os.path.join(os.path.dirname(init_from), "result.json")
    if not os.path.exists(source):
        return None
    with open(source) as f:
        prior = json.load(f)
    prior = prior.get("train_seconds_with_init", prior["train_seconds"])
    return None if prior is None else round(seconds + prior, 1)


def _params(run_dir: str) -> int:
    from cxr_keras.models.saving import load_model

    return load_model(os.path.join(run_dir, "best.keras"), compile=False)[0].count_params()


def export_int8(run_dir: str) -> dict:
    """Grad-CAM and export (cxr_keras.delivery.explain_and_export); the int8 row of its parity."""
    from cxr_keras.delivery import explain_and_export

    out = explain_and_export(run_dir)
    with open(os.path.join(out, "export_report.json")) as f:
        int8 = json.load(f)["artifacts"]["tflite-int8"]
    return {"int8_mb": round(int8["bytes"] / 1e6, 2), "int8_roc_auc": int8["roc_auc"], "export_dir": out}


def targets_met(result: dict) -> bool:
    return (result["roc_auc"] >= TARGETS["roc_auc"] and result["balanced_accuracy"] >= TARGETS["balanced_accuracy"]
            and result["train_seconds_with_init"] is not None
            and result["train_seconds_with_init"] <= TARGETS["train_minutes"] * 60
            and result["peak_gib"] <= TARGETS["peak_gib"])


if __name__ == "__main__":
    import sys

    from cxr_keras.cli.errors import report_errors

    sys.exit(report_errors(main))
