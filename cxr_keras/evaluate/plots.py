"""Figures (matplotlib, PNG, written atomically) of evaluations: ROC with a bootstrap
band, PR, confusion matrices, threshold sweep, reliability diagram, per-class bars, and a grid of the most
confident mistakes."""

from __future__ import annotations

import os

import numpy as np
from sklearn import metrics as skm

from cxr_keras.evaluate.metrics import bootstrap_weights
from cxr_keras.io_utils import pyplot
from cxr_keras.io_utils import save_figure as save

plt = pyplot()
GRID = np.linspace(0, 1, 101)


def roc_band(y: np.ndarray, s: np.ndarray, resamples: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2.5% and 97.5% bootstrap quantiles of sensitivity on a grid of 1 - specificity."""
    curves = []
    for w in bootstrap_weights(len(y), resamples, seed):
        keep = w > 0
        if 0 < y[keep].sum() < keep.sum():
            fpr, tpr, _ = skm.roc_curve(y[keep], s[keep], sample_weight=w[keep])
            curves.append(np.interp(GRID, fpr, tpr))
    curves = np.array(curves)
    return np.quantile(curves, 0.025, axis=0), np.quantile(curves, 0.975, axis=0)


def plot_roc(columns: list[tuple[str, np.ndarray, np.ndarray]], path: str, point: dict | None = None,
             zoom: tuple[float, float] | None = None) -> str:
    """ROC per column (name, truth, scores), with a 95% bootstrap band when there is one column; `zoom` =
    (largest 1 - specificity, smallest sensitivity) shows only the top-left corner, where good models differ."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for name, y, s in columns:
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = skm.roc_curve(y, s)
            ax.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(y, s):.3f})")
            if len(columns) == 1:
                low, high = roc_band(y, s)
                ax.fill_between(GRID, low, high, alpha=0.25, label="95% bootstrap band")
    if point:
        ax.plot(1 - point["specificity"], point["sensitivity"], "ko", label=f"threshold {point['threshold']:.3f}")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    xmax, ymin = zoom or (1.0, 0.0)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC" + (" (top-left corner)" if zoom else ""),
           xlim=(0, xmax), ylim=(ymin, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)


def plot_pr(columns: list[tuple[str, np.ndarray, np.ndarray]], path: str) -> str:
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for name, y, s in columns:
        if 0 < y.sum() < len(y):
            precision, recall, _ = skm.precision_recall_curve(y, s)
            ax.plot(recall, precision, label=f"{name} (AP {skm.average_precision_score(y, s):.3f})")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall", xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower left")
    return save(fig, path)


def plot_confusion(matrix: np.ndarray, labels: list[str], path: str) -> str:
    """Counts and row-normalised rates side by side."""
    matrix = np.asarray(matrix)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    for ax, values, title, fmt in ((axes[0], matrix, "counts", "d"), (axes[1], normalised, "row-normalised", ".2f")):
        ax.imshow(values, cmap="Blues")
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, format(v, fmt), ha="center", va="center",
                    color="white" if values[i, j] > values.max() / 2 else "black")
        ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
               xlabel="predicted", ylabel="true", title=title)
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    return save(fig, path)


