"""Finding the data: every dataset layout becomes the same `ImageTable`.

`load_dataset(root)` recognises the layout (or takes the one named), reads labels, patients and original
splits, verifies every image once, and returns the table with the dropped files and the decisions it took.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import numpy as np

from cxr_keras.choices import LAYOUTS as CHOICES_LAYOUTS
from cxr_keras.config import DEFAULT_MAX_PIXELS
from cxr_keras.data.copies import apply_copy_policy
from cxr_keras.data.csv_source import (
    NIH_FINDINGS,
    NIH_NO_FINDING,
    SPLIT_NAMES,
    csv_header,
    label_csvs,
    read_csv,
    single_csv,
)
from cxr_keras.data.image_io import IMAGE_EXTENSIONS
from cxr_keras.data.labels import fold_label_case, label_key
from cxr_keras.data.records import DataError, Records
from cxr_keras.data.table import NORMAL_NAMES, Dropped, ImageTable
from cxr_keras.data.verify import Fingerprint, verify_files
from cxr_keras.data.walk import find_images

LAYOUTS = CHOICES_LAYOUTS
__all__ = ["NIH_FINDINGS", "NIH_NO_FINDING", "DataError", "detect_layout", "load_dataset", "load_table",
           "patient_from_name"]

# Patient ids in well-known file names: the first group is the patient.
PATIENT_PATTERNS = {
    "kermany": [r"^(person\d+)_(?:bacteria|virus)_\d+", r"^(NORMAL2-IM-\d+)-\d+", r"^(IM-\d+)-\d+"],
    "nih": [r"^0*(\d+)_\d{3}\.png$"],
    "cxr_keras": [r"^(patient[^_]+)_"],
}

def load_dataset(
    root: str,
    layout: str = "auto",
    csv_path: str | None = None,
    images_dir: str | None = None,
    *,
    classes: list[str] | None = None,
    task: str | None = None,
    patient_pattern: str | None = None,
    path_column: str | None = None,
    labels_column: str | None = None,
    delimiter: str = "|",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    allow_outside_paths: bool = False,
    keep_label_case: bool = False,
    copy_conflicts: str = "refuse",
) -> ImageTable:
    """Read a dataset into an `ImageTable`, verifying each image once (cached).

    `layout` is one of `LAYOUTS` or "auto". `classes` fixes the class list and order (any other label is an
    error); `task` overrides the inferred task; `patient_pattern` is a regex whose first group is the patient
    id in a file name (the Kermany, NIH and cxr_keras naming is recognised without it). A CSV row whose path is
    absolute or climbs out of the images folder is refused unless `allow_outside_paths`. Labels that differ
    only in case or spacing are one class unless `keep_label_case` (data/labels.py). Copies of one film under two
    labels are refused, or dropped with `copy_conflicts="drop"` (data/copies.py).
    """
    root = os.path.abspath(root) if root else os.path.dirname(os.path.abspath(csv_path or "."))
    if not os.path.isdir(root) and not csv_path:
        what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise DataError(f"data directory {root} {what}; give the folder that holds the images (and, for a CSV "
                        "dataset, --csv)")
    chosen, why = (layout, "as asked") if layout != "auto" else detect_layout(root, csv_path)
    if chosen not in LAYOUTS:
        raise DataError(f"unknown layout {chosen!r}; known layouts:\n{describe_layouts()}")
    patterns = [patient_pattern] if patient_pattern else [p for ps in PATIENT_PATTERNS.values() for p in ps]

    if chosen in ("nih", "csv"):
        csv_path = csv_path or single_csv(root)
        records = read_csv(csv_path, images_dir or root, chosen, path_column, labels_column, delimiter,
                           allow_outside_paths, lambda name: patient_from_name(name, patterns))
    else:
        records = _read_folders(root, chosen, patterns)
    if patient_pattern and records.paths and not any(records.patients):
        raise DataError(f"--patient-pattern {patient_pattern!r} matches none of the {len(records.paths)} file names "
                        f"(e.g. {os.path.basename(records.paths[0])}): no patient grouping would be possible, so "
                        "images of one patient could land in two splits; fix the pattern or leave it out")
    records.notes.insert(0, f"layout {chosen} ({why}): {LAYOUTS[chosen]}")
    records.labels, folded = fold_label_case(records.labels, classes or records.classes, keep_label_case)
    records.notes += [folded] if folded else []
    return _to_table(records, root, classes, task, max_pixels, verify, copy_conflicts)


def load_table(data) -> ImageTable:
    """The dataset a `config.DataConfig` describes, unsplit."""
    return load_dataset(data.data_dir, data.layout, data.csv, data.images_dir, classes=data.classes, task=data.task,
                        patient_pattern=data.patient_pattern, path_column=data.path_column,
                        labels_column=data.labels_column, delimiter=data.delimiter, max_pixels=data.max_pixels,
                        allow_outside_paths=data.allow_outside_paths, keep_label_case=data.keep_label_case,
                        copy_conflicts=data.copy_conflicts)


def describe_layouts() -> str:
    """The layouts this module understands, one per line."""
    return "\n".join(f"  {name:18s} {text}" for name, text in LAYOUTS.items())


def detect_layout(root: str, csv_path: str | None = None) -> tuple[str, str]:
    """Recognise a dataset's layout; returns (layout, reason). Raises DataError listing the known layouts."""
    if csv_path:
        header = csv_header(csv_path)
        if {"Image Index", "Finding Labels"} <= set(header):
            return "nih", f"{os.path.basename(csv_path)} has NIH 'Image Index' and 'Finding Labels' columns"
        return "csv", f"--csv {os.path.basename(csv_path)} given"
    labelled = label_csvs(root)
    if len(labelled) > 1:
        raise DataError(f"{root} holds {len(labelled)} label CSVs ({', '.join(sorted(labelled))}): pass --csv FILE to "
                        "say which one labels the images")
    if len(labelled) == 1:
        layout, _ = detect_layout(root, os.path.join(root, labelled[0]))
        return layout, f"the one label CSV in the folder, {labelled[0]}"
    subdirs = _subdirs(root)
    split_dirs = [d for d in subdirs if d.lower() in SPLIT_NAMES]
    if split_dirs:
        inner = [c for s in split_dirs for c in _subdirs(os.path.join(root, s))]
        if inner and all(os.path.isdir(os.path.join(root, s, c, "images")) for s in split_dirs
                         for c in _subdirs(os.path.join(root, s))):
            return "covid-qu-ex", f"split folders {sorted(split_dirs)} with <class>/images/ inside"
        if {c.upper() for c in inner} == {"NORMAL", "PNEUMONIA"}:
            return "kermany", f"split folders {sorted(split_dirs)} holding NORMAL and PNEUMONIA"
        if inner:
            return "split-folders", f"split folders {sorted(split_dirs)} holding class folders"
    if subdirs and all(os.path.isdir(os.path.join(root, d, "images")) for d in subdirs):
        return "covid-radiography", "every class folder has an images/ folder"
    if subdirs and any(find_images(os.path.join(root, d)).images for d in subdirs):
        if {d.upper() for d in subdirs} == {"NORMAL", "PNEUMONIA"}:
            return "kermany", "NORMAL and PNEUMONIA folders (one Kermany split)"
        return "folder", f"{len(subdirs)} class folders holding images"
    raise DataError(
        f"cannot recognise the layout of {root}: no class folders with images, no split folders and no single "
        f"label CSV. Known layouts (pass --layout NAME, or --csv FILE):\n{describe_layouts()}"
    )


