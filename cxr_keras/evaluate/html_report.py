"""report.html of an evaluation: the tables of report.md, every figure inlined, an operating-point explorer (a
threshold slider over metrics.json's `operating_points`) for binary models and each finding of multi-label ones,
the failure gallery (the most confident false positives and false negatives with their Grad-CAM overlays) and,
when the out-of-distribution score exists, the flagged films apart. One file, nothing fetched: it opens offline.
"""

from __future__ import annotations

import json
import os

from cxr_keras.evaluate.html_parts import asset, esc, figure, link, page, table_html, write_page
from cxr_keras.evaluate.report import intro_lines, tables, title

FIGURES = {"roc": "ROC curve with its 95% bootstrap band", "pr": "Precision-recall curve",
           "threshold_sweep": "Sensitivity, specificity, PPV and NPV at every threshold",
           "confusion": "Confusion matrix at the chosen threshold", "reliability": "Reliability diagram",
           "per_class": "Per-class figures", "risk_coverage": "Risk-coverage: abstaining on the least trusted films"}
PLOT = 240  # the explorer's curve panels, in SVG units (explorer.js draws in the same frame)
PAD = 28


def write_html_report(metrics: dict, out: str) -> str:
    """OUT/report.html for an evaluation whose metrics.json and figures are in OUT; returns its path."""
    stress = metrics.get("stress")
    stress_link = link(stress["file"].replace(".md", ".png"), "figure") if stress else ""
    body = [f"<h1>{esc(title(metrics))}</h1>"]
    body += [f'<p class="caveat">{esc(line)}</p>' if emphasised else f"<p>{esc(line)}</p>"
             for line, emphasised in intro_lines(metrics)]
    body.append('<p class="muted">The same content as report.md beside this page; every number is read from '
                "metrics.json.</p>")
    parts = tables(metrics, "")
    body.append(table_html(parts[0]))
    if metrics.get("operating_points"):
        body.append(explorer(metrics["operating_points"], metrics.get("threshold_rule", "")))
    body.append("<h2>Figures</h2>" + figures(metrics.get("figures", {}), out))
    for table in parts[1:]:
        if table.key == "failures":
            body.append(gallery("Most confident mistakes", metrics["failures"], out, by_kind=True))
            continue
        body.append(table_html(table))
        if table.key == "stress":
            shown = figure(os.path.join(out, os.path.dirname(stress["file"]), "stress.png"),
                           "Each figure against shift strength")
            body.append(f'<div class="figures">{shown}</div>' if shown else "")
            body.append(f'<p class="muted">The whole stress table: {link(stress["file"], "stress.md")} '
                        f"({stress_link}).</p>")
        if table.key == "coverage" and metrics["ood"].get("flagged_films"):
            body.append(gallery("Flagged as not the model's kind of film", metrics["ood"]["flagged_films"], out,
                                by_kind=False, level=3))
    script = asset("explorer.js") if metrics.get("operating_points") else ""
    return write_page(os.path.join(out, "report.html"), page(title(metrics), "\n".join(body), script))


def figures(named: dict[str, str], out: str) -> str:
    shown = [figure(os.path.join(out, file), FIGURES.get(name, name.replace("_", " ")))
             for name, file in named.items() if name != "failures"]
    return f'<div class="figures">{"".join(shown)}</div>'


def gallery(heading: str, entries: list[dict], out: str, by_kind: bool, level: int = 2) -> str:
    """Tiles with captions (file, true and predicted label, score; for flagged films their OOD score), grouped
    by kind of mistake when `by_kind`."""
    groups: dict[str, list[dict]] = {}
    for entry in entries:
        groups.setdefault(entry.get("kind", "") if by_kind else "", []).append(entry)
    parts = [f"<h{level}>{esc(heading)}</h{level}>"]
    if by_kind and entries and not entries[0].get("cam"):
        parts.append('<p class="muted">Without Grad-CAM: the model gives it nothing to work on.</p>')
    for kind, group in groups.items():
        if kind:
            parts.append(f"<h{level + 1}>{esc(kind.capitalize())}s ({len(group)})</h{level + 1}>")
        tiles = [figure(os.path.join(out, entry["tile"]), caption(entry), alt=os.path.basename(entry["path"]))
                 for entry in group if entry.get("tile")]
        parts.append(f'<div class="gallery" id="gallery-{esc(kind.replace(" ", "-") or "flagged")}">'
                     f'{"".join(tiles)}</div>')
    return "\n".join(parts)


