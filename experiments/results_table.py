"""The results table of docs/results.md: every backbone trained from scratch with the kermany_scratch recipe on
the same split and under the same wall-clock budget, one subprocess per row.

    python -m experiments.results_table --data-dir ../shared/datasets/kermany/train --time-budget 1200

Each row is `python -m experiments.kermany_scratch --backbone B --epochs E --time-budget T --split-seed S` in its
own process (so its peak memory is its own), in OUT/runs/kermany-B-seedS/. Epochs per backbone are sized from
their measured speed on 2 CPU cores to fill the budget (the budget stops a row that would overrun it; the table
shows the epochs done). A row whose result.json exists is not trained again, so an interrupted table resumes.
Writes OUT/results.csv, OUT/results.md (the table with the command of every row), OUT/roc.png and
OUT/roc_zoom.png (validation ROC curves of all rows, whole and top-left corner), and copies the best row's
Grad-CAM contact sheet to OUT/gradcam_best.png. The table lists every finished row under OUT/runs, so a second
seed of one backbone can be added by a later call (`--backbones mobilenetv2 --seeds 1`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys

from cxr_keras.choices import DEFAULT_RULE
from cxr_keras.io_utils import atomic_writer

# Epochs that fill a 1,200 s budget at 128 px, batch 32, on 2 CPU cores (MobileNetV2: ~63 s per epoch with
# validation; the others scaled by their measured training speed).
EPOCHS = {"mobilenetv2": 16, "efficientnetb0": 16, "densenet121": 7, "resnet50": 6, "baseline": 40}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.results_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a Kermany-layout folder (NORMAL/, PNEUMONIA/)")
    parser.add_argument("--backbones", nargs="+", default=list(EPOCHS), choices=list(EPOCHS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="split seeds (default 0)")
    parser.add_argument("--time-budget", type=float, default=1200.0, help="training seconds per row (default 1200)")
    parser.add_argument("--epochs", nargs="+", default=[], metavar="BACKBONE=N",
                        help="override the epochs of a backbone, e.g. baseline=30")
    parser.add_argument("--out", default=os.path.join("runs", "results_table"), help="folder for runs and table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    epochs = {**EPOCHS, **_overrides(args.epochs)}
    rows = []
    for backbone in args.backbones:
        for seed in args.seeds:
            command = ["python", "-m", "experiments.kermany_scratch", "--data-dir", args.data_dir,
                       "--backbone", backbone, "--epochs", str(epochs[backbone]), "--time-budget",
                       f"{args.time_budget:g}", "--split-seed", str(seed), "--quiet",
                       "--run-dir", os.path.join(args.out, "runs", f"kermany-{backbone}-seed{seed}")]
            run_row(command)
    rows = finished_rows(args.out)
    write_table(rows, args.out, args.time_budget)
    return rows


def finished_rows(out: str) -> list[dict]:
    """Every finished row under OUT/runs (also those of earlier calls, e.g. a second seed), in table order."""
    rows = []
    for name in os.listdir(os.path.join(out, "runs")):
        path = os.path.join(out, "runs", name, "result.json")
        if os.path.exists(path):
            with open(path) as f:
                rows.append(json.load(f))
    return sorted(rows, key=lambda r: (list(EPOCHS).index(r["backbone"]), r["split_seed"]))


def _overrides(pairs: list[str]) -> dict[str, int]:
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in EPOCHS or not value.isdigit():
            raise SystemExit(f"--epochs takes BACKBONE=N with BACKBONE one of {', '.join(EPOCHS)}; got {pair!r}")
        out[name] = int(value)
    return out


def run_row(command: list[str]) -> None:
    """Train and evaluate one row in a subprocess, unless its result.json is already there."""
    run_dir = command[command.index("--run-dir") + 1]
    result_path = os.path.join(run_dir, "result.json")
    if not os.path.exists(result_path):
        if os.path.exists(run_dir):
            print(f"{run_dir} has no result.json (an interrupted row): training it again from the start")
            shutil.rmtree(run_dir)
        print(f"\n$ {' '.join(command)}", flush=True)
        subprocess.run([sys.executable, *command[1:]], check=True)


def write_table(rows: list[dict], out: str, budget: float) -> None:
    """results.csv, results.md, roc.png and roc_zoom.png; the best row's Grad-CAM sheet as gradcam_best.png."""
    os.makedirs(out, exist_ok=True)
    columns = [k for k in rows[0] if not k.endswith("_ci")]
    with atomic_writer(os.path.join(out, "results.csv"), newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with atomic_writer(os.path.join(out, "results.md")) as f:
        f.write(format_table(rows, budget))
    plot_rocs(rows, os.path.join(out, "roc.png"))
    plot_rocs(rows, os.path.join(out, "roc_zoom.png"), zoom=(0.2, 0.8))
    best = max(rows, key=lambda r: r["roc_auc"])
    sheet = os.path.join(best["run_dir"], "gradcam", "contact_sheet.png")
    if os.path.exists(sheet):
        shutil.copyfile(sheet, os.path.join(out, "gradcam_best.png"))
    print(format_table(rows, budget))
    print(f"Wrote {out}/results.csv, results.md, roc.png, roc_zoom.png")


def format_table(rows: list[dict], budget: float) -> str:
    ci = lambda r, k: f"{r[k]:.3f} [{r[k + '_ci'][0]:.3f}, {r[k + '_ci'][1]:.3f}]"  # noqa: E731
    int8 = lambda r: (f"{r['int8_mb']:.2f} MB, {r['int8_roc_auc']:.3f}" if "int8_mb" in r else "n/a")  # noqa: E731
    lines = [f"Validation split of the same patient-grouped 80/20 split; training budget {budget:g} s per row; "
             f"threshold by the default rule ({DEFAULT_RULE}).", "",
             "| backbone | seed | epochs | val ROC-AUC (95% CI) | sensitivity | specificity | balanced acc. | "
             "train min | peak GiB | parameters | int8 TFLite (size, AUC) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['split_seed']} | {r['epochs']} | {ci(r, 'roc_auc')} | "
                     f"{ci(r, 'sensitivity')} | {ci(r, 'specificity')} | {r['balanced_accuracy']:.3f} | "
                     f"{r['train_seconds'] / 60:.1f} | {r['peak_gib']:.2f} | {r['params']:,} | {int8(r)} |")
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in rows]
    return "\n".join(lines) + "\n"


def plot_rocs(rows: list[dict], path: str, zoom: tuple[float, float] | None = None) -> None:
    """The validation ROC curve of every row on one plot (from each run's evaluation/val/scores.csv)."""
    from cxr_keras.evaluate.plots import plot_roc
    from cxr_keras.evaluate.scores import read_scores

    columns = []
    for r in rows:
        _, y, s = read_scores(os.path.join(r["run_dir"], "evaluation", "val", "scores.csv"))
        columns.append((f"{r['backbone']} seed {r['split_seed']}", y[:, 0], s[:, 0]))
    plot_roc(columns, path, zoom=zoom)


if __name__ == "__main__":
    import sys

    from cxr_keras.cli.errors import report_errors

    sys.exit(report_errors(main))