def patient_from_name(filename: str, patterns: Iterable[str]) -> str | None:
    """The patient id in a file name: the first group of the first pattern that matches, else None."""
    for pattern in patterns:
        match = re.match(pattern, filename)
        if match:
            return match.group(1)
    return None


def _subdirs(path: str) -> list[str]:
    if not os.path.isdir(path):
        return []
    return sorted(d for d in os.listdir(path)
                  if os.path.isdir(os.path.join(path, d)) and not d.startswith((".", "__")))


def _read_folders(root: str, layout: str, patterns: list[str]) -> Records:
    records = Records(layout)
    if layout in ("kermany", "split-folders", "covid-qu-ex"):
        split_dirs = [d for d in _subdirs(root) if d.lower() in SPLIT_NAMES]
        if split_dirs:
            folders = [(os.path.join(root, s), SPLIT_NAMES[s.lower()]) for s in split_dirs]
        else:  # one split folder of the layout, e.g. kermany/train
            folders = [(root, SPLIT_NAMES.get(os.path.basename(root).lower()))]
    else:
        folders = [(root, None)]
    image_subdir = "images" if layout in ("covid-radiography", "covid-qu-ex") else ""
    for folder, split in folders:
        class_dirs = _subdirs(folder)
        if not class_dirs:
            raise DataError(f"{folder} has no class folders; expected {LAYOUTS[layout]}")
        for name in class_dirs:
            _read_class_folder(records, os.path.join(folder, name, image_subdir).rstrip(os.sep), name, split,
                               patterns, class_dirs)
    skipped = len(records.dropped)
    if skipped:
        records.notes.append(f"{skipped} files in class folders are not images and were skipped (e.g. "
                             f"{records.dropped[0].path}); see the dropped list")
    return records


