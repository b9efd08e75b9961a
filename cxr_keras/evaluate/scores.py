"""scores.csv: one row per image with its true labels and the model's probabilities, written exactly (repr) so a
threshold chosen on them splits them again as it did."""

from __future__ import annotations

import numpy as np

from cxr_keras.io_utils import atomic_writer
from cxr_keras.models.contract import ModelSpec


def write_scores(path: str, spec: ModelSpec, paths: list[str], y: np.ndarray, scores: np.ndarray) -> None:
    """One row per image: path, true_<class> and p_<class> (binary: the positive class only)."""
    import csv

    names = [spec.classes[spec.positive_index]] if spec.task == "binary" else spec.classes
    y2, s2 = y.reshape(len(y), -1), scores.reshape(len(scores), -1)
    with atomic_writer(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", *(f"true_{n}" for n in names), *(f"p_{n}" for n in names)])
        for p, truth_row, score_row in zip(paths, y2, s2):
            # repr: exact, so the threshold (one of the scores) splits the reloaded scores as it did these
            writer.writerow([p, *(int(t) for t in truth_row), *(repr(float(v)) for v in score_row)])


def read_scores(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """paths, truth (n, k) and scores (n, k) of a scores.csv written by `write_scores`."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    k = (len(rows[0]) - 1) // 2
    body = rows[1:]
    return ([r[0] for r in body], np.array([[int(v) for v in r[1:1 + k]] for r in body]),
            np.array([[float(v) for v in r[1 + k:]] for r in body]))
