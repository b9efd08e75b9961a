"""Proxies for external validation of a binary pneumonia run, and which threshold rule survives shift.

    python -m experiments.proxies --run runs/study/scratch-seed0 --datasets ../shared/datasets

A run's validation split comes from the cohort it was trained on, so its figures are optimistic. This scores
the run's best.keras (without any calibration layer: the raw scores) on:
  - val: its own validation split, per naming cohort (`--cohort-pattern`; Kermany's normals are `NORMAL2-IM-...`
    and `IM-...`, the pneumonia images `person...`);
  - adult normals: the 1,200 `Normal` images of covid-radiography-2class (RSNA/NIH adults; specificity only);
  - NIH: darkcovidnet's 500 `No_findings` against its 500 `Pneumonia` images (adult NIH ChestX-ray14, labels
    report-mined): ROC-AUC, sensitivity, specificity;
  - stress: the validation split under the acquisition shifts of `cxr evaluate --stress` at `--strengths`, in two
    groups: held-in (kinds a training option or the shift-aware rules may use) and held-out (kinds none does);
  - loco (with `--loco-run`): the test split of a leave-one-cohort-out run of the same recipe, e.g. trained with
    `--cohort-pattern '^(NORMAL2|IM|person)' --hold-out-cohort NORMAL2` (specificity on a normal cohort never seen).
Each threshold rule of `--rules` picks a threshold on validation ('platt' fits Platt scaling on validation and
cuts the calibrated probability at 0.5); the rule is then judged on every proxy. Scores are cached in
RUN/proxies/scores.npz, so a second call with other rules is quick. Writes RUN/proxies/proxies.json and
proxies.md; prints the table. `--tta` scores with test-time augmentation (files suffixed -tta).

    python -m experiments.proxies --table plateau RUN1 RUN2 ...     # the variant table of docs/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from cxr_keras.io_utils import atomic_writer

RULES = ("balanced", "youden", "plateau", "plateau:0.05", "platt", "sensitivity:0.95", "sensitivity:0.9",
         "specificity:0.99", "shift-mean", "shift-worst")
KERMANY_COHORTS = r"^(NORMAL2|IM|person)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.proxies", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a binary run folder (best.keras, splits.csv, config.json)")
    parser.add_argument("--datasets", default=os.path.join("..", "shared", "datasets"),
                        help="folder holding covid-radiography-2class/ and darkcovidnet/ (default ../shared/datasets)")
    parser.add_argument("--rules", nargs="+", default=list(RULES), help=f"threshold rules (default {' '.join(RULES)})")
    parser.add_argument("--cohort-pattern", default=KERMANY_COHORTS, help="cohorts in val (default Kermany's)")
    parser.add_argument("--strengths", nargs="+", type=float, default=[0.5, 1.0], help="stress strengths")
    parser.add_argument("--stress-count", type=int, default=300,
                        help="validation images under stress (default 300: the images the shift rules weigh)")
    parser.add_argument("--loco-run", help="a leave-one-cohort-out run of the same recipe (its test split)")
    parser.add_argument("--tta", action="store_true",
                        help="score with test-time augmentation (cxr_keras/models/tta.py); files get a -tta suffix")
    parser.add_argument("--batch-size", type=int, default=64)
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> None:
    """Rules that parse, and runs that are binary pneumonia runs, before anything is scored."""
    from cxr_keras.config import ExperimentConfig
    from cxr_keras.evaluate.thresholds import parse_rule

    for rule in args.rules:
        if rule != "platt":
            parse_rule(rule)
    for run in filter(None, (args.run, args.loco_run)):
        if not os.path.exists(os.path.join(run, "config.json")):
            raise ValueError(f"{run} is not a run folder (no config.json)")
        meta = json.load(open(os.path.join(run, "best.json"))) if os.path.exists(os.path.join(run, "best.json")) \
            else {}
        if meta.get("task") != "binary" or "PNEUMONIA" not in meta.get("classes", []):
            raise ValueError(f"{run} is not a binary NORMAL/PNEUMONIA run (task {meta.get('task')}, classes "
                             f"{meta.get('classes')}): these proxies are for pneumonia models")
    ExperimentConfig.load(os.path.join(args.run, "config.json"))


def proxy_sets(args: argparse.Namespace) -> dict[str, tuple[list[str], np.ndarray]]:
    """name -> (paths, truth 0/1 for pneumonia) of each proxy set that is present."""
    from cxr_keras.data.sources import load_dataset
    from cxr_keras.data.table import relabel
    from cxr_keras.run_folder import run_table

    val = run_table(args.run).split("val")
    sets = {"val": (val.paths, val.labels[:, val.classes.index("PNEUMONIA")])}
    other = {"adult_normals": ("covid-radiography-2class", {"Normal": "NORMAL", "COVID": "-"}),
             "nih": ("darkcovidnet", {"No_findings": "NORMAL", "Pneumonia": "PNEUMONIA", "Covid-19": "-"})}
    for name, (folder, mapping) in other.items():
        path = os.path.join(args.datasets, folder)
        if not os.path.isdir(path):
            print(f"{path} is absent: the {name} proxy is left out")
            continue
        table = relabel(load_dataset(path), mapping)
        truth = table.labels[:, table.classes.index("PNEUMONIA")] if "PNEUMONIA" in table.classes else \
            np.zeros(len(table))
        sets[name] = (table.paths, truth)
    if args.loco_run:
        test = run_table(args.loco_run).split("test")
        sets["loco"] = (test.paths, test.labels[:, test.classes.index("PNEUMONIA")])
    return sets


def raw_scores(args: argparse.Namespace, sets: dict) -> dict[str, np.ndarray]:
    """Scores of the run's uncalibrated model on every set and stress condition (cached in scores.npz)."""
    from cxr_keras.data.decode import decode_all
    from cxr_keras.data.shifts import SHIFTS, apply_shift
    from cxr_keras.evaluate.inference import predict_scores, score_pixels
    from cxr_keras.models.calibration import strip_calibration
    from cxr_keras.models.contract import describe_model
    from cxr_keras.models.saving import load_model
    from cxr_keras.run_folder import run_table

    cache = os.path.join(args.run, "proxies", f"scores{suffix(args)}.npz")
    scores = dict(np.load(cache)) if os.path.exists(cache) else {}
    model, metadata = load_model(os.path.join(args.run, "best.keras"), compile=False)
    spec = describe_model(model, metadata)
    model = strip_calibration(model)
    if args.tta:
        from cxr_keras.models.tta import with_tta

        model = with_tta(model)
    for name, (paths, _) in sets.items():
        if name not in scores and name != "loco":
            scores[name] = predict_scores(model, paths, spec, args.batch_size)
    if "loco" in sets and "loco_val" not in scores:  # the leave-one-cohort-out run's own model and validation
        loco_model, loco_meta = load_model(os.path.join(args.loco_run, "best.keras"), compile=False)
        loco_spec, loco_model = describe_model(loco_model, loco_meta), strip_calibration(loco_model)
        if args.tta:
            from cxr_keras.models.tta import with_tta

            loco_model = with_tta(loco_model)
        loco_val = run_table(args.loco_run).split("val")
        scores["loco_val"] = predict_scores(loco_model, loco_val.paths, loco_spec, args.batch_size)
        scores["loco_val_truth"] = loco_val.labels[:, loco_val.classes.index("PNEUMONIA")]
        scores["loco"] = predict_scores(loco_model, sets["loco"][0], loco_spec, args.batch_size)
        if any(rule.startswith("shift-") for rule in args.rules):  # what its shift rules weigh
            from cxr_keras.data.shifts import GROUPS

            keep_loco = stress_rows(len(loco_val), args.stress_count)
            loco_images = decode_all([loco_val.paths[i] for i in keep_loco], loco_spec.image_size)
            for shift in GROUPS["held-in"]:
                for strength in (0.5, 1.0):
                    scores[f"loco_stress/{shift}/{strength:g}"] = score_pixels(
                        loco_model, apply_shift(shift, loco_images, strength), loco_spec, args.batch_size)
    keep = stress_rows(len(sets["val"][0]), args.stress_count)
    images = None
    for shift in SHIFTS:
        for strength in args.strengths:
            key = f"stress/{shift}/{strength:g}"
            if key not in scores:
                if images is None:
                    images = decode_all([sets["val"][0][i] for i in keep], spec.image_size)
                scores[key] = score_pixels(model, apply_shift(shift, images, strength), spec, args.batch_size)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with atomic_writer(cache, "wb") as f:
        np.savez(f, **scores)
    return scores