def _read_class_folder(records: Records, class_dir: str, name: str, split: str | None, patterns: list[str],
                       classes: list[str]) -> None:
    """The images under one class folder, sub-folders included (labelled by the class folder), said in notes; a
    sub-folder named like another class, or like masks, is refused: its images would take this folder's label."""
    found = find_images(class_dir)
    _check_sub_folders(class_dir, name, found.images, classes)
    if not found.images:
        raise DataError(f"class folder {class_dir} has no images ({', '.join(IMAGE_EXTENSIONS)}, or DICOM by "
                        "content): add images or remove the folder")
    for path in found.images:
        records.add(path, [name], patient_from_name(os.path.basename(path), patterns), split)
    records.dropped += [Dropped(p, "not an image by its name or content (known: " + ", ".join(IMAGE_EXTENSIONS)
                                + ", or DICOM)") for p in found.others]
    nested = sorted({os.path.relpath(os.path.dirname(p), class_dir) for p in found.images} - {"."})
    if nested:
        count = sum(os.path.dirname(p) != class_dir for p in found.images)
        records.notes.append(f"{count} images of {class_dir} are in its sub-folders ({', '.join(nested[:3])}"
                             f"{' ...' if len(nested) > 3 else ''}): labelled {name}")
    if found.skipped:
        records.notes.append(f"{class_dir}: {found.skipped_text()}")


def _to_table(records: Records, root: str, classes: list[str] | None, task: str | None, max_pixels: int,
              verify: bool, copy_conflicts: str = "refuse") -> ImageTable:
    """Check labels, verify images, build the table, and deal with copies of one film."""
    if not records.paths:
        raise DataError(f"no images found for layout {records.layout} under {root}")
    class_list, task = _classes_and_task(records, root, classes, task)
    keep = np.ones(len(records.paths), dtype=bool)
    dropped = list(records.dropped)
    fingerprints: dict[str, Fingerprint] = {}
    if verify:
        usable, bad = verify_files(records.paths, max_pixels=max_pixels, root=root, fingerprints=fingerprints)
        usable_set = set(usable)
        keep = np.array([p in usable_set for p in records.paths])
        dropped += bad
        if bad:
            records.notes.append(f"{len(bad)} unreadable or oversized files dropped (see the dropped list)")
    position = {c: i for i, c in enumerate(class_list)}
    labels = np.zeros((len(records.paths), len(class_list)), dtype=np.float32)
    for row, names in enumerate(records.labels):
        labels[row, [position[n] for n in names]] = 1.0
    table = ImageTable(
        paths=records.paths, labels=labels, classes=class_list, task=task, patients=records.patients,
        splits=records.splits, layout=records.layout, root=root, dropped=dropped, notes=records.notes,
        meta=records.meta,
    ).subset(keep)
    if len(table) == 0:
        raise DataError(f"every image under {root} was dropped as unreadable; see the dropped list")
    if fingerprints:
        table = apply_copy_policy(table, fingerprints, copy_conflicts)
    empty = [c for c, n in table.class_counts().items() if n == 0]
    if empty:
        table.notes.append(f"classes {empty} have no usable images: training cannot learn them")
    return table


