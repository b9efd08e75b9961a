"""Label CSVs (NIH's Data_Entry_2017 or a user's own path/labels table) to `Records`.

Read as people save them: a UTF-8 byte-order mark (Excel) is stripped, and the separator is the header's own
(comma, semicolon or tab). What would mislabel silently is refused: a header that names a column twice, and a
bare file name that matches two files under the images folder.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections import Counter

from cxr_keras.data.image_io import is_image_name
from cxr_keras.data.records import DataError, Records
from cxr_keras.data.table import Dropped

PATH_COLUMNS = ["path", "filepath", "file_path", "file", "filename", "image", "image_path", "Image Index", "Path"]
LABELS_COLUMNS = ["labels", "label", "findings", "finding", "Finding Labels", "class", "diagnosis"]
PATIENT_COLUMNS = ["patient", "patient_id", "Patient ID", "PatientID", "subject", "subject_id"]
SPLIT_COLUMNS = ["split", "fold_split", "subset"]
SEPARATORS = (",", ";", "\t")
NIH_FINDINGS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]
NIH_NO_FINDING = {"", "no finding", "no_finding"}  # NIH's own spelling of "none of the 14 findings"
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}


def open_text(path: str):
    """A CSV file (or .csv.gz) as text, a UTF-8 byte-order mark dropped."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


def separator(path: str) -> str:
    """The header line's separator: whichever of comma, semicolon and tab it holds most (comma on a tie)."""
    with open_text(path) as f:
        first = f.readline()
    return max(SEPARATORS, key=lambda s: (first.count(s), s == ","))


LINE = object()  # each row's key for its line number in the file (no header can name it)


