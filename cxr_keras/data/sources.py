"""Finding the data: every dataset layout becomes the same `ImageTable`.

`load_dataset(root)` recognises the layout (or takes the one named), reads labels, patients and original
splits, verifies every image once, and returns the table with the dropped files and the decisions it took.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from cxr_keras.choices import LAYOUTS as CHOICES_LAYOUTS
from cxr_keras.config import DEFAULT_MAX_PIXELS
from cxr_keras.data.table import Dropped, ImageTable
from cxr_keras.data.verify import verify_files

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".dcm")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
NIH_FINDINGS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]
NIH_NO_FINDING = {"", "no finding", "no_finding"}  # NIH's own spelling of "none of the 14 findings"

LAYOUTS = CHOICES_LAYOUTS

# Patient ids in well-known file names: the first group is the patient.
PATIENT_PATTERNS = {
    "kermany": [r"^(person\d+)_(?:bacteria|virus)_\d+", r"^(NORMAL2-IM-\d+)-\d+", r"^(IM-\d+)-\d+"],
    "nih": [r"^0*(\d+)_\d{3}\.png$"],
    "cxr_keras": [r"^(patient[^_]+)_"],
}
PATH_COLUMNS = ["path", "filepath", "file_path", "file", "filename", "image", "image_path", "Image Index", "Path"]
LABELS_COLUMNS = ["labels", "label", "findings", "finding", "Finding Labels", "class", "diagnosis"]
PATIENT_COLUMNS = ["patient", "patient_id", "Patient ID", "PatientID", "subject", "subject_id"]
SPLIT_COLUMNS = ["split", "fold_split", "subset"]


class DataError(ValueError):
    """A dataset cannot be used as given; the message says which file or option and what to do."""


@dataclass
class _Records:
    """What an adapter found, before verification: one entry per image."""

    layout: str
    paths: list[str] = field(default_factory=list)
    labels: list[list[str]] = field(default_factory=list)
    patients: list[str | None] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    classes: list[str] | None = None
    multilabel: bool = False
    dropped: list[Dropped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, list] = field(default_factory=dict)

    def add(self, path: str, labels: list[str], patient: str | None, split: str | None) -> None:
        self.paths.append(path)
        self.labels.append(labels)
        self.patients.append(patient)
        self.splits.append(split)


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
) -> ImageTable:
    """Read a dataset into an `ImageTable`, verifying each image once (cached).

    `layout` is one of `LAYOUTS` or "auto". `classes` fixes the class list and order (any other label is an
    error); `task` overrides the inferred task; `patient_pattern` is a regex whose first group is the patient
    id in a file name (the Kermany, NIH and cxr_keras naming is recognised without it). A CSV row whose path is
    absolute or climbs out of the images folder is refused unless `allow_outside_paths`.
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
        csv_path = csv_path or _single_csv(root)
        records = _read_csv(csv_path, images_dir or root, chosen, path_column, labels_column, delimiter,
                            allow_outside_paths, patterns)
    else:
        records = _read_folders(root, chosen, patterns)
    if patient_pattern and records.paths and not any(records.patients):
        raise DataError(f"--patient-pattern {patient_pattern!r} matches none of the {len(records.paths)} file names "
                        f"(e.g. {os.path.basename(records.paths[0])}): no patient grouping would be possible, so "
                        "images of one patient could land in two splits; fix the pattern or leave it out")
    records.notes.insert(0, f"layout {chosen} ({why}): {LAYOUTS[chosen]}")
    return _to_table(records, root, classes, task, max_pixels, verify)


def describe_layouts() -> str:
    """The layouts this module understands, one per line."""
    return "\n".join(f"  {name:18s} {text}" for name, text in LAYOUTS.items())


