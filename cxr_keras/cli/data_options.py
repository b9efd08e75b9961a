"""The options that say where a dataset's images and labels are and how to read them, declared once for every
parser: the commands that read data (`cxr data-report`, `cxr evaluate`) and training runs (`cxr train` and the
experiments, where a left-out option keeps the experiment's config)."""

from __future__ import annotations

import argparse

from cxr_keras.choices import LAYOUTS, TASKS
from cxr_keras.config import DEFAULT_MAX_PIXELS

# The DataConfig fields these options set, by the same names.
SOURCE_KEYS = ("layout", "csv", "images_dir", "classes", "task", "patient_pattern", "path_column", "labels_column",
               "delimiter", "max_pixels", "allow_outside_paths", "keep_label_case", "copy_conflicts")


def add_source_arguments(group: argparse._ArgumentGroup, keep_config: bool = False) -> None:
    """--layout ... --allow-outside-paths on `group`. With `keep_config`, every default is None: a left-out
    option leaves the run's config as it is."""

    def default(value):
        return None if keep_config else value

    group.add_argument("--layout", default=default("auto"), choices=["auto", *LAYOUTS],
                       help="dataset layout (default: recognise it and say which)")
    group.add_argument("--csv", help="label CSV: NIH Data_Entry_2017*.csv or a generic path/labels CSV")
    group.add_argument("--images-dir", help="where a CSV's images are, searched recursively (default: DATA_DIR)")
    group.add_argument("--classes", nargs="+", help="the class list, in order; any other label is an error")
    group.add_argument("--task", choices=TASKS, help="override the inferred task")
    group.add_argument("--patient-pattern", help="regex whose first group is the patient id in a file name")
    group.add_argument("--path-column", help="CSV column holding image paths")
    group.add_argument("--labels-column", help="CSV column holding delimited labels")
    group.add_argument("--delimiter", default=default("|"), help="separator inside the labels column (default '|')")
    group.add_argument("--max-pixels", type=int, default=default(DEFAULT_MAX_PIXELS),
                       help=f"refuse images above this many pixels (default {DEFAULT_MAX_PIXELS:,})")
    group.add_argument("--allow-outside-paths", action="store_true", default=default(False),
                       help="accept CSV paths that are absolute or leave the images folder")
    group.add_argument("--keep-label-case", action="store_true", default=default(False),
                       help="keep labels that differ only in case or spacing (NORMAL, normal) as separate classes "
                            "(default: fold them into one and say so)")
    group.add_argument("--copy-conflicts", choices=["refuse", "drop"], default=default("refuse"),
                       help="byte-identical files under different labels: refuse the data (default) or drop every "
                            "such copy, listed in the dropped files")
