"""A run's training curves (curves.png): loss, ROC-AUC and accuracy per epoch, train and validation, stage
boundaries dashed."""

from __future__ import annotations

import csv

from cxr_keras.io_utils import pyplot
from cxr_keras.io_utils import save_figure as save

PANELS = (("loss", "Loss"), ("auc", "ROC-AUC"), ("accuracy", "Accuracy"))


def plot_history(history_csv: str, out_png: str) -> str:
    """A run's train and validation curves of each metric in PANELS that its history.csv holds, stage
    boundaries dashed; returns `out_png`."""
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    panels = [(key, title) for key, title in PANELS if rows and key in rows[0]]
    fig, axes = pyplot().subplots(1, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 3.6), squeeze=False)
    boundaries = [e for prev, row, e in zip(rows, rows[1:], epochs[1:]) if row.get("stage") != prev.get("stage")]
    for ax, (key, title) in zip(axes[0], panels):
        ax.plot(epochs, [float(r[key]) for r in rows], marker="o", label="train")
        if f"val_{key}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], marker="o", label="validation")
        for b in boundaries:
            ax.axvline(b - 0.5, color="gray", linestyle="--", linewidth=1)
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if boundaries:
        fig.suptitle("dashed lines: start of a new fine-tuning stage", fontsize=9)
    fig.tight_layout()
    return save(fig, out_png)
