"""Copies of one film in a dataset: byte-identical files (same SHA-256) and near-identical ones (re-encoded,
resized: a perceptual hash a few bits apart).

A copy under two labels is a contradiction (refused, or dropped by option); copies under one label stay, but in
one split group, so a film never sits in training and in test at once.

Why a hand-written hash: the usual 64-bit difference hash cannot tell chest films apart (on the 5,216 Kermany
training films, half have another film within 1 bit), and no well-kept library ships a larger one without
pulling in a stack of its own. A 16 x 16 difference hash (256 bits) separates them: there, pixel-identical copies
are 0 bits apart and the closest two different films 9 bits apart (measured; docs/data.md).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cxr_keras.data.records import DataError
from cxr_keras.data.table import Dropped, ImageTable

HASH_SIDE = 16  # a 16 x 16 difference hash: 256 bits
NEAR_BITS = 5  # at most this many bits apart is a near-identical copy
COPY_CONFLICTS = ("refuse", "drop")
MIN_BITS = 16  # a hash with fewer set (or unset) bits than this is of a nearly flat image


def perceptual_hash(image: np.ndarray) -> str:
    """The 256-bit difference hash of a (H, W) uint8 image, as 64 hex digits: whether each pixel of a
    17 x 16 thumbnail is brighter than its left neighbour."""
    thumb = np.asarray(Image.fromarray(image).resize((HASH_SIDE + 1, HASH_SIDE), Image.BILINEAR), dtype=np.int16)
    return np.packbits(thumb[:, 1:] > thumb[:, :-1]).tobytes().hex()


@dataclass(frozen=True)
class CopyGroup:
    """Rows of a table that hold the same film; `identical` when every file has the same bytes."""

    rows: tuple[int, ...]
    identical: bool


def find_copies(sha256: list[str], phash: list[str], near_bits: int = NEAR_BITS) -> list[CopyGroup]:
    """Groups of two or more rows whose files are byte-identical or whose hashes are within `near_bits`."""
    parent = list(range(len(sha256)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        parent[root(i)] = root(j)

    by_sha: dict[str, int] = {}
    for i, digest in enumerate(sha256):
        join(i, by_sha.setdefault(digest, i))
    for i, j in _near_pairs(phash, near_bits):
        join(i, j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(sha256)):
        groups[root(i)].append(i)
    return [CopyGroup(tuple(rows), len({sha256[r] for r in rows}) == 1)
            for rows in sorted(groups.values()) if len(rows) > 1]


def _near_pairs(phash: list[str], near_bits: int) -> list[tuple[int, int]]:
    """Pairs of rows whose hashes differ in at most `near_bits` bits, found through exact matches on chunks
    (any such pair shares one of near_bits + 1 chunks), so the cost grows with the data, not its square."""
    if len(phash) < 2:
        return []
    bits = np.unpackbits(np.frombuffer(bytes.fromhex("".join(phash)), dtype=np.uint8).reshape(len(phash), -1),
                         axis=1)
    # a flat or nearly flat image (blank, saturated, 1 x 1) has almost no gradient to compare: its hash says
    # nothing about which film it is, so it matches others only byte for byte
    informative = np.flatnonzero(np.minimum(bits.sum(axis=1), bits.shape[1] - bits.sum(axis=1)) >= MIN_BITS)
    pairs = set()
    for chunk in np.array_split(np.arange(bits.shape[1]), near_bits + 1):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i, key in zip(informative, np.packbits(bits[informative][:, chunk], axis=1)):
            buckets[key.tobytes()].append(int(i))
        for rows in buckets.values():
            for a, i in enumerate(rows):
                for j in rows[a + 1 :]:
                    if (i, j) not in pairs and np.count_nonzero(bits[i] != bits[j]) <= near_bits:
                        pairs.add((i, j))
    return sorted(pairs)


def apply_copy_policy(table: ImageTable, fingerprints: dict, conflicts: str = "refuse") -> ImageTable:
    """The table with its copies dealt with: byte-identical files under different labels refused (a DataError
    naming two of them) or, with `conflicts="drop"`, every such file dropped; the copy groups recorded in
    `meta["copy_group"]` (one split group each, see `ImageTable.group_ids`) and said in the notes.

    `fingerprints`: path -> `verify.Fingerprint` of every row."""
    if conflicts not in COPY_CONFLICTS:
        raise DataError(f"--copy-conflicts must be one of {COPY_CONFLICTS}, got {conflicts!r}")
    sha = [fingerprints[p].sha256 for p in table.paths]
    groups = find_copies(sha, [fingerprints[p].phash for p in table.paths])
    contradicted = _contradictions(table, sha, groups)
    if contradicted and conflicts == "refuse":
        first = contradicted[0]
        other = next(r for r in first if _label_text(table, r) != _label_text(table, first[0]))
        shown = " and ".join(f"{table.paths[r]} ({_label_text(table, r)})" for r in (first[0], other))
        raise DataError(f"{shown} are the same file (byte-identical) under different labels ({len(contradicted)} "
                        "such sets of copies). Fix the labels or remove the wrong copy, or pass --copy-conflicts "
                        "drop to leave every such copy out")
    copy_group = [None] * len(table)
    for k, group in enumerate(groups):
        for r in group.rows:
            copy_group[r] = f"copy{k + 1}"
    table = dataclasses.replace(table, meta={**table.meta, "copy_group": copy_group}, notes=list(table.notes))
    if groups:
        table.notes.append(f"{sum(len(g.rows) for g in groups)} images in {len(groups)} groups are copies of one "
                           "another (byte-identical or near-identical): each group stays in one split "
                           "(cxr data-report lists them)")
    mixed = [g for g in groups if len({_label_text(table, r) for r in g.rows}) > 1]
    if mixed and not contradicted:
        r0 = mixed[0].rows[0]
        r1 = next(r for r in mixed[0].rows if _label_text(table, r) != _label_text(table, r0))
        table.notes.append(f"WARNING: {len(mixed)} groups of near-identical images carry different labels (e.g. "
                           f"{table.paths[r0]} as {_label_text(table, r0)}, {table.paths[r1]} as "
                           f"{_label_text(table, r1)}): check their labels")
    return _drop_rows(table, contradicted) if contradicted else table


def _contradictions(table: ImageTable, sha: list[str], groups: list[CopyGroup]) -> list[tuple[int, ...]]:
    """Sets of rows holding byte-identical files whose labels differ."""
    out = []
    for group in groups:
        by_sha: dict[str, list[int]] = defaultdict(list)
        for r in group.rows:
            by_sha[sha[r]].append(r)
        out += [tuple(rows) for rows in by_sha.values() if len({_label_text(table, r) for r in rows}) > 1]
    return out


def _drop_rows(table: ImageTable, contradicted: list[tuple[int, ...]]) -> ImageTable:
    rows = {r: rs for rs in contradicted for r in rs}
    dropped = [Dropped(table.paths[r], "byte-identical copy of " + ", ".join(
        f"{table.paths[o]} ({_label_text(table, o)})" for o in rows[r] if o != r)
        + f" under another label; this one says {_label_text(table, r)} (--copy-conflicts drop)")
        for r in sorted(rows)]
    kept = table.subset([r not in rows for r in range(len(table))])
    kept.dropped = [*table.dropped, *dropped]
    kept.notes.append(f"{len(dropped)} byte-identical files under different labels dropped (--copy-conflicts drop)")
    return kept


def _label_text(table: ImageTable, row: int) -> str:
    names = [c for c, v in zip(table.classes, table.labels[row]) if v]
    return "|".join(names) or "no finding"


def copies_across_splits(table: ImageTable) -> list[list[int]]:
    """Copy groups (rows) whose members sit in more than one split."""
    groups: dict[str, list[int]] = defaultdict(list)
    for row, name in enumerate(table.meta.get("copy_group") or []):
        if name:
            groups[name].append(row)
    return [rows for rows in groups.values() if len({table.splits[r] for r in rows}) > 1]