def suffix(args: argparse.Namespace) -> str:
    return "-tta" if args.tta else ""


def stress_rows(n: int, count: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, count)).round().astype(int))


def threshold_for(rule: str, y_val: np.ndarray, s_val: np.ndarray, prior: float | None = None,
                  shifted: list[tuple[np.ndarray, np.ndarray]] | None = None) -> float:
    """The raw-score threshold a rule picks on validation ('platt': where the calibrated probability is 0.5;
    'balanced': the training prior; the shift rules also weigh `shifted`, validation's held-in shifted copies)."""
    from cxr_keras.evaluate.calibration import fit_calibration
    from cxr_keras.evaluate.thresholds import choose

    if rule == "platt":
        params = fit_calibration(y_val, s_val, "platt")
        return float(1 / (1 + np.exp(params["intercept"][0] / params["slope"][0])))
    return choose(y_val, s_val, rule, prior, shifted).threshold


def held_in_copies(scores: dict, prefix: str, y: np.ndarray, keep: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(truth, scores) of the held-in shifted copies at the strengths the shift rules weigh (0.5 and 1): what
    `cxr evaluate --rule shift-mean` scores, on the same images (evenly spaced, the same count by default)."""
    from cxr_keras.data.shifts import GROUPS
    from cxr_keras.evaluate.stress import RULE_CONDITIONS

    return [(y[keep], scores[f"{prefix}/{s}/{g:g}"]) for s in GROUPS["held-in"] for g in RULE_CONDITIONS["strengths"]
            if f"{prefix}/{s}/{g:g}" in scores]


def judge(args: argparse.Namespace, sets: dict, scores: dict) -> dict:
    """Every rule's threshold and its figures on every proxy; the rule-free ROC-AUCs."""
    from cxr_keras.data.cohorts import cohort_names
    from cxr_keras.data.table import ImageTable
    from cxr_keras.evaluate.metrics import summary_at_threshold

    paths, y_val = sets["val"]
    probe = ImageTable(paths=paths, labels=np.c_[1 - y_val, y_val], classes=["NORMAL", "PNEUMONIA"], task="binary",
                       patients=[None] * len(paths), splits=[None] * len(paths))
    cohorts = np.asarray(cohort_names(probe, args.cohort_pattern))
    keep = stress_rows(len(paths), args.stress_count)
    prior = (training_prior_of(args.run) or [None])[0]
    out: dict = {"run": args.run, "sets": {k: {"n_images": len(v[0]), "n_positive": int(v[1].sum())}
                                           for k, v in sets.items()}, "rules": {}}
    for rule in args.rules:
        t = threshold_for(rule, y_val, scores["val"], prior, held_in_copies(scores, "stress", y_val, keep))
        row: dict = {"threshold": t}
        for name, (_, y) in sets.items():
            if name == "loco":
                y_loco = scores["loco_val_truth"]
                loco_prior = (training_prior_of(args.loco_run) or [None])[0]
                t_loco = threshold_for(rule, y_loco, scores["loco_val"], loco_prior, held_in_copies(
                    scores, "loco_stress", y_loco, stress_rows(len(y_loco), args.stress_count)))
                row["loco"] = {"threshold": t_loco, **summary_at_threshold("binary", y, scores["loco"], t_loco)}
            else:
                row[name] = summary_at_threshold("binary", y, scores[name], t)
        row["val_cohorts"] = {c: summary_at_threshold("binary", y_val[cohorts == c], scores["val"][cohorts == c], t)
                              for c in sorted(set(cohorts))}
        row.update(stress_groups(args.strengths, y_val[keep], scores, t))
        row["proxy_balanced_accuracy"] = proxy_mean(row)
        out["rules"][rule] = row
    return out


def stress_groups(strengths: list[float], y: np.ndarray, scores: dict, threshold: float) -> dict:
    """Per shift group (held-in, held-out): the mean ROC-AUC, sensitivity, specificity and balanced accuracy over
    its shifts and strengths, each shift's figures, and the issue's targets: the lowest sensitivity and
    specificity of any shift at strength 0.5, the lowest specificity at 1."""
    from cxr_keras.data.shifts import GROUPS
    from cxr_keras.evaluate.metrics import summary_at_threshold

    out = {}
    for group, names in GROUPS.items():
        per = {name: {f"{g:g}": summary_at_threshold("binary", y, scores[f"stress/{name}/{g:g}"], threshold)
                      for g in strengths} for name in names}
        rows = [r for by_strength in per.values() for r in by_strength.values()]
        summary = {key: float(np.mean([r[key] for r in rows])) for key in ("roc_auc", "sensitivity", "specificity")}
        summary["balanced_accuracy"] = (summary["sensitivity"] + summary["specificity"]) / 2
        for g in ("0.5", "1"):
            if all(g in by_strength for by_strength in per.values()):
                for key in ("sensitivity", "specificity"):
                    low = min(per, key=lambda name: per[name][g][key])  # noqa: B023
                    summary[f"min_{key}_at_{g}"] = {"value": per[low][g][key], "shift": low}
        out[f"stress_{group.replace('-', '_')}"] = {**summary, "shifts": per}
    return out


def training_prior_of(run: str) -> list[float] | None:
    from cxr_keras.config import ExperimentConfig
    from cxr_keras.data.balance import training_prior
    from cxr_keras.run_folder import run_table

    return training_prior(ExperimentConfig.load(os.path.join(run, "config.json")), run_table(run))


def proxy_mean(row: dict) -> float:
    """One figure to rank rules and recipes: the mean balanced accuracy of the proxies that nothing trains or
    chooses on (the held-out stress group, the adult normals, the left-out cohort), each specificity-only set
    paired with the validation sensitivity (the positives it lacks). The held-in stress group is left out: the
    shift rules choose on it and the consistency and acquisition options train on it. NIH is left out: a
    pediatric model ranks NIH's adult, report-mined pneumonia labels near chance (ROC-AUC 0.4-0.5), so its
    threshold trade-off says nothing."""
    values = [row["stress_held_out"]["balanced_accuracy"]]
    for name in ("adult_normals", "loco"):
        if name in row:
            values.append((row["val"]["sensitivity"] + row[name]["specificity"]) / 2)
    return float(np.mean(values))


def format_table(result: dict) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    rules = result["rules"]
    first = next(iter(rules.values()))
    cohorts = list(first["val_cohorts"])
    head = ["rule", "threshold", "val sens", "val spec", *(f"val spec {c}" for c in cohorts if c != "person"),
            "adult normals spec", "NIH sens", "NIH spec", "held-in stress sens", "held-in stress spec",
            "held-out stress sens", "held-out stress spec", "lowest spec at 0.5 (held-out)"]
    if "loco" in first:
        head.append("loco spec")
    head.append("proxy bal. acc.")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rule, row in rules.items():
        held_in, held_out = row["stress_held_in"], row["stress_held_out"]
        low = held_out.get("min_specificity_at_0.5")
        cells = [rule, fmt(row["threshold"]), fmt(row["val"]["sensitivity"]), fmt(row["val"]["specificity"]),
                 *(fmt(row["val_cohorts"][c]["specificity"]) for c in cohorts if c != "person"),
                 fmt(row.get("adult_normals", {}).get("specificity")), fmt(row.get("nih", {}).get("sensitivity")),
                 fmt(row.get("nih", {}).get("specificity")), fmt(held_in["sensitivity"]), fmt(held_in["specificity"]),
                 fmt(held_out["sensitivity"]), fmt(held_out["specificity"]),
                 f"{fmt(low['value'])} ({low['shift']})" if low else "n/a"]
        if "loco" in row:
            cells.append(fmt(row["loco"]["specificity"]))
        cells.append(fmt(row["proxy_balanced_accuracy"]))
        lines.append("| " + " | ".join(cells) + " |")
    aucs = {name: first[name]["roc_auc"] for name in ("val", "nih", "loco") if name in first}
    aucs["held-in stress"] = first["stress_held_in"]["roc_auc"]
    aucs["held-out stress"] = first["stress_held_out"]["roc_auc"]
    lines += ["", "ROC-AUC (any rule): " + ", ".join(f"{k} {fmt(v)}" for k, v in aucs.items()),
              "", "proxy bal. acc.: the mean balanced accuracy of the held-out stress group, the adult normals "
              "(with validation's sensitivity) and the left-out cohort when given; nothing trains or chooses on "
              "them."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--table"]:  # python -m experiments.proxies --table RULE RUN...
        print(variants_table(argv[2:], argv[1]))
        return None
    args = parse_args(argv)
    try:
        check(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    sets = proxy_sets(args)
    result = judge(args, sets, raw_scores(args, sets))
    folder = os.path.join(args.run, "proxies")
    result["tta"] = args.tta
    with atomic_writer(os.path.join(folder, f"proxies{suffix(args)}.json")) as f:
        json.dump(result, f, indent=2)
    table = format_table(result)
    with atomic_writer(os.path.join(folder, f"proxies{suffix(args)}.md")) as f:
        f.write(f"# Proxies of external validation: {args.run}{' (TTA)' if args.tta else ''}\n\n{table}")
    print(table)
    return result



def variants_table(runs: list[str], rule: str) -> str:
    """One row per run (its proxies.json and proxies-tta.json if present) at one threshold rule: the variant
    table of docs/results.md."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    head = ["run", "threshold", "val ROC-AUC", "val bal. acc.", "val spec NORMAL2", "adult normals spec",
            "NIH ROC-AUC", "held-in stress ROC-AUC", "held-in stress spec", "held-out stress ROC-AUC",
            "held-out stress spec", "lowest sens / spec at 0.5, held-in", "held-out", "lowest spec at 1, held-in",
            "held-out", "loco spec",
            "proxy bal. acc."]
    lines = [f"At threshold rule `{rule}`.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        for tag in ("", "-tta"):
            path = os.path.join(run, "proxies", f"proxies{tag}.json")
            if not os.path.exists(path):
                continue
            row = json.load(open(path))["rules"].get(rule)
            if row is None:
                continue
            val, held_in, held_out = row["val"], row["stress_held_in"], row["stress_held_out"]
            cells = [os.path.basename(run.rstrip("/")) + (" + TTA" if tag else ""), fmt(row["threshold"]),
                     fmt(val["roc_auc"]), fmt((val["sensitivity"] + val["specificity"]) / 2),
                     fmt(row["val_cohorts"].get("NORMAL2", {}).get("specificity")),
                     fmt(row.get("adult_normals", {}).get("specificity")), fmt(row.get("nih", {}).get("roc_auc")),
                     fmt(held_in["roc_auc"]), fmt(held_in["specificity"]), fmt(held_out["roc_auc"]),
                     fmt(held_out["specificity"]),
                     *(f"{fmt(_lowest(g, 'sensitivity', '0.5'))} / {fmt(_lowest(g, 'specificity', '0.5'))}"
                       for g in (held_in, held_out)),
                     *(fmt(_lowest(g, "specificity", "1")) for g in (held_in, held_out)),
                     fmt(row.get("loco", {}).get("specificity")), fmt(row["proxy_balanced_accuracy"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _lowest(group: dict, key: str, strength: str) -> float | None:
    """A stress group's lowest sensitivity or specificity of any shift at one strength (None if not measured)."""
    return (group.get(f"min_{key}_at_{strength}") or {}).get("value")


if __name__ == "__main__":
    import sys

    from cxr_keras.cli.errors import report_errors

    sys.exit(report_errors(main))
