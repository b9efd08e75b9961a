"""The shift stress test: re-score a labelled split under graded acquisition shifts (data/shifts.py) and
report ranking (ROC-AUC) and the decisions at the model's own threshold against shift strength.

Validation is drawn from the training cohort, so it cannot say how brittle a model is; this says, before
deployment, which acquisition changes move the scores and how far the chosen operating point slides.
"""

from __future__ import annotations

import json
import os
import sys

import keras
import numpy as np

from cxr_keras.data.decode import decode_all
from cxr_keras.data.shifts import GROUPS, SHIFTS, STRENGTHS, apply_shift, group_of
from cxr_keras.display import threshold_text
from cxr_keras.evaluate.inference import score_pixels
from cxr_keras.evaluate.metrics import summary_at_threshold
from cxr_keras.io_utils import atomic_writer
from cxr_keras.models.contract import ModelSpec


def stress_test(model: keras.Model, spec: ModelSpec, paths: list[str], y: np.ndarray, threshold,
                shifts: list[str] | None = None, strengths: tuple[float, ...] = STRENGTHS, seed: int = 0,
                batch_size: int = 32) -> dict:
    """Rows of (shift, group, strength, ROC-AUC, sensitivity, specificity, accuracy), the unshifted row first;
    the worst row per metric over all shifts and within each group (held-in: kinds a training option may apply;
    held-out: kinds none does)."""
    shifts = list(shifts or SHIFTS)
    unknown = sorted(set(shifts) - set(SHIFTS))
    if unknown:
        raise ValueError(f"unknown --stress-shifts {unknown}; choose from {', '.join(SHIFTS)}")
    images = decode_all(paths, spec.image_size)
    progress = keras.utils.Progbar(1 + len(shifts) * len(strengths), unit_name="condition",
                                   verbose=1 if sys.stdout.isatty() else 2)  # plain lines in a log file
    rows = [{"shift": "none", "group": "none", "strength": 0.0,
             **summary_at_threshold(spec.task, y, score_pixels(model, images, spec, batch_size), threshold)}]
    progress.add(1)
    for name in shifts:
        for strength in strengths:
            scores = score_pixels(model, apply_shift(name, images, strength, seed), spec, batch_size)
            rows.append({"shift": name, "group": group_of(name), "strength": float(strength),
                         **summary_at_threshold(spec.task, y, scores, threshold)})
            progress.add(1)
    return {"n_images": len(paths), "threshold": threshold, "seed": seed, "strengths": list(strengths),
            "shifts": {name: SHIFTS[name].__doc__.split("\n")[0] for name in shifts}, "rows": rows,
            "worst": worst_cases(rows), "worst_by_group": {
                group: worst_cases(rows[:1] + [r for r in rows[1:] if r["group"] == group])
                for group in GROUPS if any(r["group"] == group for r in rows)}}


RULE_CONDITIONS = {"strengths": (0.5, 1.0), "count": 300}  # what the shift-aware threshold rules weigh


def shifted_copies(model: keras.Model, spec: ModelSpec, paths: list[str], y: np.ndarray,
                   strengths: tuple[float, ...] = RULE_CONDITIONS["strengths"],
                   count: int = RULE_CONDITIONS["count"], seed: int = 0, batch_size: int = 32
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(truth, scores) of `count` evenly spaced images of a split under each held-in shift at each strength: what
    the `shift-mean` and `shift-worst` threshold rules weigh beside the unshifted split. Held-out shifts are never
    used here, so the stress test's held-out rows stay a fair test of the threshold they choose."""
    keep = evenly_spaced(len(paths), count)
    images, truth = decode_all([paths[i] for i in keep], spec.image_size), y[keep]
    return [(truth, score_pixels(model, apply_shift(name, images, strength, seed), spec, batch_size))
            for name in GROUPS["held-in"] for strength in strengths]


def evenly_spaced(n: int, count: int | None) -> np.ndarray:
    """Indices of `count` evenly spaced items of n (all of them when count is None or not below n)."""
    if count is None or count >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(int))


