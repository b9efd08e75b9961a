"""Training curves: loss, AUC and accuracy per epoch from a run's history.csv, stage boundaries marked."""

from __future__ import annotations

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cxr_keras.io_utils import atomic_writer  # noqa: E402

PANELS = (("loss", "Loss"), ("auc", "ROC-AUC"), ("accuracy", "Accuracy"))


def plot_history(history_csv: str, out_png: str) -> str:
    """Draw train and validation curves of each metric in PANELS that the history holds; returns `out_png`."""
    with open(history_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    panels = [(key, title) for key, title in PANELS if rows and key in rows[0]]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 3.6), squeeze=False)
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
    with atomic_writer(out_png, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return out_png