def read_rows(path: str) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV, each row also holding its line number under `LINE`; blank lines skipped; a column
    named twice is refused, as its values would silently overwrite."""
    if not os.path.isfile(path):
        raise DataError(f"label CSV {path} does not exist")
    try:
        with open_text(path) as f:
            reader = csv.reader(f, delimiter=separator(path))
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise DataError(f"{path} is empty (no header, no rows); give the label CSV: a path column and a "
                                "labels column")
            _check_header(path, header)
            rows = []
            for row in reader:
                if not any(field.strip() for field in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path} line {reader.line_num}: {len(row)} fields where the header has "
                                    f"{len(header)} (a separator inside an unquoted value?); quote the value or fix "
                                    "the row")
                rows.append({**dict(zip(header, (value.strip() for value in row))), LINE: reader.line_num})
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as CSV UTF-8") from None
    return header, rows


def _check_header(path: str, header: list[str]) -> None:
    """A column named twice (`label` and `Label` too) is refused: which one holds the labels would be a guess."""
    keys = Counter(name.casefold() for name in header if name)
    twice = [name for name in header if name and keys[name.casefold()] > 1]
    if twice:
        raise DataError(f"{path}: the header names column {twice[0]!r} {len(twice)} times ({', '.join(twice)}); "
                        "which one holds the labels is ambiguous: rename or delete the extra column")


def csv_header(path: str) -> list[str]:
    return read_rows(path)[0]


def label_csvs(root: str) -> list[str]:
    """The CSV files in `root` (not below it) that can label images: those with a path column. A folder's other
    tables (a list of near-duplicate pairs, a metadata export) are not label files."""
    if not os.path.isdir(root):
        return []
    csvs = sorted(f for f in os.listdir(root) if f.lower().endswith((".csv", ".csv.gz")))
    return [f for f in csvs if set(csv_header(os.path.join(root, f))) & set(PATH_COLUMNS)]


def single_csv(root: str) -> str:
    """The one label CSV in `root`; none, or several, is an error that says to pass --csv."""
    csvs = label_csvs(root)
    if len(csvs) != 1:
        raise DataError(f"expected one label CSV (a CSV with a path column: {', '.join(PATH_COLUMNS)}) in {root}, "
                        f"found {len(csvs)}{': ' + ', '.join(csvs) if csvs else ''}: pass --csv FILE")
    return os.path.join(root, csvs[0])


def _index_images(images_dir: str) -> dict[str, list[str]]:
    """File name -> every path with that name under `images_dir`, recursively."""
    index: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(images_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if is_image_name(path):
                index.setdefault(name, []).append(path)
    return index


def _pick(header: list[str], wanted: str | None, candidates: list[str], what: str) -> str | None:
    if wanted:
        if wanted not in header:
            raise DataError(f"{what} column {wanted!r} is not in the CSV; its columns are {header}")
        return wanted
    return next((c for c in candidates if c in header), None)


class _Resolver:
    """A CSV row's path to one file: as given relative to the images folder, else a bare file name looked for
    anywhere beneath it (a name found twice is refused: either file could be the one meant)."""

    def __init__(self, csv_path: str, images_dir: str, allow_outside: bool):
        self.csv_path, self.images_dir, self.allow_outside = csv_path, images_dir, allow_outside
        self.index: dict[str, list[str]] | None = None

    def __call__(self, name: str, line: int) -> str:
        if not self.allow_outside:
            _check_inside(name, self.images_dir, self.csv_path, line)
        path = name if os.path.isabs(name) else os.path.join(self.images_dir, name)
        if os.path.isfile(path) or os.path.basename(name) != name:
            return path if os.path.isfile(path) else ""  # a path names one file only
        self.index = self.index if self.index is not None else _index_images(self.images_dir)
        found = self.index.get(name, [])
        if len(found) > 1:
            shown = ", ".join(os.path.relpath(p, self.images_dir) for p in found[:4])
            raise DataError(f"{self.csv_path} line {line}: {name} is ambiguous, {len(found)} files under "
                            f"{self.images_dir} have that name ({shown}); write the path relative to it")
        return found[0] if found else ""


def read_csv(csv_path: str, images_dir: str, layout: str, path_column: str | None, labels_column: str | None,
             delimiter: str, allow_outside_paths: bool, patient_of) -> Records:
    """NIH or generic label CSV; images resolved relative to `images_dir` (see `_Resolver`).

    Without a patient column, `patient_of(file name)` names the patient (NIH's `00000001_000.png` is patient 1).
    Only NIH's "No Finding" means "no label": in a generic CSV every label is the user's own class name (NORMAL
    is a class). A file listed twice with the same labels is kept once; with different labels it is an error."""
    header, rows = read_rows(csv_path)
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows")
    path_col = _pick(header, path_column, PATH_COLUMNS, "path")
    if path_col is None:
        raise DataError(f"{csv_path}: no path column among {header}; name it with --path-column")
    labels_col = _pick(header, labels_column, LABELS_COLUMNS, "labels")
    patient_col = _pick(header, None, PATIENT_COLUMNS, "patient")
    split_col = _pick(header, None, SPLIT_COLUMNS, "split")
    used = {path_col, labels_col, patient_col, split_col}
    onehot_cols = [] if labels_col else _onehot_columns(csv_path, header, rows, used)
    if not labels_col and not onehot_cols:
        raise DataError(f"{csv_path}: no labels column ({', '.join(LABELS_COLUMNS)}) and no 0/1 label columns; "
                        "name one with --labels-column")
    records = Records(layout, multilabel=layout == "nih")
    records.classes = NIH_FINDINGS if layout == "nih" else (onehot_cols or None)
    if layout == "nih":
        records.meta["view_position"] = []
    none = NIH_NO_FINDING if layout == "nih" else {""}

    def labels_of(row: dict) -> list[str]:
        if labels_col:
            return [x.strip() for x in (row.get(labels_col) or "").split(delimiter) if x.strip().lower() not in none]
        return [c for c in onehot_cols if float(row[c] or 0) == 1.0]

    resolve = _Resolver(csv_path, images_dir, allow_outside_paths)
    missing, repeated, seen = [], [], {}
    for row in rows:
        line, name = row[LINE], row.get(path_col) or ""
        if not name:
            raise DataError(f"{csv_path} line {line}: the {path_col!r} cell is empty; give the image's path or "
                            "delete the row")
        path = resolve(name, line)
        if not path:
            windows = "; a Windows path? write / between folders" if "\\" in name else ""
            missing.append(f"{name} (CSV line {line}{windows})")
            continue
        labels, key = labels_of(row), os.path.normcase(os.path.abspath(path))
        if key in seen:
            _check_repeat(csv_path, name, seen[key], line, labels)
            repeated.append(f"{name} (lines {seen[key][0]} and {line})")
            continue
        seen[key] = (line, labels)
        patient = row[patient_col] if patient_col else patient_of(os.path.basename(name))
        records.add(path, labels, None if (patient or "").lower() in NO_PATIENT else patient,
                    _split_of(csv_path, line, row.get(split_col)) if split_col else None)
        if layout == "nih":
            records.meta["view_position"].append(row.get("View Position"))
    _say_what_was_skipped(records, csv_path, images_dir, len(rows), missing, repeated, resolve.index)
    return records


# what spreadsheets write for "no patient id"
NO_PATIENT = {"", "nan", "none", "null", "n/a", "#n/a", "na", "n.a.", "-", "?", "unknown", "missing"}


def _split_of(csv_path: str, line: int, value: str | None) -> str | None:
    """train / val / test from a CSV's split cell; a value that is none of them is refused (a typo would
    otherwise throw the whole data-provided split away)."""
    if not value:
        return None
    if value.lower() not in SPLIT_NAMES:
        raise DataError(f"{csv_path} line {line}: split {value!r} is not one of {sorted(set(SPLIT_NAMES))}; fix it, "
                        "or remove the split column to have the data split anew")
    return SPLIT_NAMES[value.lower()]


def _check_repeat(csv_path: str, name: str, first: tuple[int, list[str]], line: int, labels: list[str]) -> None:
    if sorted(first[1]) != sorted(labels):
        raise DataError(f"{csv_path}: {name} is listed on line {first[0]} as {first[1]} and on line {line} as "
                        f"{labels}; fix the CSV so each image has one set of labels")


def _say_what_was_skipped(records: Records, csv_path: str, images_dir: str, n_rows: int, missing: list[str],
                          repeated: list[str], index: dict | None) -> None:
    if repeated:
        records.notes.append(f"{len(repeated)} CSV rows list an image again with the same labels, used once: "
                             + "; ".join(repeated[:3]) + (" ..." if len(repeated) > 3 else ""))
    if missing:
        shown = "; ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        records.notes.append(f"{len(missing):,} of {n_rows:,} CSV rows have no image under {images_dir}: {shown}")
        if records.layout == "csv":  # a generic CSV names files the user meant to have: list every one
            records.dropped += [Dropped(m, f"listed in {os.path.basename(csv_path)} but not found") for m in missing]
    if index is not None:
        listed = {os.path.normpath(p) for p in records.paths}
        unlisted = len({os.path.normpath(p) for paths in index.values() for p in paths} - listed)
        if unlisted:
            records.notes.append(f"{unlisted:,} images under {images_dir} are not in the CSV and were ignored")


def _check_inside(name: str, images_dir: str, csv_path: str, line: int) -> None:
    """Refuse a CSV path that is absolute or leaves the images folder (`../../etc/passwd`)."""
    inside = not os.path.isabs(name) and os.path.normpath(name).split(os.sep)[0] != os.pardir
    if not inside:
        raise DataError(f"{csv_path} line {line}: path {name!r} is outside the images folder {images_dir}; "
                        "use paths relative to it, or pass --allow-outside-paths if you mean it")


BINARY = {"0", "1", "0.0", "1.0"}


def _onehot_columns(csv_path: str, header: list[str], rows: list[dict], used: set) -> list[str]:
    """The 0/1 label columns. A column that is 0/1 on most rows but blank, -1 (CheXpert's "uncertain") or
    anything else on some is refused, naming the row: read as "not a label column" it would vanish as a class."""
    columns = []
    for column in (c for c in header if c not in used):
        values = [(row.get(column) or "").strip() for row in rows]
        binary = sum(v in BINARY for v in values)
        if binary == len(values):
            columns.append(column)
        elif binary >= len(values) / 2:
            line, value = next((row[LINE], v) for row, v in zip(rows, values) if v not in BINARY)
            raise DataError(f"{csv_path} line {line}: column {column!r} holds 0/1 labels but says {value!r} here; "
                            "write 0 or 1 in every row (map uncertain labels such as -1 yourself)")
    return columns
