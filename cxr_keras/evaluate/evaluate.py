"""Evaluate a Keras classifier on a dataset: metrics.json, figures and report.md (`write_evaluation`), and a
run on its own splits with its threshold chosen and saved with the model (`evaluate_run`). How a model is fed and
read (ours or foreign) is `cxr_keras.models.contract`.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np

from cxr_keras.data.table import ImageTable, write_dropped
from cxr_keras.evaluate import plots
from cxr_keras.evaluate.calibration import calibrate_model
from cxr_keras.evaluate.failures import failure_grid
from cxr_keras.evaluate.inference import predict_scores, truth
from cxr_keras.evaluate.metrics import evaluate_scores, summary_at_threshold
from cxr_keras.evaluate.operating_points import operating_points
from cxr_keras.evaluate.scores import write_scores
from cxr_keras.evaluate.thresholds import DEFAULT_RULE, choose_thresholds, parse_rule, sweep
from cxr_keras.io_utils import atomic_writer
from cxr_keras.models.contract import ModelSpec, describe_model
from cxr_keras.run_folder import BEST, CONFIG, run_file, run_table


def write_evaluation(out: str, spec: ModelSpec, table: ImageTable, y: np.ndarray, scores: np.ndarray,
                     threshold: float, threshold_rule: str, resamples: int = 1000, seed: int = 0,
                     cohorts: list[str] | None = None, model: keras.Model | None = None, caveat: str = "",
                     stress: dict | None = None, class_map: dict | None = None,
                     ood: tuple[np.ndarray, float] | None = None) -> dict:
    """metrics.json, figures and report.md for one set of predictions (with `cohorts`, one name per image, also
    the metrics of each cohort at the same threshold; with `model`, Grad-CAM on the mistakes; with `ood`, the
    out-of-distribution scores and their threshold: metrics of accepted and flagged films apart and the
    risk-coverage curve); returns the metrics."""
    os.makedirs(out, exist_ok=True)
    metrics = evaluate_scores(spec.task, spec.classes, y, scores, threshold, resamples, seed,
                              positive_index=spec.positive_index)
    metrics["threshold_rule"] = threshold_rule
    # with task, classes and threshold: how to read the model, for `cxr export --threshold-from`
    metrics.update(preprocess=spec.preprocess, output=spec.output)
    if caveat:
        metrics["caveat"] = caveat
    if class_map:
        metrics["class_map"] = class_map
    if stress:
        metrics["stress"] = {"split": stress.get("split"), "n_images": stress["n_images"],
                             "strengths": stress["strengths"], "worst": stress["worst"],
                             "worst_by_group": stress.get("worst_by_group", {}),
                             "unshifted": stress["rows"][0], "file": "../stress/stress.md"}
    if cohorts is not None:
        names = np.asarray(cohorts)
        metrics["cohorts"] = {name: summary_at_threshold(spec.task, y[names == name], scores[names == name],
                                                         threshold) for name in sorted(set(cohorts))}
    paths = _draw_figures(out, spec, metrics, y, scores, threshold)
    if ood is not None and spec.task != "multilabel":
        metrics["ood"], paths["risk_coverage"] = _ood_metrics(spec, y, scores, threshold, *ood), \
            os.path.join(out, "risk_coverage.png")
        plots.plot_risk_coverage(metrics["ood"]["risk_coverage"], paths["risk_coverage"])
        metrics["ood"]["flagged_films"] = flagged_films(table, spec, y, scores, threshold, ood[0],
                                                        os.path.join(out, "flagged"), ood[1])
    metrics["failures"] = failure_grid(table, spec, y, scores, threshold, paths["failures"], model=model)
    metrics["operating_points"] = operating_points(spec.task, spec.classes, y, scores, threshold,
                                                   spec.positive_index, resamples, seed)
    metrics["figures"] = {k: os.path.basename(v) for k, v in paths.items()}
    write_scores(os.path.join(out, "scores.csv"), spec, table.paths, y, scores)
    if table.dropped:
        write_dropped(table.dropped, os.path.join(out, "dropped.csv"))
        metrics["dropped"] = {"count": len(table.dropped), "file": "dropped.csv"}
    with atomic_writer(os.path.join(out, "metrics.json")) as f:
        json.dump(metrics, f, indent=2)
    from cxr_keras.evaluate.html_report import write_html_report
    from cxr_keras.evaluate.report import write_report

    write_report(metrics, os.path.join(out, "report.md"))
    write_html_report(metrics, out)
    return metrics


def flagged_films(table: ImageTable, spec: ModelSpec, y: np.ndarray, scores: np.ndarray, threshold,
                  ood: np.ndarray, folder: str, ood_threshold: float, count: int = 8) -> list[dict]:
    """The `count` films with the highest out-of-distribution scores above its threshold, as tiles in `folder`
    with their truth, decision and both scores (report.html shows them apart from the mistakes)."""
    from cxr_keras.evaluate.failures import binary_class, load_pixels, write_tiles
    from cxr_keras.evaluate.metrics import predictions

    ood = np.asarray(ood, dtype=float)
    rows = [int(i) for i in np.argsort(-ood, kind="stable")[:count] if ood[i] > ood_threshold]
    if not rows:
        return []
    s2, y2 = scores.reshape(len(scores), -1), y.reshape(len(y), -1)
    decided = predictions(spec.task, s2, threshold)
    name = lambda row: spec.classes[int(row.argmax())] if spec.task == "multiclass" else binary_class(  # noqa: E731
        spec, row[0])
    tiles = write_tiles(load_pixels([table.paths[i] for i in rows], spec), None, folder)
    return [{"path": table.paths[i], "true": name(y2[i]), "predicted": name(decided[i]),
             "score": float(s2[i].max() if spec.task == "multiclass" else s2[i, 0]), "ood_score": float(ood[i]),
             "tile": os.path.join(os.path.basename(folder), os.path.basename(tile))} for i, tile in zip(rows, tiles)]


def _ood_metrics(spec: ModelSpec, y: np.ndarray, scores: np.ndarray, threshold, ood: np.ndarray,
                 ood_threshold: float) -> dict:
    """Films flagged by the out-of-distribution score, the metrics of accepted and flagged films at the same
    threshold, and the risk-coverage curves abstaining by confidence and by the score."""
    from cxr_keras.evaluate.selective import doubt_by_confidence, risk_coverage

    flagged = np.asarray(ood) > ood_threshold
    return {"threshold": ood_threshold, "flagged": int(flagged.sum()), "flagged_rate": float(flagged.mean()),
            "accepted_metrics": summary_at_threshold(spec.task, y[~flagged], scores[~flagged], threshold),
            "flagged_metrics": (summary_at_threshold(spec.task, y[flagged], scores[flagged], threshold)
                                if flagged.any() else None),
            "risk_coverage": {
                "confidence": risk_coverage(y, scores, threshold, spec.task,
                                            doubt_by_confidence(scores, threshold, spec.task)),
                "ood score": risk_coverage(y, scores, threshold, spec.task, ood)}}


def evaluate_model(model: keras.Model, spec: ModelSpec, table: ImageTable, out: str, threshold: float | list[float],
                   how: str, *, resamples: int = 1000, seed: int = 0, cohorts: list[str] | None = None,
                   class_map: dict | None = None, stress: dict | None = None, batch_size: int = 32,
                   caveat: str = "", ood: tuple[keras.Model, float] | None = None) -> dict:
    """A model (ours or foreign, as `spec` describes it) on a labelled table at a given threshold: scores,
    metrics.json, figures and report.md in `out`, and with `stress` (keyword arguments of `stress_split`) the shift
    stress test in OUT/stress; returns the metrics. With `ood` (the model with its out-of-distribution score, and
    the score's threshold), accepted and flagged films apart. What `cxr evaluate --model` runs."""
    y = truth(table, spec)
    if ood is not None:
        from cxr_keras.evaluate.ood import scores_and_ood

        scores, flags = scores_and_ood(ood[0], table.paths, spec, batch_size)
    else:
        scores = predict_scores(model, table.paths, spec, batch_size)
    metrics = write_evaluation(out, spec, table, y, scores, threshold, how, resamples, seed, cohorts, model,
                               caveat=caveat, class_map=class_map, ood=None if ood is None else (flags, ood[1]))
    if stress is not None:
        from cxr_keras.evaluate.stress import stress_split

        metrics["stress"] = stress_split(os.path.join(out, "stress"), model, spec, table.paths, y, threshold,
                                         batch_size=batch_size, **stress)
    return metrics


def _draw_figures(out: str, spec: ModelSpec, metrics: dict, y: np.ndarray, scores: np.ndarray,
                  threshold: float) -> dict[str, str]:
    """ROC, PR, threshold sweep, confusion, reliability and per-class figures of an evaluation (those that its
    task and labels allow); returns the figure paths, the failure grid's included (drawn by the caller)."""
    paths = plots.figure_paths(out)
    if spec.task == "binary" and not 0 < np.mean(y) < 1:  # one class only (e.g. normals of another dataset)
        columns = []
        for name in ("roc", "pr", "threshold_sweep"):
            paths.pop(name)
        metrics["note"] = (f"only {spec.classes[spec.positive_index] if np.mean(y) else 'negative'} images: "
                           "ROC-AUC and the threshold sweep need both classes")
        labels = [spec.classes[1 - spec.positive_index], spec.classes[spec.positive_index]]
        plots.plot_confusion(np.array(metrics["confusion_matrix"]), labels, paths["confusion"])
    elif spec.task == "binary":
        columns = [(spec.classes[spec.positive_index], y, scores)]
        point = {"threshold": threshold, "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"]}
        plots.plot_roc(columns, paths["roc"], point)
        plots.plot_threshold_sweep(sweep(y, scores), paths["threshold_sweep"], threshold)
        labels = [spec.classes[1 - spec.positive_index], spec.classes[spec.positive_index]]
        plots.plot_confusion(np.array(metrics["confusion_matrix"]), labels, paths["confusion"])
    else:
        columns = [(name, y[:, k], scores[:, k]) for k, name in enumerate(spec.classes)]
        plots.plot_roc(columns, paths["roc"])
        paths.pop("threshold_sweep")
        if spec.task == "multiclass":
            plots.plot_confusion(np.array(metrics["confusion_matrix"]), spec.classes, paths["confusion"])
        else:
            paths.pop("confusion")
    if "pr" in paths:
        plots.plot_pr(columns, paths["pr"])
    plots.plot_reliability(metrics["reliability"], metrics["ece"], paths["reliability"])
    plots.plot_per_class(metrics["per_class"], paths["per_class"])
    return paths