def caption(entry: dict) -> str:
    text = f"{os.path.basename(entry['path'])}: true {entry['true']}, predicted {entry['predicted']} " \
           f"(score {entry['score']:.3f})"
    if "ood_score" in entry:
        text += f"; out-of-distribution score {entry['ood_score']:.3g}"
    return text


def explorer(points: dict, rule: str) -> str:
    """The slider, its readouts, the confusion matrix and the ROC and PR panels; explorer.js fills them."""
    names = list(points)
    chooser = ("<label>Finding <select id=\"op-finding\">" +
               "".join(f'<option value="{esc(n)}">{esc(n)}</option>' for n in names) +
               '</select><b class="print-only" id="op-finding-printed"></b></label>'
               if len(names) > 1 else f"<span>Finding: <b>{esc(names[0])}</b></span>")
    # inside <script>, "<!--" or "</script" in a class name would end or swallow the block: no < > & in it at all
    data = (json.dumps(points, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))
    readouts = "".join(
        f"<tr><th>{label}</th><td class=num id=\"op-{key}\"></td><td id=\"op-{key}-ci\"></td></tr>"
        for key, label in (("sensitivity", "sensitivity"), ("specificity", "specificity")))
    return f"""<section id="explorer">
<h2>Operating point</h2>
<p>Move the slider to see what another threshold would decide on these images. The threshold in use was chosen
by: {esc(rule)} (<span id="op-chosen"></span>, marked by the red ring). Counts, sensitivity, specificity and their
95% bootstrap intervals are metrics.json's <code>operating_points</code>; PPV and NPV at another prevalence follow
by Bayes' rule.</p>
<div class="controls">{chooser}
<label>Threshold <input type="range" id="op-slider" min="0" max="0" step="1" value="0"></label>
<span><b id="op-threshold"></b> <span id="op-at-chosen" class="muted"></span></span>
<button type="button" id="op-reset">Back to the chosen threshold</button></div>
<div class="panels">
<div><table><thead><tr><th></th><th>value</th><th>95% interval</th></tr></thead><tbody>{readouts}
<tr><th>PPV at this set's prevalence (<span id="op-set-prevalence"></span>)</th>
<td class=num id="op-ppv"></td><td></td></tr>
<tr><th>NPV at this set's prevalence</th><td class=num id="op-npv"></td><td></td></tr>
<tr><th>PPV at a prevalence of <input type="number" id="op-prevalence" min="0.1" max="99.9" step="0.1"
 style="width:5em"><span class="print-only" id="op-prevalence-printed"></span> %</th>
<td class=num id="op-ppv-user"></td><td></td></tr>
<tr><th>NPV at that prevalence</th><td class=num id="op-npv-user"></td><td></td></tr></tbody></table>
<table id="op-confusion"><thead><tr><th></th><th>decided positive</th><th>decided negative</th></tr></thead>
<tbody><tr><th>truly positive</th><td class=num id="op-tp"></td><td class=num id="op-fn"></td></tr>
<tr><th>truly negative</th><td class=num id="op-fp"></td><td class=num id="op-tn"></td></tr></tbody></table></div>
{_curve_panel("op-roc", "ROC curve")}
{_curve_panel("op-pr", "Precision-recall curve")}
</div>
<script type="application/json" id="op-data">{data}</script>
</section>"""


def _curve_panel(key: str, label: str) -> str:
    low, high = PLOT - PAD, PAD / 2
    return (f'<svg class="curve" id="{key}" viewBox="0 0 {PLOT} {PLOT}" role="img" aria-label="{label}">'
            f'<line class="axis" x1="{PAD}" y1="{low}" x2="{PLOT - high}" y2="{low}"/>'
            f'<line class="axis" x1="{PAD}" y1="{low}" x2="{PAD}" y2="{high}"/>'
            f'<text class="xlabel" x="{PLOT / 2}" y="{PLOT - 8}" text-anchor="middle"></text>'
            f'<text class="ylabel" x="{-PLOT / 2}" y="12" transform="rotate(-90)" text-anchor="middle"></text>'
            f'<text x="{PAD - 3}" y="{low + 11}" text-anchor="end">0</text>'
            f'<text x="{PLOT - high}" y="{low + 11}" text-anchor="middle">1</text>'
            f'<text x="{PAD - 4}" y="{high + 4}" text-anchor="end">1</text>'
            '<polyline class="line" points=""/><circle class="chosen" r="6"/><circle class="now" r="4"/></svg>')
