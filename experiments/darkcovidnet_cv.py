"""Multi-class from scratch with 5-fold patient-grouped cross-validation, and a Grad-CAM shortcut check.

    python -m experiments.darkcovidnet_cv --data-dir ../shared/datasets/darkcovidnet

The kermany_scratch recipe (MobileNetV2, random weights, 128 px, warm-up + cosine, class weights) trained once per
fold: `--split-fold k` rotates a seeded, stratified, patient-grouped 80/20 split so that the five validation
folds cover every patient once. Per fold: accuracy, macro-F1, per-class sensitivity and macro ROC-AUC on its
validation fold; then mean and standard deviation over folds, and the pooled out-of-fold confusion matrix.

Shortcut check: Grad-CAM on every validation image of every fold, and the share of each heat map in the outer
12.5% band of the image (44% of its area), per predicted class. The COVID-19 images come from other hospitals
and publications than the NIH images of the other classes; a model that has learnt the source rather than the
lungs puts its heat on borders, corners and burned-in text, and shows here as a border share far above the rest.
OUT/gradcam_mean.png shows each predicted class's mean heat map over all folds: where that class looks.

Writes OUT/cv.json, OUT/cv.md and OUT/gradcam_mean.png; a fold whose evaluation exists is not trained again
(an interrupted run resumes). Every `cxr train` option applies to each fold; in `--init-from`, `{fold}` stands
for the fold's number, so each fold can start from its own earlier model and never from one that saw its
validation images:

    python -m experiments.darkcovidnet_cv --data-dir DATA --out runs/cv-128
    python -m experiments.darkcovidnet_cv --data-dir DATA --out runs/cv-224 --image-size 224 --epochs 6 \
        --learning-rates 2e-4 --init-from 'runs/cv-128/fold{fold}/best.keras'
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from cxr_keras.cli.train_options import config_from_args
from cxr_keras.io_utils import atomic_writer
from experiments import kermany_scratch
from experiments.sample_data import parse_args

# The kermany_scratch recipe, with more epochs for the smaller training folds (about 900 images each).
CONFIG = dataclasses.replace(
    kermany_scratch.CONFIG, name="darkcovidnet_cv",
    train=dataclasses.replace(kermany_scratch.CONFIG.train,
                              stages=[dataclasses.replace(kermany_scratch.CONFIG.train.stages[0], epochs=30)]),
)
SAMPLE = {"image_size": 64, "batch_size": 16, "epochs": [4], "patients": 60}


def _extra(parser) -> None:
    parser.add_argument("--folds", type=int, default=5, help="number of folds (the split is 1 - 1/folds : 1/folds)")
    parser.add_argument("--out", default=os.path.join("runs", "darkcovidnet_cv"), help="folder for folds and summary")


def main(argv: list[str] | None = None) -> dict:
    from cxr_keras.evaluate.evaluate import evaluate_run
    from cxr_keras.evaluate.explain import ExplainOptions, explain
    from cxr_keras.run_folder import run_table
    from cxr_keras.train import run_experiment

    args = parse_args("darkcovidnet_cv", __doc__, argv, SAMPLE, task="multiclass", extra=_extra)
    base = config_from_args(args, CONFIG)
    base.data.split_ratios = (1 - 1 / args.folds, 1 / args.folds, 0.0)
    folds = []
    for k in range(args.folds):
        run_dir = os.path.join(args.out, f"fold{k}")
        done = os.path.join(run_dir, "evaluation", "val", "metrics.json")
        if not os.path.exists(done):
            if os.path.exists(run_dir):
                import shutil

                print(f"{run_dir} has no evaluation (an interrupted fold): training it again from the start")
                shutil.rmtree(run_dir)
            config = dataclasses.replace(
                base, name=f"{base.name}-fold{k}", data=dataclasses.replace(base.data, split_fold=k),
                model=dataclasses.replace(base.model, init_from=base.model.init_from.replace("{fold}", str(k))))
            run_experiment(config, run_dir=run_dir, quiet=args.quiet)
            val = run_table(run_dir).split("val")
            explain(os.path.join(run_dir, "best.keras"), val.paths, os.path.join(run_dir, "gradcam"),
                    ExplainOptions(figures=0))
            evaluate_run(run_dir, stress=None)  # per fold: the border check is this experiment's proxy
        with open(done) as f:
            metrics = json.load(f)
        with open(os.path.join(run_dir, "gradcam", "gradcam.json")) as f:
            border = json.load(f)["border"]
        folds.append(fold_row(k, metrics, border))
        print(f"fold {k}: accuracy {folds[-1]['accuracy']:.3f}, macro-F1 {folds[-1]['macro_f1']:.3f}, "
              f"sensitivity {folds[-1]['sensitivity']}")
    summary = summarise(folds, args.out)
    summary["pairwise_auc"] = pairwise_auc([os.path.join(args.out, f"fold{k}", "evaluation", "val", "scores.csv")
                                            for k in range(args.folds)], summary["classes"])
    os.makedirs(args.out, exist_ok=True)
    mean_map_figure([os.path.join(args.out, f"fold{k}", "gradcam") for k in range(args.folds)],
                    os.path.join(args.out, "gradcam_mean.png"))
    with atomic_writer(os.path.join(args.out, "cv.json")) as f:
        json.dump(summary, f, indent=2)
    with atomic_writer(os.path.join(args.out, "cv.md")) as f:
        f.write(format_summary(summary))
    print(format_summary(summary))
    return summary


def fold_row(k: int, metrics: dict, border: dict) -> dict:
    """One fold's validation figures and its Grad-CAM border shares."""
    return {"fold": k, "n_val": metrics["n_images"], "accuracy": metrics["accuracy"],
            "macro_f1": metrics["averages"]["macro"]["f1"], "macro_auc": metrics["roc_auc"],
            "sensitivity": {c: v["recall"] for c, v in metrics["per_class"].items()},
            "confusion": metrics["confusion_matrix"], "border": border}