VAL_CAVEAT = ("Optimistic by construction: these validation images come from the cohort the model was trained on, "
              "and the threshold was chosen on them. Expect lower figures on other patients, sites and scanners; "
              "the stress test and the per-cohort rows below are proxies for that, and docs/results.md shows how "
              "far validation overstated an external test set.")


TEST_CAVEAT = ("A held-out test split of the same data: patients not seen in training, but the same sites and "
               "scanners, so still optimistic for another hospital (see the stress test below).")


LOCO_CAVEAT = ("A held-out cohort ({cohorts}): images from a source never seen in training or validation: a proxy "
               "for another site.")


QUICK_STRESS = {"strengths": (0.5, 1.0), "count": 200}  # what `cxr evaluate --run` measures unless told


def _save_run_threshold(model_path: str, metadata: dict, spec: ModelSpec, y_val: np.ndarray, s_val: np.ndarray,
                        rule: str, calibrate: str | None, run_dir: str,
                        shifted: list[tuple[np.ndarray, np.ndarray]] | None = None) -> tuple[float | list[float], str]:
    """Choose a run's threshold on validation by `rule` (the shift rules also weigh `shifted`, validation's
    copies under the held-in shifts) and write it, with how it was chosen, into best.json."""
    from cxr_keras.models.saving import metadata_path

    # calibrated probabilities carry validation's prevalence: that is the prior `balanced` cuts at then
    calibrated = bool(calibrate or metadata.get("calibration"))
    priors = (list(np.atleast_1d(y_val.reshape(len(y_val), -1).mean(axis=0))) if calibrated
              else _priors(metadata, run_dir))
    threshold, points = choose_thresholds(spec, y_val, s_val, rule, priors, shifted)
    named = points[0]["rule"] if spec.task == "binary" else rule
    if rule.startswith("balanced"):
        how = (f"{named}: the validation prevalence, which calibrated probabilities carry" if calibrated else
               f"{named}: the positive rate the training loss saw")
        if spec.task != "binary":
            how = "balanced per finding: " + ", ".join(f"{c} {p['threshold']:.3g}" for c, p in
                                                       zip(spec.classes, points))
    elif shifted:
        how = (f"{named} on validation ({len(y_val)} images) and {len(shifted)} copies of {len(shifted[0][0])} of "
               "them under held-in acquisition shifts (strengths 0.5 and 1): the cut with the best "
               f"{'mean' if 'mean' in rule else 'worst'} balanced accuracy over them")
    else:
        how = f"{named} on validation ({len(y_val)} images)"
    how += f", {calibrate or metadata['calibration']['method']}-calibrated" if calibrated else ""
    if rule == DEFAULT_RULE:  # the model card says why this rule, not only which
        how += "; the default rule, ranked first by the off-site proxies over two seeds (docs/results.md)"
    metadata.update(threshold=threshold, threshold_rule=how,
                    validation_operating_point=points[0] if spec.task == "binary" else points)
    with atomic_writer(metadata_path(model_path)) as f:
        json.dump(metadata, f, indent=2)
    return threshold, how


