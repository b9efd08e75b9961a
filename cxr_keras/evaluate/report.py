"""The content of an evaluation's report, once: its intro lines and tables built from metrics.json, rendered as
report.md here and as report.html by `html_report` (the same rows, so the two never disagree)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cxr_keras.display import threshold_text
from cxr_keras.io_utils import atomic_writer


@dataclass
class Table:
    """A titled table: text above it, a header row, rows of cells (already formatted), text below it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    intro: str = ""
    after: str = ""
    key: str = field(default="")  # an id for the HTML page


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def with_ci(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "n/a"
    ci = metrics.get("ci", {}).get(key)
    return f"{value:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if ci else f"{value:.3f}"


def title(metrics: dict) -> str:
    return f"Evaluation: {metrics['task']}, {metrics['n_images']} images"


def intro_lines(metrics: dict) -> list[tuple[str, bool]]:
    """(line, emphasised): classes, threshold and intervals; files left out; notes; the caveat; the class map.
    Links are the file names the report points at."""
    level = int(round(100 * metrics["ci"]["level"]))
    lines = [(f"Classes: {', '.join(metrics['classes'])}. Threshold {threshold_text(metrics['threshold'])} "
              f"({metrics.get('threshold_rule', '')}). Intervals: {level}% bootstrap, "
              f"{metrics['ci']['resamples']} resamples, seed {metrics['ci']['seed']}.", False)]
    if metrics.get("dropped"):
        dropped = metrics["dropped"]
        lines.append((f"{dropped['count']} files could not be read and were left out: see {dropped['file']}.", False))
    if metrics.get("note"):
        lines.append((f"Note: {metrics['note']}.", False))
    if metrics.get("caveat"):
        lines.append((metrics["caveat"], True))
    if metrics.get("class_map"):
        cmap = metrics["class_map"]
        lines.append((f"Classes mapped from the data's own names ({cmap['mapping']}): {cmap['images']} of "
                      f"{cmap['images_before']} images kept.", False))
    return lines


def summary_table(metrics: dict) -> Table:
    rows = [["ROC-AUC", with_ci(metrics, "roc_auc")]]
    rows += [[key, with_ci(metrics, key)] for key in ("sensitivity", "specificity", "f1", "ppv", "npv")
             if key in metrics]
    rows += [[key.replace("_", " "), f"{metrics[key]:.3f}"] for key in
             ("pr_auc", "accuracy", "balanced_accuracy", "hamming_accuracy", "roc_auc_micro", "brier", "ece")
             if metrics.get(key) is not None]
    return Table("", ["metric", "value"], rows, key="summary")


def per_class_tables(metrics: dict) -> list[Table]:
    classes = [[name, str(row["support"]), f"{row['sensitivity']:.3f}", f"{row['specificity']:.3f}",
                f"{row['precision']:.3f}", f"{row['f1']:.3f}", fmt(row["roc_auc"])]
               for name, row in metrics["per_class"].items()]
    averages = [[name, *(f"{row[k]:.3f}" for k in ("precision", "recall", "specificity", "f1"))]
                for name, row in metrics["averages"].items()]
    return [Table("Per class", ["class", "support", "sensitivity", "specificity", "precision", "F1", "ROC-AUC"],
                  classes, key="per-class"),
            Table("", ["average", "precision", "recall", "specificity", "F1"], averages, key="averages")]


def stress_table(stress: dict, link: str) -> Table:
    base, groups = stress["unshifted"], stress.get("worst_by_group") or {"": stress["worst"]}
    rows = [[key.replace("_", " "), f"{base[key]:.3f}", f"{worst['value']:.3f}",
             f"{worst['shift']} {worst['strength']:g}{f' ({group})' if group else ''}"]
            for group, worst_cases in groups.items() for key, worst in worst_cases.items()]
    return Table("Under acquisition shifts", ["figure", "unshifted", "worst shifted", "under"], rows, key="stress",
                 intro=(f"The {stress['split']} split ({stress['n_images']} images) re-scored under graded shifts "
                        f"(strengths {', '.join(f'{s:g}' for s in stress['strengths'])}); the largest drop of each "
                        f"figure, at this threshold ({link})."),
                 after=("Held-out shifts are kinds no training option applies: their rows are the fair test of a "
                        "model trained with augmentation or consistency, and of a shift-aware threshold."
                        if len(groups) > 1 else ""))


def ood_tables(ood: dict) -> list[Table]:
    subsets = [[name, str(row["n_images"]), fmt(row["roc_auc"]), fmt(row.get("sensitivity")),
                fmt(row.get("specificity")), fmt(row["accuracy"])]
               for name, row in (("accepted", ood["accepted_metrics"]), ("flagged", ood["flagged_metrics"])) if row]
    curves = list(ood["risk_coverage"].values())
    coverage = [[f"{c:.0%}", *(fmt(curve["accuracy"][k]) for curve in curves)]
                for k, c in enumerate(curves[0]["coverage"]) if k % 2 == 0]  # every 10%
    return [Table("Films not of the model's kind", ["films", "images", "ROC-AUC", "sensitivity", "specificity",
                                                    "accuracy"], subsets, key="ood",
                  intro=(f"{ood['flagged']} films ({ood['flagged_rate']:.1%}) have an out-of-distribution score "
                         f"above {ood['threshold']:.4g}, the cut that flags at most 5% of validation films. At the "
                         "same threshold:")),
            Table("", ["coverage", *(f"by {name}" for name in ood["risk_coverage"])], coverage, key="coverage",
                  intro="Abstaining on the least trusted films (accuracy of the films answered):")]


def cohort_table(cohorts: dict) -> Table:
    rows = [[name, str(row["n_images"]), str(row["n_positive"]), fmt(row["roc_auc"]), fmt(row.get("sensitivity")),
             fmt(row.get("specificity")), fmt(row["accuracy"])] for name, row in cohorts.items()]
    return Table("By cohort", ["cohort", "images", "with a positive label", "ROC-AUC", "sensitivity", "specificity",
                               "accuracy"], rows, key="cohorts",
                 intro="At the same threshold. A cohort that differs from the others shows what another site may see.")


def failure_table(failures: list[dict]) -> Table:
    return Table("Most confident mistakes", ["file", "kind", "true", "predicted", "score"],
                 [[f["path"], f.get("kind", ""), f["true"], f["predicted"], f"{f['score']:.3f}"] for f in failures],
                 key="failures")


def tables(metrics: dict, stress_link: str) -> list[Table]:
    """Every table of the report, in order."""
    out = [summary_table(metrics), *per_class_tables(metrics)]
    if metrics.get("stress"):
        out.append(stress_table(metrics["stress"], stress_link))
    if metrics.get("ood"):
        out += ood_tables(metrics["ood"])
    if metrics.get("cohorts"):
        out.append(cohort_table(metrics["cohorts"]))
    if metrics.get("failures"):
        out.append(failure_table(metrics["failures"]))
    return out


def markdown_table(table: Table) -> list[str]:
    lines = [""] + ([f"## {table.title}", ""] if table.title else []) + ([table.intro, ""] if table.intro else [])
    lines += ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in table.rows]
    return lines + (["", table.after] if table.after else [])


def _markdown_text(text: str) -> str:
    """Text as Markdown shows it literally: HTML in a class or file name (a `<!--` would hide the rest) stays text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _markdown_cell(text: str) -> str:
    """A table cell: literal text, and a | that does not split it."""
    return _markdown_text(text).replace("|", "\\|")


def format_report(metrics: dict) -> str:
    lines = [f"# {title(metrics)}", ""]
    for line, emphasised in intro_lines(metrics):
        lines += [f"**{_markdown_text(line)}**" if emphasised else _markdown_text(line), ""]
    stress_link = f"[table and figure]({metrics['stress']['file']})" if metrics.get("stress") else ""
    for table in tables(metrics, stress_link):
        lines += markdown_table(table)
    slider = ", with a threshold slider" if metrics.get("operating_points") else ""
    lines += ["", "## Figures", "", f"The same on one page{slider}: [report.html](report.html).", ""]
    lines += [f"![{name}]({path})" for name, path in metrics.get("figures", {}).items()]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def write_report(metrics: dict, path: str) -> None:
    with atomic_writer(path) as f:
        f.write(format_report(metrics))
