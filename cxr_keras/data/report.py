"""`cxr data-report`: what a dataset holds, what was dropped and why, and a class-distribution chart."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

from cxr_keras.data.table import ImageTable, write_dropped
from cxr_keras.io_utils import atomic_writer, pyplot, save_figure


def images_per_patient(table: ImageTable) -> Counter:
    """How many patients have 1, 2, 3, ... images (patients the data does not name are left out)."""
    per_patient = Counter(p for p in table.patients if p is not None)
    return Counter(per_patient.values())


def data_summary(table: ImageTable, shown: int = 3) -> str:
    """What a run prints about its data before training: layout and notes, classes with counts, split sizes, and
    the files dropped (the first `shown` named, then the count)."""
    lines = [f"Data {table.root}: {len(table):,} images, task {table.task}",
             *[f"  {note}" for note in table.notes],
             "  classes: " + ", ".join(f"{name} {count:,}" for name, count in table.class_counts().items())]
    for split, counts in sorted(table.split_counts().items(), key=lambda item: _SPLIT_ORDER.get(item[0], 9)):
        n = sum(1 for s in table.splits if (s or "unsplit") == split)
        lines.append(f"  {split}: {n:,} images (" + ", ".join(f"{c} {counts[c]:,}" for c in table.classes) + ")")
    if table.dropped:
        lines.append(f"  dropped: {len(table.dropped):,} files")
        lines += [f"    {d.path}: {d.reason}" for d in table.dropped[:shown]]
        if len(table.dropped) > shown:
            lines.append(f"    ... and {len(table.dropped) - shown:,} more (dropped.csv)")
    return "\n".join(lines)


_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def copy_groups(table: ImageTable) -> list[list[str]]:
    """The paths of each group of copies (data/copies.py), in table order."""
    groups: dict[str, list[str]] = {}
    for path, name in zip(table.paths, table.meta.get("copy_group") or []):
        if name:
            groups.setdefault(name, []).append(path)
    return list(groups.values())


def format_report(table: ImageTable) -> str:
    """A plain-text report: layout, task, counts per class and split, patients, dropped files."""
    lines = [f"Dataset {table.root}", *[f"  {n}" for n in table.notes],
             f"Task {table.task}: {len(table):,} images, {len(table.classes)} classes"]
    lines.append(f"{'class':24s} {'images':>8s} {'share':>7s}")
    for name, count in table.class_counts().items():
        lines.append(f"{name:24s} {count:8,d} {count / max(len(table), 1):7.1%}")
    if table.task == "multilabel":
        lines.append(f"{'(no finding)':24s} {int((table.labels.sum(axis=1) == 0).sum()):8,d}")
    lines.append("Per split:")
    for split, counts in sorted(table.split_counts().items()):
        n = sum(1 for s in table.splits if (s or "unsplit") == split)
        lines.append(f"  {split:8s} {n:8,d} images  " + ", ".join(f"{c} {counts[c]:,}" for c in table.classes))
    named = [p for p in table.patients if p is not None]
    per_patient = images_per_patient(table)
    lines.append(f"Patients: {len(set(named)):,} named; {len(table) - len(named):,} images without a patient id "
                 "(each counts as its own patient in splits)")
    if per_patient:
        counts = np.repeat(list(per_patient), list(per_patient.values()))
        lines.append(f"Images per patient: min {counts.min()}, median {np.median(counts):g}, max {counts.max()}; "
                     + ", ".join(f"{k} image(s): {v:,}" for k, v in sorted(per_patient.items())[:8]))
    groups = copy_groups(table)
    lines.append(f"Copies: {len(groups):,} groups of byte-identical or near-identical images (a split made here "
                 "keeps each group in one split; a data-provided one is kept as given, with a warning above)")
    for group in groups[:20]:
        lines.append("  " + " = ".join(group))
    if len(groups) > 20:
        lines.append(f"  ... {len(groups) - 20:,} more groups")
    lines.append(f"Dropped: {len(table.dropped):,} files")
    for reason, n in Counter(d.reason.split(":")[0] for d in table.dropped).most_common():
        lines.append(f"  {n:6,d}  {reason}")
    for d in table.dropped[:20]:
        lines.append(f"    {d.path}: {d.reason}")
    if len(table.dropped) > 20:
        lines.append(f"    ... {len(table.dropped) - 20:,} more in the dropped list")
    return "\n".join(lines)


def plot_class_distribution(table: ImageTable, path: str) -> None:
    """Bar chart of images per class, one bar group per split; saved as PNG (atomically)."""
    plt = pyplot()
    splits = sorted(table.split_counts().items())
    x = np.arange(len(table.classes))
    width = 0.8 / max(len(splits), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(table.classes) + 3), 4))
    for k, (split, counts) in enumerate(splits):
        bars = ax.bar(x + k * width, [counts[c] for c in table.classes], width, label=split)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x + width * (len(splits) - 1) / 2, table.classes, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_title(f"{os.path.basename(table.root.rstrip('/'))}: class distribution ({table.task})")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def write_report(table: ImageTable, out_dir: str) -> dict[str, str]:
    """Write report.txt, class_distribution.png and dropped.csv into `out_dir`; return their paths."""
    paths = {name: os.path.join(out_dir, name) for name in ("report.txt", "class_distribution.png", "dropped.csv")}
    with atomic_writer(paths["report.txt"]) as f:
        f.write(format_report(table) + "\n")
    plot_class_distribution(table, paths["class_distribution.png"])
    write_dropped(table.dropped, paths["dropped.csv"])
    return paths