def evaluate_run(run_dir: str, rule: str = DEFAULT_RULE, out: str | None = None, resamples: int = 1000,
                 seed: int = 0, calibrate: str | None = None, stress: dict | None = QUICK_STRESS,
                 cohort_pattern: str | None = None, cohort_column: str | None = None) -> dict[str, dict]:
    """Evaluate a run's best.keras on its own splits: choose the threshold on validation by `rule` (multi-label:
    one per finding), apply it unchanged to the test split, and write it into best.json so it travels with the
    model. With `calibrate` ('platt' or 'temperature'), first fit probability calibration on validation and save
    it inside best.keras (replacing an earlier one), so every later command and export uses calibrated scores.
    `stress` (keyword arguments of `stress_split` over QUICK_STRESS; by default that quick one, 2 strengths on
    200 images; None: none) runs the shift stress test on the test split (validation when there is none); every
    report then shows its largest drops beside the figures it qualifies. Metrics per cohort when the run's config
    names cohorts (--cohort-pattern / --cohort-column) or `cohort_pattern` / `cohort_column` is given.

    Writes OUT/val/ and OUT/test/ (metrics.json, report.md, report.html, figures) and OUT/stress/; OUT defaults
    to RUN_DIR/evaluation, and then RUN_DIR/report.html, the run's page, is rewritten to link them.
    """
    from cxr_keras.config import ExperimentConfig
    from cxr_keras.data.cohorts import cohort_names
    from cxr_keras.models.saving import load_model

    config = ExperimentConfig.load(run_file(run_dir, CONFIG))
    d, table = config.data, run_table(run_dir, config)
    parse_rule(rule)  # bad options fail before anything is computed or written
    cohort_names(table, cohort_pattern, cohort_column, require_match=True)
    model_path = run_file(run_dir, BEST)
    model, metadata = load_model(model_path, compile=False)
    spec = describe_model(model, metadata)
    out = out or os.path.join(run_dir, "evaluation")
    val = table.split("val")
    y_val = truth(val, spec)
    if calibrate:
        model, s_val = calibrate_model(model_path, model, metadata, spec, y_val, val.paths, calibrate, d.batch_size)
    else:
        s_val = predict_scores(model, val.paths, spec, d.batch_size)
    threshold, how = spec.threshold, spec.threshold_rule
    if spec.task != "multiclass":
        shifted = None
        if rule.startswith("shift-"):
            from cxr_keras.evaluate.stress import shifted_copies

            shifted = shifted_copies(model, spec, val.paths, y_val, batch_size=d.batch_size)
        threshold, how = _save_run_threshold(model_path, metadata, spec, y_val, s_val, rule, calibrate, run_dir,
                                             shifted)
    scored = _save_ood(model_path, model, metadata, spec, table.split("train"), val.paths, d.batch_size)
    def cohorts(part: ImageTable) -> list[str] | None:
        if cohort_pattern or cohort_column:
            return cohort_names(part, cohort_pattern, cohort_column)
        return cohort_names(part, d.cohort_pattern, d.cohort_column)

    test = table.split("test")
    part = test if len(test) else val
    shifted = None
    if stress is not None:
        from cxr_keras.evaluate.stress import stress_split

        shifted = stress_split(os.path.join(out, "stress"), model, spec, part.paths, truth(part, spec), threshold,
                               batch_size=d.batch_size, **{**QUICK_STRESS, **stress})
        shifted["split"] = "test" if len(test) else "val"
    results = {"val": write_evaluation(os.path.join(out, "val"), spec, val, y_val, s_val, threshold, how,
                                       resamples, seed, cohorts(val), model, caveat=VAL_CAVEAT, stress=shifted,
                                       ood=scored and (scored[1], scored[2]))}
    if len(test):
        caveat = LOCO_CAVEAT.format(cohorts=", ".join(d.hold_out_cohorts)) if d.hold_out_cohorts else TEST_CAVEAT
        if scored:
            from cxr_keras.evaluate.ood import scores_and_ood

            s_test, ood_test = scores_and_ood(scored[0], test.paths, spec, d.batch_size)
        else:
            s_test, ood_test = predict_scores(model, test.paths, spec, d.batch_size), None
        results["test"] = write_evaluation(os.path.join(out, "test"), spec, test, truth(test, spec), s_test,
                                           threshold, how, resamples, seed, cohorts(test), model, caveat=caveat,
                                           stress=shifted, ood=scored and (ood_test, scored[2]))
    if shifted:
        results["stress"] = shifted
    if os.path.abspath(out) == os.path.abspath(os.path.join(run_dir, "evaluation")):  # the run's page links it
        from cxr_keras.evaluate.run_page import write_run_page

        write_run_page(run_dir)
    return results