def detect_layout(root: str, csv_path: str | None = None) -> tuple[str, str]:
    """Recognise a dataset's layout; returns (layout, reason). Raises DataError listing the known layouts."""
    if csv_path:
        header = _csv_header(csv_path)
        if {"Image Index", "Finding Labels"} <= set(header):
            return "nih", f"{os.path.basename(csv_path)} has NIH 'Image Index' and 'Finding Labels' columns"
        return "csv", f"--csv {os.path.basename(csv_path)} given"
    csvs = [f for f in os.listdir(root) if f.lower().endswith((".csv", ".csv.gz"))] if os.path.isdir(root) else []
    if len(csvs) == 1 and set(_csv_header(os.path.join(root, csvs[0]))) & set(PATH_COLUMNS):
        return detect_layout(root, os.path.join(root, csvs[0]))
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
    if subdirs and any(_image_files(os.path.join(root, d)) for d in subdirs):
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


def _image_files(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


def _read_folders(root: str, layout: str, patterns: list[str]) -> _Records:
    records = _Records(layout)
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
            class_dir = os.path.join(folder, name, image_subdir).rstrip(os.sep)
            files = _image_files(class_dir)
            if not files:
                raise DataError(
                    f"class folder {class_dir} has no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}): add images or remove the folder"
                )
            for path in files:
                records.add(path, [name], patient_from_name(os.path.basename(path), patterns), split)
    return records


def _single_csv(root: str) -> str:
    csvs = [f for f in os.listdir(root) if f.lower().endswith((".csv", ".csv.gz"))]
    if len(csvs) != 1:
        raise DataError(f"expected one label CSV in {root}, found {len(csvs)}: pass --csv FILE")
    return os.path.join(root, csvs[0])


def _open_text(path: str):
    return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")


def _csv_header(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise DataError(f"label CSV {path} does not exist")
    with _open_text(path) as f:
        return next(csv.reader(f), [])


def _index_images(images_dir: str) -> dict[str, str]:
    """File name -> path for every image under `images_dir`, recursively (the first of duplicate names)."""
    index: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(images_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                index.setdefault(name, os.path.join(dirpath, name))
    return index


def _pick(header: list[str], wanted: str | None, candidates: list[str], what: str) -> str | None:
    if wanted:
        if wanted not in header:
            raise DataError(f"{what} column {wanted!r} is not in the CSV; its columns are {header}")
        return wanted
    return next((c for c in candidates if c in header), None)


def _read_csv(
    csv_path: str,
    images_dir: str,
    layout: str,
    path_column: str | None,
    labels_column: str | None,
    delimiter: str,
    allow_outside_paths: bool,
    patterns: list[str],
) -> _Records:
    """NIH or generic label CSV; images resolved relative to `images_dir`, and a bare file name that is not
    there is looked for anywhere beneath it (a row naming a folder never falls back to another file).

    Without a patient column, patients come from file names (NIH's `00000001_000.png` is patient 1).
    Only NIH's "No Finding" means "no label": in a generic CSV every label is the user's own class name (NORMAL
    is a class). A file listed twice with the same labels is kept once; with different labels it is an error."""
    header = _csv_header(csv_path)
    path_col = _pick(header, path_column, PATH_COLUMNS, "path")
    if path_col is None:
        raise DataError(f"{csv_path}: no path column among {header}; name it with --path-column")
    labels_col = _pick(header, labels_column, LABELS_COLUMNS, "labels")
    patient_col = _pick(header, None, PATIENT_COLUMNS, "patient")
    split_col = _pick(header, None, SPLIT_COLUMNS, "split")
    with _open_text(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows")
    used = {path_col, labels_col, patient_col, split_col}
    onehot_cols = [] if labels_col else [c for c in header if c not in used and _is_binary_column(rows, c)]
    if not labels_col and not onehot_cols:
        raise DataError(
            f"{csv_path}: no labels column ({', '.join(LABELS_COLUMNS)}) and no 0/1 label columns; "
            "name one with --labels-column"
        )
    records = _Records(layout, multilabel=layout == "nih")
    if layout == "nih":
        records.classes = NIH_FINDINGS
        records.meta["view_position"] = []
    elif onehot_cols:
        records.classes = onehot_cols
    index: dict[str, str] | None = None
    missing: list[str] = []
    seen: dict[str, tuple[int, list[str]]] = {}
    repeated: list[str] = []
    none = NIH_NO_FINDING if layout == "nih" else {""}
    for line, row in enumerate(rows, start=2):
        name = row[path_col].strip()
        if not allow_outside_paths:
            _check_inside(name, images_dir, csv_path, line)
        path = name if os.path.isabs(name) else os.path.join(images_dir, name)
        if not os.path.isfile(path):  # a bare file name (NIH's Image Index) is looked for anywhere beneath;
            index = index if index is not None else _index_images(images_dir)  # a path names one file only
            path = index.get(name, "") if os.path.basename(name) == name else ""
        if not path:
            missing.append(f"{name} (CSV line {line})")
            continue
        if labels_col:
            labels = [x.strip() for x in row[labels_col].split(delimiter) if x.strip().lower() not in none]
        else:
            labels = [c for c in onehot_cols if float(row[c] or 0) == 1.0]
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            first, before = seen[key]
            if sorted(before) != sorted(labels):
                raise DataError(f"{csv_path}: {name} is listed on line {first} as {before} and on line {line} as "
                                f"{labels}; fix the CSV so each image has one set of labels")
            repeated.append(f"{name} (lines {first} and {line})")
            continue
        seen[key] = (line, labels)
        patient = row[patient_col].strip() if patient_col else patient_from_name(os.path.basename(name), patterns)
        records.add(path, labels, patient or None,
                    SPLIT_NAMES.get(row[split_col].strip().lower()) if split_col else None)
        if layout == "nih":
            records.meta["view_position"].append(row.get("View Position"))
    if repeated:
        records.notes.append(f"{len(repeated)} CSV rows list an image again with the same labels, used once: "
                             + "; ".join(repeated[:3]) + (" ..." if len(repeated) > 3 else ""))
    if missing:
        shown = "; ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        records.notes.append(f"{len(missing):,} of {len(rows):,} CSV rows have no image under {images_dir}: {shown}")
        if layout == "csv":  # a generic CSV names files the user meant to have: list every one
            records.dropped += [Dropped(m, f"listed in {os.path.basename(csv_path)} but not found") for m in missing]
    if index is not None:
        unlisted = len(set(index.values()) - set(records.paths))
        if unlisted:
            records.notes.append(f"{unlisted:,} images under {images_dir} are not in the CSV and were ignored")
    return records


def _check_inside(name: str, images_dir: str, csv_path: str, line: int) -> None:
    """Refuse a CSV path that is absolute or leaves the images folder (`../../etc/passwd`)."""
    inside = not os.path.isabs(name) and os.path.normpath(name).split(os.sep)[0] != os.pardir
    if not inside:
        raise DataError(f"{csv_path} line {line}: path {name!r} is outside the images folder {images_dir}; "
                        "use paths relative to it, or pass --allow-outside-paths if you mean it")


def _is_binary_column(rows: list[dict], column: str) -> bool:
    return all((row[column] or "").strip() in {"0", "1", "0.0", "1.0"} for row in rows)


def _to_table(
    records: _Records,
    root: str,
    classes: list[str] | None,
    task: str | None,
    max_pixels: int,
    verify: bool,
) -> ImageTable:
    """Check labels, verify images and build the table."""
    if not records.paths:
        raise DataError(f"no images found for layout {records.layout} under {root}")
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
    task = task or ("multilabel" if not single else "binary" if len(class_list) == 2 else "multiclass")
    if task != "multilabel" and not single:
        bad = next(p for p, labels in zip(records.paths, records.labels) if len(labels) != 1)
        raise DataError(f"task {task} needs exactly one label per image, but {bad} has not; use --task multilabel")

    keep = np.ones(len(records.paths), dtype=bool)
    dropped = list(records.dropped)
    if verify:
        usable, bad = verify_files(records.paths, max_pixels=max_pixels, root=root)
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
    empty = [c for c, n in table.class_counts().items() if n == 0]
    if empty:
        table.notes.append(f"classes {empty} have no usable images: training cannot learn them")
    return table