def worst_cases(rows: list[dict]) -> dict:
    """Per metric, the row (shift at its strongest) that moves it furthest below the unshifted value."""
    base, out = rows[0], {}
    for key in ("roc_auc", "sensitivity", "specificity", "accuracy"):
        if base.get(key) is None:
            continue
        shifted = [r for r in rows[1:] if r.get(key) is not None]
        if shifted:
            low = min(shifted, key=lambda r: r[key])
            out[key] = {"shift": low["shift"], "strength": low["strength"], "value": low[key],
                        "drop": base[key] - low[key]}
    return out


def lowest_at(result: dict, strength: float = 0.5) -> dict[str, dict[str, dict]]:
    """Per group (held-in, held-out): the lowest sensitivity and specificity of any shift at one strength, and
    which shift: {'held-out': {'specificity': {'value': 0.81, 'shift': 'grid'}, ...}, ...}."""
    out: dict[str, dict[str, dict]] = {}
    for row in result["rows"][1:]:
        if abs(row["strength"] - strength) > 1e-9:
            continue
        group = out.setdefault(row.get("group", "all"), {})
        for key in ("sensitivity", "specificity"):
            if row.get(key) is not None and (key not in group or row[key] < group[key]["value"]):
                group[key] = {"value": row[key], "shift": row["shift"]}
    return out


def lowest_line(result: dict, strength: float = 0.5) -> str:
    """'held-in: specificity 0.912 (noise), sensitivity 0.950 (blur); held-out: ...' at one strength."""
    return "; ".join(f"{group}: " + ", ".join(f"{key} {w['value']:.3f} ({w['shift']})" for key, w in worst.items())
                     for group, worst in lowest_at(result, strength).items())


def write_stress(out: str, result: dict) -> dict:
    """OUT/stress.json, OUT/stress.png (metrics against strength, one panel per shift) and OUT/stress.md."""
    from cxr_keras.evaluate.plots import plot_stress

    os.makedirs(out, exist_ok=True)
    result["figure"] = os.path.basename(plot_stress(result, os.path.join(out, "stress.png")))
    with atomic_writer(os.path.join(out, "stress.json")) as f:
        json.dump(result, f, indent=2)
    with atomic_writer(os.path.join(out, "stress.md")) as f:
        f.write(format_stress(result))
    return result


def format_stress(result: dict) -> str:
    """The stress test as a markdown table."""
    keys = [k for k in ("roc_auc", "sensitivity", "specificity", "accuracy") if result["rows"][0].get(k) is not None]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["## Shift stress test", "",
             f"{result['n_images']} images re-scored under graded acquisition shifts (strength 0 = as acquired, "
             f"1 = strong); decisions at the model's threshold {threshold_text(result['threshold'])}. A large drop "
             "means the model, or its threshold, will not hold on a scanner or site that differs that way.", "",
             "Held-in shifts are kinds a training option may apply (augmentation, consistency, the shift-aware "
             "threshold rules); held-out shifts are kinds none does, so their rows are the honest ones for a model "
             "trained with those options.", "",
             "| shift | group | strength | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    lines += [f"| {r['shift']} | {r.get('group', '')} | {r['strength']:.2f} | "
              + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in result["rows"]]
    for group, worst in result.get("worst_by_group", {"all shifts": result["worst"]}).items():
        lines += ["", f"Largest drops, {group}: " + "; ".join(
            f"{k.replace('_', ' ')} {w['value']:.3f} ({w['shift']} {w['strength']:.2f}, -{w['drop']:.3f})"
            for k, w in worst.items())]
    lines += ["",
              f"![stress]({result.get('figure', 'stress.png')})", ""]
    return "\n".join(lines)


def stress_split(out: str, model: keras.Model, spec: ModelSpec, paths: list[str], y: np.ndarray, threshold,
                 shifts: list[str] | None = None, strengths: tuple[float, ...] = STRENGTHS, count: int | None = None,
                 seed: int = 0, batch_size: int = 32) -> dict:
    """`stress_test` on `count` evenly spaced images of a split (all by default), written into `out`."""
    keep = evenly_spaced(len(paths), count)
    paths, y = [paths[i] for i in keep], y[keep]
    return write_stress(out, stress_test(model, spec, paths, y, threshold, shifts, strengths, seed, batch_size))
