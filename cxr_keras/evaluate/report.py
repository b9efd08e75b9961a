"""report.md: the metrics of an evaluation as tables, with links to its figures."""

from __future__ import annotations

from cxr_keras.display import threshold_text
from cxr_keras.io_utils import atomic_writer


def _with_ci(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "n/a"
    ci = metrics.get("ci", {}).get(key)
    return f"{value:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else f"{value:.3f}"


def _dropped_lines(dropped: dict | None) -> list[str]:
    if not dropped:
        return []
    return [f"{dropped['count']} files could not be read and were left out: see [{dropped['file']}]"
            f"({dropped['file']}).", ""]


def format_report(metrics: dict) -> str:
    level = int(round(100 * metrics["ci"]["level"]))
    lines = [f"# Evaluation: {metrics['task']}, {metrics['n_images']} images", "",
             f"Classes: {', '.join(metrics['classes'])}. Threshold {threshold_text(metrics['threshold'])} "
             f"({metrics.get('threshold_rule', '')}). Intervals: {level}% bootstrap, "
             f"{metrics['ci']['resamples']} resamples, seed {metrics['ci']['seed']}.", "",
             *_dropped_lines(metrics.get("dropped")),
             *([f"Note: {metrics['note']}.", ""] if metrics.get("note") else []),
             *([f"**{metrics['caveat']}**", ""] if metrics.get("caveat") else []),
             *([f"Classes mapped from the data's own names ({metrics['class_map']['mapping']}): "
                f"{metrics['class_map']['images']} of {metrics['class_map']['images_before']} images kept.", ""]
               if metrics.get("class_map") else []),
             "| metric | value |", "|---|---|",
             f"| ROC-AUC | {_with_ci(metrics, 'roc_auc')} |"]
    for key in ("sensitivity", "specificity", "f1", "ppv", "npv"):
        if key in metrics:
            lines.append(f"| {key} | {_with_ci(metrics, key)} |")
    for key in ("pr_auc", "accuracy", "balanced_accuracy", "hamming_accuracy", "roc_auc_micro", "brier", "ece"):
        if metrics.get(key) is not None:
            lines.append(f"| {key.replace('_', ' ')} | {metrics[key]:.3f} |")
    lines += ["", "## Per class", "", "| class | support | sensitivity | specificity | precision | F1 | ROC-AUC |",
              "|---|---|---|---|---|---|---|"]
    for name, row in metrics["per_class"].items():
        auc = "n/a" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
        lines.append(f"| {name} | {row['support']} | {row['sensitivity']:.3f} | {row['specificity']:.3f} | "
                     f"{row['precision']:.3f} | {row['f1']:.3f} | {auc} |")
    lines += ["", "| average | precision | recall | specificity | F1 |", "|---|---|---|---|---|"]
    for name, row in metrics["averages"].items():
        lines.append(f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['specificity']:.3f} | "
                     f"{row['f1']:.3f} |")
    if metrics.get("stress"):
        lines += _stress_lines(metrics["stress"])
    if metrics.get("ood"):
        lines += _ood_lines(metrics["ood"])
    if metrics.get("cohorts"):
        lines += _cohort_lines(metrics["cohorts"])
    if metrics.get("failures"):
        lines += ["", "## Most confident mistakes", "", "| file | true | predicted | score |", "|---|---|---|---|"]
        lines += [f"| {f['path']} | {f['true']} | {f['predicted']} | {f['score']:.3f} |" for f in metrics["failures"]]
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({path})" for name, path in metrics.get("figures", {}).items()]
    return "\n".join(lines) + "\n"


def _stress_lines(stress: dict) -> list[str]:
    base = stress["unshifted"]
    lines = ["", "## Under acquisition shifts", "",
             f"The {stress['split']} split ({stress['n_images']} images) re-scored under graded shifts (strengths "
             f"{', '.join(f'{s:g}' for s in stress['strengths'])}); the largest drop of each figure, at this "
             f"threshold ([table and figure]({stress['file']})):", "",
             "| figure | unshifted | worst shifted | under |", "|---|---|---|---|"]
    groups = stress.get("worst_by_group") or {"": stress["worst"]}
    for group, worst_cases in groups.items():
        for key, worst in worst_cases.items():
            lines.append(f"| {key.replace('_', ' ')} | {base[key]:.3f} | {worst['value']:.3f} | {worst['shift']} "
                         f"{worst['strength']:g}{f' ({group})' if group else ''} |")
    if len(groups) > 1:
        lines += ["", "Held-out shifts are kinds no training option applies: their rows are the fair test of a "
                      "model trained with augmentation or consistency, and of a shift-aware threshold."]
    return lines


def _ood_lines(ood: dict) -> list[str]:
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["", "## Films not of the model's kind", "",
             f"{ood['flagged']} films ({ood['flagged_rate']:.1%}) have an out-of-distribution score above "
             f"{ood['threshold']:.4g}, the cut that flags at most 5% of validation films. At the same threshold:", "",
             "| films | images | ROC-AUC | sensitivity | specificity | accuracy |", "|---|---|---|---|---|---|"]
    for name, row in (("accepted", ood["accepted_metrics"]), ("flagged", ood["flagged_metrics"])):
        if row:
            lines.append(f"| {name} | {row['n_images']} | {fmt(row['roc_auc'])} | {fmt(row.get('sensitivity'))} | "
                         f"{fmt(row.get('specificity'))} | {fmt(row['accuracy'])} |")
    lines += ["", "Abstaining on the least trusted films (accuracy of the films answered):", "",
              "| coverage | " + " | ".join(f"by {name}" for name in ood["risk_coverage"]) + " |",
              "|---|" + "---|" * len(ood["risk_coverage"])]
    curves = list(ood["risk_coverage"].values())
    for k, coverage in enumerate(curves[0]["coverage"]):
        if k % 2 == 0:  # every 10%
            lines.append(f"| {coverage:.0%} | " + " | ".join(fmt(c["accuracy"][k]) for c in curves) + " |")
    return lines


def _cohort_lines(cohorts: dict) -> list[str]:
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["", "## By cohort", "",
             "At the same threshold. A cohort that differs from the others shows what another site may see.", "",
             "| cohort | images | with a positive label | ROC-AUC | sensitivity | specificity | accuracy |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {row['n_images']} | {row['n_positive']} | {fmt(row['roc_auc'])} | "
              f"{fmt(row.get('sensitivity'))} | {fmt(row.get('specificity'))} | {fmt(row['accuracy'])} |"
              for name, row in cohorts.items()]
    return lines


def write_report(metrics: dict, path: str) -> None:
    with atomic_writer(path) as f:
        f.write(format_report(metrics))
