"""How numbers read on a console and in reports: a threshold is three decimals (0.5, not 0.49999996)."""

from __future__ import annotations


def threshold_text(threshold: float | list[float] | None) -> str:
    """A threshold (or one per finding) rounded to 3 decimals, for people; files keep the exact value."""
    if threshold is None:
        return "n/a"
    if isinstance(threshold, (list, tuple)):
        return "per finding " + ", ".join(f"{float(t):.3f}" for t in threshold)
    return f"{float(threshold):.3f}"