def _check_sub_folders(class_dir: str, name: str, images: list[str], classes: list[str]) -> None:
    others = {label_key(c): c for c in classes if label_key(c) != label_key(name)}
    for folder in sorted({os.path.dirname(p) for p in images} - {class_dir}):
        for part in os.path.relpath(folder, class_dir).split(os.sep):
            if label_key(part) in others:
                other = others[label_key(part)]
                raise DataError(f"{folder} is inside class folder {name} but named like class {other}: its images "
                                f"would be labelled {name}; move it to where it belongs, or rename it")
            if "mask" in part.lower():
                raise DataError(f"{folder} looks like a folder of masks inside class folder {name}: masks are not "
                                "films; move it out of the class folder (a sub-folder named exactly 'masks' is "
                                "skipped)")


def _classes_and_task(records: Records, root: str, classes: list[str] | None, task: str | None
                      ) -> tuple[list[str], str]:
    """The class list (given, the layout's, or the labels found) and the task (given or inferred), checked."""
    found = sorted({label for labels in records.labels for label in labels})
    class_list = list(classes or records.classes or found)
    unknown = sorted(set(found) - set(class_list))
    if unknown:
        example = next(p for p, labels in zip(records.paths, records.labels) if set(labels) & set(unknown))
        raise DataError(
            f"labels {unknown} are not in the class list {class_list} (e.g. {example}); "
            "fix the labels or pass the full --classes list"
        )
    if len(class_list) < 2:
        raise DataError(
            f"the dataset under {root} has a single class {class_list}: a classifier needs at least two "
            "(check the folder layout or the label column)"
        )
    single = all(len(labels) == 1 for labels in records.labels) and not records.multilabel
    if not task and not records.multilabel and not single:
        _check_inferred_multilabel(records, class_list)
    if not task and not single:
        several = sum(len(x) > 1 for x in records.labels)
        records.notes.append(f"task multilabel, inferred: {several} images carry two or more labels and "
                             f"{sum(not x for x in records.labels)} none (pass --task to say otherwise)")
    task = task or ("multilabel" if not single else "binary" if len(class_list) == 2 else "multiclass")
    if task != "multilabel" and not single:
        bad = next(p for p, labels in zip(records.paths, records.labels) if len(labels) != 1)
        raise DataError(f"task {task} needs exactly one label per image, but {bad} has not; use --task multilabel")
    return class_list, task


def _check_inferred_multilabel(records: Records, class_list: list[str]) -> None:
    """Rows without a label, or with two, in data that does not say it is multi-label: refused where that is
    most likely a labelling error (single-label rows around them, or a "normal" class, which cannot sit beside a
    finding); the user says --task multilabel when it is meant."""
    none = [p for p, labels in zip(records.paths, records.labels) if not labels]
    several = [(p, labels) for p, labels in zip(records.paths, records.labels) if len(labels) > 1]
    normal = [c for c in class_list if c.lower() in NORMAL_NAMES]
    if none and not several:
        raise DataError(f"{len(none)} of {len(records.paths)} images have no label (e.g. {none[0]}) while every "
                        "other has one: fill in the missing labels, or pass --task multilabel if an empty label "
                        "means 'no finding'")
    if normal and (none or several):
        example = f"{several[0][0]} is {'|'.join(several[0][1])}" if several else f"{none[0]} has no label"
        raise DataError(f"the labels read as multi-label ({len(several)} images with two or more labels, {len(none)} "
                        f"with none; e.g. {example}), but the class {normal[0]!r} cannot sit beside a finding: fix "
                        "those rows, or pass --task multilabel if this is what you mean")
