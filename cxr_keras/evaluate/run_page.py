"""RUN/report.html: one page for a whole run that links its parts: the model and how it was trained, the data
and its splits, training curves, the validation and test evaluations (each its own report.html), the stress
test, Grad-CAM, and, once exported, the export parity table and the model card. Read from the files the run
folder already holds, so it can be rewritten at any time (`cxr evaluate --run` and the main job do).
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter

from cxr_keras.evaluate.html_parts import esc, figure, link, page, table_html, write_page
from cxr_keras.evaluate.report import Table, fmt, with_ci
from cxr_keras.models.saving import metadata_path
from cxr_keras.run_folder import BEST, CONFIG, CURVES, HISTORY, SPLITS, run_file

PAGE = "report.html"


def write_run_page(run_dir: str, export_dir: str | None = None) -> str:
    """RUN_DIR/report.html (with `export_dir`, its export parity and model card too); returns its path."""
    name = os.path.basename(os.path.abspath(run_dir))
    built = [("model", _model(run_dir)), ("data", _data(run_dir)), ("training", _training(run_dir)),
             ("evaluation", _evaluations(run_dir)), ("stress test", _stress(run_dir)), ("Grad-CAM", _gradcam(run_dir)),
             ("export", _export(run_dir, export_dir) if export_dir and os.path.isdir(export_dir) else "")]
    sections = [(title, html) for title, html in built if html]  # a section without files is left out, and its link
    body = [f"<h1>Run {esc(name)}</h1>", _nav(run_dir, sections), *(html for _, html in sections)]
    return write_page(run_file(run_dir, PAGE), page(f"Run {name}", "\n".join(body)))


def _json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _nav(run_dir: str, sections: list[tuple[str, str]]) -> str:
    """Links to the sections the page has (each section's id is its title's first word, lower case), and to the
    evaluation pages that exist."""
    parts = [(f"#{title.split()[0].lower().replace('-', '')}", title) for title, _ in sections]
    parts += [(f"evaluation/{split}/report.html", f"{split} evaluation") for split in ("val", "test")
              if os.path.isfile(os.path.join(run_dir, "evaluation", split, "report.html"))]
    return "<nav>" + "".join(link(href, text) for href, text in parts) + "</nav>"


def _model(run_dir: str) -> str:
    config, best = _json(run_file(run_dir, CONFIG)) or {}, _json(metadata_path(run_file(run_dir, BEST))) or {}
    model, stages = config.get("model", {}), config.get("train", {}).get("stages", [])
    rows = [["backbone", f"{model.get('backbone', '?')} ({model.get('weights', '?')} weights)"],
            ["input", f"{config.get('data', {}).get('image_size', '?')} px"],
            ["stages", "; ".join(f"{s.get('name') or k + 1}: {s.get('epochs')} epochs, {s.get('trainable')}, "
                                 f"lr {s.get('learning_rate')}" for k, s in enumerate(stages))],
            ["task", f"{best.get('task', '?')}: {', '.join(best.get('classes', []))}"],
            ["threshold", f"{best.get('threshold', '?')} ({best.get('threshold_rule', 'not chosen yet')})"]]
    if best.get("ood"):
        rows.append(["out-of-distribution score", f"{best['ood']['method']}, flags above "
                                                  f"{best['ood']['threshold']:.4g} ({best['ood']['threshold_on']})"])
    return '<section id="model">' + table_html(Table("Model", ["", ""], rows, key="model")) + "</section>"


def _data(run_dir: str) -> str:
    path = run_file(run_dir, SPLITS)
    if not os.path.isfile(path):
        return ""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        classes = [c for c in reader.fieldnames or [] if c not in ("path", "split", "patient")]
        counts, patients = Counter(), {}
        for row in reader:
            split = row["split"] or "unsplit"
            counts.update((split, c) for c in classes if row.get(c) == "1")
            counts[(split, None)] += 1
            patients.setdefault(split, set()).add(row.get("patient") or row["path"])
    splits = sorted({s for s, _ in counts}, key=lambda s: {"train": 0, "val": 1, "test": 2}.get(s, 3))
    rows = [[s, str(counts[(s, None)]), str(len(patients[s])), *(str(counts[(s, c)]) for c in classes)] for s in splits]
    dropped = run_file(run_dir, "dropped.csv")
    after = f"Files left out, and why: {link('dropped.csv', 'dropped.csv')}." if os.path.isfile(dropped) else ""
    text = table_html(Table("Data", ["split", "images", "patients", *classes], rows, key="data",
                            intro="Splits by patient (splits.csv lists every file)."))
    return f'<section id="data">{text}{f"<p>{after}</p>" if after else ""}</section>'


def _training(run_dir: str) -> str:
    shown = figure(run_file(run_dir, CURVES), "Loss, AUC and accuracy per epoch; stages marked")
    return (f'<section id="training"><h2>Training</h2><div class="figures">{shown}</div>'
            f"<p>Per epoch: {link(HISTORY, HISTORY)}; TensorBoard logs in tensorboard/.</p></section>")


def _evaluations(run_dir: str) -> str:
    rows = []
    for split in ("val", "test"):
        metrics = _json(os.path.join(run_dir, "evaluation", split, "metrics.json"))
        if metrics is None:
            continue
        flagged = f"{metrics['ood']['flagged']} of {metrics['n_images']}" if metrics.get("ood") else "n/a"
        rows.append([split, str(metrics["n_images"]), with_ci(metrics, "roc_auc"), with_ci(metrics, "sensitivity"),
                     with_ci(metrics, "specificity"), fmt(metrics.get("accuracy")), flagged])
    if not rows:
        return ('<section id="evaluation"><h2>Evaluation</h2><p>Not evaluated yet: <code>cxr evaluate --run '
                f"{esc(run_dir)}</code>.</p></section>")
    links = ", ".join(link(f"evaluation/{row[0]}/report.html", f"{row[0]} report (figures, failure gallery and, "
                                                               "for binary and multi-label models, a threshold slider)")
                      for row in rows)
    text = table_html(Table("Evaluation", ["split", "images", "ROC-AUC", "sensitivity", "specificity", "accuracy",
                                           "flagged out of distribution"], rows, key="evaluation",
                            intro="At the threshold chosen on validation, applied unchanged to test."))
    return f'<section id="evaluation">{text}<p>{links}</p></section>'


def _stress(run_dir: str) -> str:
    folder = os.path.join(run_dir, "evaluation", "stress")
    shown = figure(os.path.join(folder, "stress.png"), "Each figure against shift strength, held-in and held-out")
    if not shown:
        return ""
    return (f'<section id="stress"><h2>Stress test</h2><div class="figures">{shown}</div>'
            f"<p>The table: {link('evaluation/stress/stress.md', 'stress.md')}.</p></section>")


def _gradcam(run_dir: str) -> str:
    folder = os.path.join(run_dir, "gradcam")
    shown = (figure(os.path.join(folder, "contact_sheet.png"), "Grad-CAM overlays of test images") +
             figure(os.path.join(folder, "mean_by_class.png"), "Mean Grad-CAM map by class"))
    if not shown:
        return ""
    return (f'<section id="gradcam"><h2>Grad-CAM</h2><div class="figures">{shown}</div>'
            f"<p>One file per image in {link('gradcam/', 'gradcam/')}.</p></section>")


def _export(run_dir: str, export_dir: str) -> str:
    report, card = _json(os.path.join(export_dir, "export_report.json")), _json(os.path.join(export_dir,
                                                                                          "model_card.json"))
    where = os.path.relpath(export_dir, run_dir)
    parts = ['<section id="export"><h2>Export</h2>',
             f"<p>In {link(where + '/', where)}: {link(where + '/model_card.json', 'model_card.json')}, "
             f"{link(where + '/README.md', 'README.md')}.</p>"]
    if report:
        rows = [[name, fmt(row.get("roc_auc")), fmt(row.get("sensitivity")), fmt(row.get("specificity")),
                 f"{row.get('max_abs_dp', 0):.1e}", "n/a" if row.get("ood_flag_agreement") is None
                 else f"{row['ood_flag_agreement']:.3f}", f"{row['bytes'] / 1e6:.2f}", f"{row['mean_ms']:.1f}"]
                for name, row in report["artifacts"].items()]
        parts.append(table_html(Table("", ["artifact", "ROC-AUC", "sensitivity", "specificity", "max |dp|",
                                           "OOD flag agreement", "MB", "ms/image"], rows, key="parity",
                                      intro=f"Parity on {report['n_images']} images, threshold "
                                            f"{report['threshold']}, {report['threads']} threads:")))
    if card:
        rows = [[key, str(card.get(key))] for key in ("task", "classes", "positive_class", "threshold",
                                                     "threshold_rule", "backbone", "weights", "intended_use",
                                                     "limitations") if key in card]
        parts.append(table_html(Table("Model card", ["field", "value"], rows, key="card")))
    return "\n".join(parts) + "</section>"