def summarise(folds: list[dict], out: str) -> dict:
    """Mean and standard deviation over folds; pooled confusion matrix; border shares pooled over folds."""
    stat = lambda values: {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1  # noqa: E731
                           else 0.0}
    classes = list(folds[0]["sensitivity"])
    border_classes = sorted({c for f in folds for c in f["border"]["per_class"]})
    pooled_border = {}
    for c in border_classes:
        entries = [f["border"]["per_class"][c] for f in folds if c in f["border"]["per_class"]]
        n = sum(e["images"] for e in entries)
        pooled_border[c] = {"images": n,
                            "energy_share": sum(e["energy_share"] * e["images"] for e in entries) / n,
                            "peak_share": sum(e["peak_share"] * e["images"] for e in entries) / n}
    return {"folds": folds, "classes": classes, "out": out,
            "accuracy": stat([f["accuracy"] for f in folds]), "macro_f1": stat([f["macro_f1"] for f in folds]),
            "macro_auc": stat([f["macro_auc"] for f in folds]),
            "sensitivity": {c: stat([f["sensitivity"][c] for f in folds]) for c in classes},
            "confusion": np.sum([f["confusion"] for f in folds], axis=0).tolist(),
            "border": {"band": folds[0]["border"]["band"], "area_share": folds[0]["border"]["area_share"],
                       "per_predicted_class": pooled_border}}


def pairwise_auc(score_files: list[str], classes: list[str]) -> dict[str, float]:
    """Out-of-fold ROC-AUC of each pair of classes on the images of those two classes, scored p_b / (p_a + p_b)
    (Hand and Till's one-vs-one): which distinction the errors come from."""
    import itertools

    from sklearn.metrics import roc_auc_score

    from cxr_keras.evaluate.scores import read_scores

    read = [read_scores(path) for path in score_files]  # columns in the model's class order, as `classes`
    truth = np.concatenate([y for _, y, _ in read]).argmax(axis=1)
    scores = np.concatenate([s for _, _, s in read])
    result = {}
    for a, b in itertools.combinations(range(len(classes)), 2):
        pair = (truth == a) | (truth == b)
        ratio = scores[pair, b] / np.maximum(scores[pair, a] + scores[pair, b], 1e-12)
        result[f"{classes[a]} vs {classes[b]}"] = float(roc_auc_score(truth[pair] == b, ratio))
    return result


def mean_map_figure(gradcam_dirs: list[str], path: str) -> dict[str, np.ndarray]:
    """Each predicted class's mean Grad-CAM map over the folds' validation images, saved as one figure."""
    from cxr_keras.evaluate.localisation import save_mean_maps

    cams, explained = [], []
    for folder in gradcam_dirs:
        with open(os.path.join(folder, "gradcam.json")) as f:
            explained += json.load(f)["explained"]
        cams.append(np.load(os.path.join(folder, "cams.npy")))
    return save_mean_maps(np.concatenate(cams), explained, path)


def format_summary(s: dict) -> str:
    ms = lambda v: f"{v['mean']:.3f} ± {v['std']:.3f}"  # noqa: E731
    lines = [f"{len(s['folds'])}-fold patient-grouped cross-validation (validation folds cover every patient once)",
             "", "| fold | images | accuracy | macro-F1 | macro ROC-AUC | " +
             " | ".join(f"sensitivity {c}" for c in s["classes"]) + " |",
             "|---" * (5 + len(s["classes"])) + "|"]
    for f in s["folds"]:
        lines.append(f"| {f['fold']} | {f['n_val']} | {f['accuracy']:.3f} | {f['macro_f1']:.3f} | "
                     f"{f['macro_auc']:.3f} | " + " | ".join(f"{f['sensitivity'][c]:.3f}" for c in s["classes"]) + " |")
    lines.append(f"| mean ± sd | | {ms(s['accuracy'])} | {ms(s['macro_f1'])} | {ms(s['macro_auc'])} | " +
                 " | ".join(ms(s["sensitivity"][c]) for c in s["classes"]) + " |")
    lines += ["", f"Pooled confusion matrix (rows true, columns predicted; {', '.join(s['classes'])}): "
              f"{s['confusion']}", "",
              "Out-of-fold ROC-AUC of each pair of classes, on the images of those two classes: " +
              ", ".join(f"{pair} {auc:.3f}" for pair, auc in s.get("pairwise_auc", {}).items()), "",
              f"Grad-CAM border check (outer {s['border']['band']:.1%} band = {s['border']['area_share']:.0%} of the "
              "area), by predicted class:", "", "| predicted | images | heat in border | peaks in border |",
              "|---|---|---|---|"]
    for c, b in s["border"]["per_predicted_class"].items():
        lines.append(f"| {c} | {b['images']} | {b['energy_share']:.1%} | {b['peak_share']:.1%} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    from cxr_keras.cli.errors import report_errors

    sys.exit(report_errors(main))