def plot_threshold_sweep(table: dict, path: str, threshold: float | None = None) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    t = table["threshold"]
    for key in ("sensitivity", "specificity", "ppv", "npv", "f1"):
        ax.plot(t, table[key], label=key)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"operating point {threshold:.3f}")
    ax.set(xlabel="threshold (positive when score >= threshold)", ylim=(0, 1.01), xlim=(0, 1), title="Threshold sweep")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_risk_coverage(curves: dict[str, dict], path: str) -> str:
    """Accuracy (and sensitivity, binary) of the kept films against coverage, one line per way of abstaining."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, curve), colour in zip(curves.items(), ("tab:blue", "tab:orange")):
        ax.plot(curve["coverage"], curve["accuracy"], "o-", color=colour, label=f"accuracy, abstaining by {name}")
        if "sensitivity" in curve:
            ax.plot(curve["coverage"], curve["sensitivity"], "s--", color=colour,
                    label=f"sensitivity, abstaining by {name}")
    ax.set(xlabel="coverage (fraction of films answered)", ylabel="on the films answered", xlim=(1.02, 0.48),
           title="Risk-coverage: abstaining on the least trusted films")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_reliability(curve: dict, ece: float, path: str) -> str:
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    ax.plot(curve["confidence"], curve["frequency"], "o-", label=f"model (ECE {ece:.3f})")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Reliability", xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_per_class(per_class: dict, path: str) -> str:
    names = list(per_class)
    keys = ("sensitivity", "specificity", "precision", "f1")
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names)), 3.8))
    x = np.arange(len(names))
    for i, key in enumerate(keys):
        ax.bar(x + (i - 1.5) * 0.2, [per_class[n][key] for n in names], width=0.2, label=key)
    ax.set(xticks=x, xticklabels=names, ylim=(0, 1.05), title="Per class")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    ax.legend(fontsize=7, ncol=4, loc="lower center")
    fig.tight_layout()
    return save(fig, path)


def plot_failures(images: np.ndarray, captions: list[str], path: str, columns: int = 4,
                  cams: np.ndarray | None = None, note: str = "") -> str:
    """A grid of images (N, H, W, 1) with a caption each: the most confident mistakes; with `cams` (N, H, W in
    0..1) each image carries its Grad-CAM overlay."""
    n = max(1, len(images))
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (ax, image, caption) in enumerate(zip(axes.ravel(), images, captions)):
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        if cams is not None:
            ax.imshow(cams[k], cmap="jet", vmin=0, vmax=1, alpha=0.35)
        ax.set_title(caption, fontsize=7)
    if len(images) == 0:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center")
    if note:
        fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def figure_paths(out: str) -> dict[str, str]:
    names = ("roc", "pr", "confusion", "threshold_sweep", "reliability", "per_class", "failures")
    return {name: os.path.join(out, f"{name}.png") for name in names}


def plot_gradcam(image: np.ndarray, cam: np.ndarray, title: str, path: str) -> str:
    """Original | heat map | overlay, with a colour bar."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("image")
    heat = axes[1].imshow(cam, cmap="jet", vmin=0, vmax=1)
    axes[1].set_title("Grad-CAM")
    axes[2].imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    axes[2].imshow(cam, cmap="jet", vmin=0, vmax=1, alpha=0.4)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(heat, ax=axes, fraction=0.025, pad=0.02)
    fig.suptitle(title, fontsize=9)
    return save(fig, path)


def plot_contact_sheet(images: np.ndarray, cams: np.ndarray, captions: list[str], path: str, columns: int = 6) -> str:
    """Overlays of many images on one page."""
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, cam, caption in zip(axes.ravel(), images, cams, captions):
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        ax.imshow(cam, cmap="jet", vmin=0, vmax=1, alpha=0.4)
        ax.set_title(caption, fontsize=6)
    fig.tight_layout()
    return save(fig, path)


def plot_mean_maps(maps: dict[str, np.ndarray], counts: dict[str, int], path: str) -> str:
    """One panel per class: its mean Grad-CAM map (see `gradcam.mean_maps`), each on its own colour scale."""
    fig, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps), 3.4), squeeze=False)
    for ax, (name, heat) in zip(axes[0], maps.items()):
        ax.imshow(heat, cmap="jet")
        ax.set_title(f"{name} ({counts[name]} images)", fontsize=9)
        ax.axis("off")
    fig.suptitle("Mean Grad-CAM by predicted class", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def plot_stress(result: dict, path: str) -> str:
    """One panel per shift: ROC-AUC, sensitivity and specificity (or accuracy) against shift strength."""
    shifts = list(result["shifts"])
    base = result["rows"][0]
    keys = [k for k in ("roc_auc", "sensitivity", "specificity", "accuracy") if base.get(k) is not None]
    if "sensitivity" in keys:
        keys.remove("accuracy")
    columns = min(4, len(shifts))
    rows = int(np.ceil(len(shifts) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False, sharey=True)
    for ax in axes.ravel()[len(shifts):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), shifts):
        part = [base] + [r for r in result["rows"] if r["shift"] == name]
        for key in keys:
            ax.plot([r["strength"] for r in part], [r[key] if r[key] is not None else np.nan for r in part],
                    marker="o", ms=3, label=key.replace("_", " "))
        ax.set(title=name, xlabel="strength", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Shift stress test ({result['n_images']} images; decisions at threshold "
                 f"{np.round(result['threshold'], 3)})", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def save_tile(image: np.ndarray, cam: np.ndarray | None, path: str) -> str:
    """One image (H, W, 1), 0..255, as a PNG of its own size, with its Grad-CAM (H, W in 0..1) blended in as on
    the grids (jet, 35%) when given: the failure gallery of report.html shows these."""
    gray = np.repeat(np.clip(image[..., :1], 0, 255) / 255.0, 3, axis=-1)
    rgb = gray if cam is None else 0.65 * gray + 0.35 * plt.get_cmap("jet")(np.clip(cam, 0, 1))[..., :3]
    plt.imsave(path + ".tmp.png", (rgb * 255).round().astype(np.uint8))
    os.replace(path + ".tmp.png", path)
    return path
