"""Where a heat map looks: the pointing game against lesion masks, the border (shortcut) check, and each
class's mean map. Pure numpy on maps of any origin."""

from __future__ import annotations

import numpy as np


def pointing_game(cams: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: whether the heat map's peak falls inside the lesion mask ("hit"), and the share of the map's
    energy inside it. Images with an empty mask are left out (NaN)."""
    cams, masks = np.asarray(cams, dtype=float), np.asarray(masks, dtype=bool)
    flat = cams.reshape(len(cams), -1)
    peak = flat.argmax(axis=1)
    has_lesion = masks.reshape(len(masks), -1).any(axis=1)
    hit = masks.reshape(len(masks), -1)[np.arange(len(cams)), peak].astype(float)
    total = flat.sum(axis=1)
    inside = (flat * masks.reshape(len(masks), -1)).sum(axis=1)
    energy = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return {"hit": np.where(has_lesion, hit, np.nan), "energy": np.where(has_lesion, energy, np.nan)}


def border_mask(size: tuple[int, int], band: float = 0.125) -> np.ndarray:
    """True on the outer `band` share of each side: where borders, corners and burned-in text sit."""
    mask = np.ones(size, dtype=bool)
    dy, dx = max(1, round(band * size[0])), max(1, round(band * size[1]))
    mask[dy:-dy, dx:-dx] = False
    return mask


def border_check(cams: np.ndarray, explained: list[str], band: float = 0.125) -> dict:
    """The shortcut check: share of heat (and of peaks) in the image border, overall and per explained class,
    beside the border's share of the area (what heat spread evenly would give)."""
    mask = border_mask(cams.shape[1:3], band)
    result = pointing_game(cams, np.broadcast_to(mask, cams.shape))
    names = np.asarray(explained)
    per_class = {str(c): {"images": int((names == c).sum()), "energy_share": float(result["energy"][names == c].mean()),
                          "peak_share": float(result["hit"][names == c].mean())} for c in sorted(set(explained))}
    return {"band": band, "area_share": float(mask.mean()), "energy_share": float(result["energy"].mean()),
            "peak_share": float(result["hit"].mean()), "per_class": per_class}


def mean_maps(cams: np.ndarray, explained: list[str]) -> dict[str, np.ndarray]:
    """Per explained class, the average of its heat maps, each first scaled to sum 1: where a class looks on
    most images. A sharp spot off the lungs, the same for every image, is a shortcut's signature."""
    names = np.asarray(explained)
    totals = np.asarray(cams, dtype=np.float64).sum(axis=(1, 2), keepdims=True)
    shares = np.divide(cams, totals, out=np.zeros(np.shape(cams)), where=totals > 0)
    return {str(c): shares[names == c].mean(axis=0) for c in sorted(set(explained))}


def save_mean_maps(cams: np.ndarray, explained: list[str], path: str) -> dict[str, np.ndarray]:
    """`mean_maps` drawn as one figure at `path`, each panel titled with its class's image count."""
    from cxr_keras.evaluate import plots  # matplotlib only when a figure is drawn

    maps = mean_maps(cams, explained)
    plots.plot_mean_maps(maps, {c: list(explained).count(c) for c in maps}, path)
    return maps


