"""Cohorts: groups of images from one source (a site, a scanner, a naming batch) that a user can see in the data,
for the leave-one-cohort-out proxy of external validation and for per-cohort metrics.

A cohort comes from a regex on the file name (its first group, or the whole match) or from a per-image column
of the labels CSV (e.g. NIH 'View Position'). Kermany's training folder has two normal cohorts by naming,
`NORMAL2-IM-...` and `IM-...`: `--cohort-pattern '^(NORMAL2|IM|person)'`.
"""

from __future__ import annotations

import os
import re

import numpy as np

from cxr_keras.data.table import ImageTable

UNMATCHED = "other"


def cohort_names(table: ImageTable, pattern: str | None = None, column: str | None = None,
                 require_match: bool = False) -> list[str] | None:
    """The cohort of every row (None when neither a pattern nor a column is given); unmatched rows: 'other'.
    `require_match`: a pattern that matches no file name at all is an error (surely a typo)."""
    if pattern and column:
        raise ValueError("give --cohort-pattern or --cohort-column, not both")
    if column:
        if column not in table.meta:
            raise ValueError(f"--cohort-column {column!r} is not a per-image column of this data (it has: "
                             f"{sorted(table.meta) or 'none'})")
        return [UNMATCHED if v in (None, "") else str(v) for v in table.meta[column]]
    if not pattern:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--cohort-pattern {pattern!r} is not a valid regular expression ({exc})") from None
    out, matched = [], 0
    for path in table.paths:
        match = regex.search(os.path.basename(path))
        matched += match is not None
        name = (match.group(1) if regex.groups else match.group(0)) if match else None
        out.append(name or UNMATCHED)  # an optional group that took no part: unmatched too
    if require_match and table.paths and not matched:
        raise ValueError(f"--cohort-pattern {pattern!r} matches none of the {len(table)} file names (e.g. "
                         f"{os.path.basename(table.paths[0])!r}); it is searched in each file's name")
    return out


def held_out_mask(table: ImageTable, held: list[str], pattern: str | None, column: str | None) -> np.ndarray:
    """Rows whose cohort is one of `held`; an unknown name is an error that lists the cohorts there are."""
    names = cohort_names(table, pattern, column)
    if names is None:
        raise ValueError("--hold-out-cohort needs --cohort-pattern or --cohort-column to say what a cohort is")
    counts = {c: names.count(c) for c in sorted(set(names))}
    unknown = sorted(set(held) - set(counts))
    if unknown:
        raise ValueError(f"--hold-out-cohort {unknown}: no such cohort; the data has {counts}")
    mask = np.isin(names, held)
    if mask.all():
        raise ValueError(f"--hold-out-cohort {held} holds out every image; nothing is left to train on")
    return mask