def _save_ood(model_path: str, model, metadata: dict, spec: ModelSpec, train: ImageTable, val_paths: list[str],
              batch_size: int) -> tuple[keras.Model, np.ndarray, float] | None:
    """Fit the out-of-distribution score on training films (evaluate/ood.py) and save it inside best.keras, its
    threshold in best.json; returns the model with the score, the validation films' scores and the threshold. A
    model whose pooled features cannot be found keeps none, said once."""
    from cxr_keras.evaluate.ood import fit_ood
    from cxr_keras.models.saving import save_model

    labels = truth(train, spec)
    groups = None if spec.task == "multilabel" else labels.astype(int) if spec.task == "binary" else labels.argmax(1)
    fitted = fit_ood(model, spec, train.paths, groups, val_paths, batch_size) if len(train) else None
    if fitted is None:
        print(f"note: {model_path} gets no out-of-distribution score (no training films, or no `head_pool` "
              "features layer: a model not made by this toolkit)")
        return None
    scored, metadata["ood"], val_ood = fitted
    save_model(scored, model_path, metadata)
    return scored, val_ood, metadata["ood"]["threshold"]


def _priors(metadata: dict, run_dir: str) -> list[float] | None:
    """The training prior of each output: from the model's metadata, else worked out from the run's config."""
    if metadata.get("training_prior"):
        return metadata["training_prior"]
    from cxr_keras.config import ExperimentConfig
    from cxr_keras.data.balance import training_prior

    return training_prior(ExperimentConfig.load(run_file(run_dir, CONFIG)), run_table(run_dir))


def summary_line(metrics: dict) -> str:
    """One line: AUC with CI and, for binary data, sensitivity and specificity with theirs."""
    parts = [f"ROC-AUC {_ci(metrics, 'roc_auc')}"]
    if metrics["task"] == "binary":
        parts += [f"sensitivity {_ci(metrics, 'sensitivity')}", f"specificity {_ci(metrics, 'specificity')}"]
    parts.append(f"accuracy {metrics['accuracy']:.3f}")
    return f"{metrics['n_images']} images: " + ", ".join(parts)


def _ci(metrics: dict, key: str) -> str:
    ci = metrics["ci"].get(key)
    value = metrics.get(key)
    if value is None:
        return "n/a"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"
