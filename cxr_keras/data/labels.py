"""Label spellings: `NORMAL`, `Normal` and `normal ` are one class, not three.

A hand-made CSV or a copied folder tree often spells one label several ways (`'NORMAL'` in quotes too); read
literally, each spelling becomes a class of its own and a 2-class problem trains as a 6-class one without a word.
Labels that differ only in case, spacing or surrounding quotes are folded to one spelling (the class list's when
one is given, else the most frequent), and the fold is said in one line. `keep_case`, or a class list that itself
spells one label two ways, keeps them apart, as written.
"""

from __future__ import annotations

from collections import Counter


def label_key(label: str) -> str:
    """What two spellings of one label share: case, runs of spaces and surrounding quotes ignored."""
    return " ".join(label.strip().strip("'\"").split()).casefold()


def fold_label_case(labels: list[list[str]], classes: list[str] | None = None,
                    keep_case: bool = False) -> tuple[list[list[str]], str | None]:
    """(labels with one spelling per label, a note naming every fold or None)."""
    labels = [[" ".join(name.split()) for name in row] for row in labels]
    given = [label_key(c) for c in classes or []]
    if keep_case or len(set(given)) < len(given):  # a class list that spells one label two ways means it
        return labels, None
    counts = Counter(name for row in labels for name in row)
    spellings: dict[str, list[str]] = {}
    for name, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        spellings.setdefault(label_key(name), []).append(name)
    chosen = {key: names[0] for key, names in spellings.items()}
    chosen.update({label_key(c): c for c in classes or []})
    mapping = {name: chosen[label_key(name)] for name in counts if chosen[label_key(name)] != name}
    if not mapping:
        return labels, None
    folded = [list(dict.fromkeys(mapping.get(name, name) for name in row)) for row in labels]
    said = "; ".join(f"{name!r} ({counts[name]:,}) -> {target!r}" for name, target in sorted(mapping.items()))
    return folded, (f"labels that differ only in case or spacing were folded into one class: {said} "
                    "(pass --keep-label-case to keep them apart)")
