"""The four transfer-learning backbones and the baseline CNN under one config and one wall-clock budget each.

    python -m experiments.compare_backbones --data-dir ../shared/datasets/kermany/train --time-budget 600

Published coursework compares backbones at equal epochs, which favours the slow ones; here every model gets the
same seconds of training on the same split. Writes comparison.csv, comparison.md and comparison.png into
--out, with validation and test ROC-AUC (scikit-learn, on the best checkpoint), epochs done, wall time and
parameters per model.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time

import numpy as np

from cxr_keras.cli.train_options import config_from_args
from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from cxr_keras.io_utils import atomic_writer, pyplot, save_figure
from experiments.sample_data import parse_args

BACKBONES = ("efficientnetb0", "mobilenetv2", "densenet121", "resnet50", "baseline")
CONFIG = ExperimentConfig(
    name="compare",
    data=DataConfig(image_size=128, batch_size=32, augment="standard", split_ratios=(0.8, 0.1, 0.1)),
    model=ModelConfig(weights="auto"),
    train=TrainConfig(stages=[
        StageConfig(name="head", epochs=3, trainable="head", learning_rate=1e-3),
        StageConfig(name="finetune", epochs=30, trainable="fraction:0.3", learning_rate=1e-4, warmup_epochs=0.5,
                    schedule="cosine"),
    ]),
)
DEFAULT_BUDGET_S = 600.0  # training seconds per backbone when --time-budget is not given
SAMPLE = {"image_size": 64, "batch_size": 16, "epochs": [1, 2], "split_ratios": (0.7, 0.15, 0.15)}


def _extra(parser) -> None:
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--out", default=os.path.join("runs", "compare_backbones"), help="folder for the table")


def split_auc(run_dir: str, split: str) -> float | None:
    """ROC-AUC (macro over outputs) of a run's best checkpoint on one split of its splits.csv; None if empty."""
    from sklearn.metrics import roc_auc_score

    from cxr_keras.evaluate.inference import predict_scores, truth
    from cxr_keras.models.contract import describe_model
    from cxr_keras.models.saving import load_model
    from cxr_keras.run_folder import run_table

    part = run_table(run_dir).split(split)
    if len(part) == 0:
        return None
    model, metadata = load_model(os.path.join(run_dir, "best.keras"), compile=False)
    spec = describe_model(model, metadata)
    return float(roc_auc_score(truth(part, spec), predict_scores(model, part.paths, spec), average="macro"))


def main(argv: list[str] | None = None) -> list[dict]:
    from cxr_keras.models.saving import load_model
    from cxr_keras.train import run_experiment

    args = parse_args("compare_backbones", __doc__, argv, SAMPLE, extra=_extra)
    base = config_from_args(args, CONFIG)
    if args.print_config:
        import json

        print(json.dumps(base.to_dict(), indent=2))
        return []
    budget = base.train.time_budget_s or DEFAULT_BUDGET_S
    rows = []
    for backbone in args.backbones:
        config = dataclasses.replace(base, name=f"compare-{backbone}",
                                     model=dataclasses.replace(base.model, backbone=backbone),
                                     train=dataclasses.replace(base.train, time_budget_s=budget))
        if backbone == "baseline":
            config.model.weights = "none"
        start = time.perf_counter()
        run_dir = run_experiment(config, quiet=args.quiet)
        seconds = time.perf_counter() - start
        model, metadata = load_model(os.path.join(run_dir, "best.keras"), compile=False)
        with open(os.path.join(run_dir, "history.csv")) as f:
            epochs = sum(1 for _ in f) - 1
        rows.append({"backbone": backbone, "weights": metadata["weights"], "epochs": epochs,
                     "val_auc": split_auc(run_dir, "val"), "test_auc": split_auc(run_dir, "test"),
                     "wall_s": round(seconds, 1), "params": model.count_params(), "run_dir": run_dir})
    write_comparison(rows, args.out, budget)
    return rows


def write_comparison(rows: list[dict], out: str, budget: float) -> None:
    """comparison.csv, comparison.md (a table) and comparison.png (AUC per backbone)."""
    plt = pyplot()
    os.makedirs(out, exist_ok=True)
    with atomic_writer(os.path.join(out, "comparison.csv"), newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"Training budget: {budget:g} s per backbone, same data, split and config.\n",
             "| backbone | weights | epochs | val AUC | test AUC | wall s | parameters |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['backbone']} | {r['weights']} | {r['epochs']} | {fmt(r['val_auc'])} | {fmt(r['test_auc'])} | "
              f"{r['wall_s']} | {r['params']:,} |" for r in rows]
    with atomic_writer(os.path.join(out, "comparison.md")) as f:
        f.write("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    x = np.arange(len(rows))
    for offset, key in ((-0.2, "val_auc"), (0.2, "test_auc")):
        ax.bar(x + offset, [r[key] or 0 for r in rows], width=0.4, label=key.replace("_", " "))
    ax.set(xticks=x, xticklabels=[f"{r['backbone']}\n{r['epochs']} ep" for r in rows], ylim=(0, 1),
           ylabel="ROC-AUC", title=f"Backbones at an equal {budget:g} s training budget")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, os.path.join(out, "comparison.png"))
    print("\n".join(lines))
    print(f"\nWrote {out}/comparison.csv, comparison.md, comparison.png")


if __name__ == "__main__":
    import sys

    from cxr_keras.cli.errors import report_errors

    sys.exit(report_errors(main))
