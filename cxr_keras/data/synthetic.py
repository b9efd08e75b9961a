"""Seeded chest-radiograph phantoms with lesion masks: the main job's default data and the tests' fixtures.

Each phantom has a body outline, two lung fields, mediastinum and heart, spine, ribs, noise and blur, with
varied size, position, rotation and exposure. Findings are drawn with pixel masks:
- Pneumonia (focal opacity): one or two irregular blobs inside a lung, of varied size and contrast, some faint.
- Effusion: fluid filling a lung base, with a meniscus.
- Cardiomegaly: a heart wider than half the chest.
Every patient has one to three images (same anatomy and findings, new pose and exposure), named
`patient<ID>_<k>.png` so that splits group them.
"""

from __future__ import annotations

import csv
import os

import cv2
import numpy as np

from cxr_keras.io_utils import atomic_writer

FINDINGS = ("Pneumonia", "Effusion", "Cardiomegaly")
TASK_CLASSES = {
    "binary": ["NORMAL", "PNEUMONIA"],
    "multiclass": ["Normal", "Pneumonia", "Effusion", "Cardiomegaly"],
    "multilabel": list(FINDINGS),
}


def _ellipse_mask(size: int, center, axes, angle: float = 0.0) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (int(center[0]), int(center[1])), (max(1, int(axes[0])), max(1, int(axes[1]))),
                angle, 0, 360, 1, -1)
    return mask.astype(bool)


def _anatomy(rng: np.random.Generator, size: int) -> dict:
    """Per-patient anatomy: proportions that stay the same across that patient's images."""
    s = size
    return dict(
        body=(s * rng.uniform(0.40, 0.46), s * rng.uniform(0.46, 0.52)),
        lung=(s * rng.uniform(0.13, 0.16), s * rng.uniform(0.26, 0.31)),
        lung_dx=s * rng.uniform(0.16, 0.19),
        heart=(s * rng.uniform(0.10, 0.12), s * rng.uniform(0.09, 0.11)),
        ribs=int(rng.integers(7, 10)),
    )


def phantom(rng: np.random.Generator, size: int, findings: set[str], anatomy: dict | None = None,
            lesion_rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One (size, size) uint8 radiograph and a boolean mask per finding drawn."""
    a = anatomy or _anatomy(rng, size)
    lesion_rng = lesion_rng or rng
    s = size
    c = np.array([s / 2, s * 0.52])
    img = np.full((s, s), 0.06, np.float32)
    img[_ellipse_mask(s, c + (0, s * 0.04), a["body"])] = 0.55
    lungs = [_ellipse_mask(s, c + (sign * a["lung_dx"], -s * 0.04), a["lung"], sign * 4) for sign in (-1, 1)]
    for lung in lungs:
        img[lung] = 0.18
    img[:, int(s * 0.47) : int(s * 0.53)] += 0.18 * (img[:, int(s * 0.47) : int(s * 0.53)] > 0.1)  # spine
    heart_axes = np.array(a["heart"]) * (1.55 if "Cardiomegaly" in findings else 1.0)
    heart = _ellipse_mask(s, c + (s * 0.05, s * 0.14), heart_axes, 15)
    img[heart] = 0.62
    lungs = [lung & ~heart for lung in lungs]  # findings below stay in the visible lung field
    ribs = np.zeros((s, s), np.float32)
    for k in range(a["ribs"]):
        y = c[1] - a["lung"][1] * 0.9 + k * a["lung"][1] * 1.8 / a["ribs"]
        for sign in (-1, 1):
            cv2.ellipse(ribs, (int(c[0] + sign * a["lung_dx"] * 0.6), int(y)),
                        (int(a["lung"][0] * 1.6), int(s * 0.05)), 0, 180 if sign > 0 else 0,
                        270 if sign > 0 else 90, 0.13, max(1, s // 90))
    img += cv2.GaussianBlur(ribs, (0, 0), max(0.6, s / 200))
    masks: dict[str, np.ndarray] = {}
    if "Pneumonia" in findings:
        masks["Pneumonia"] = _opacity(img, lungs, lesion_rng, s)
    if "Effusion" in findings:
        masks["Effusion"] = _effusion(img, lungs, lesion_rng, s, c, a)
    if "Cardiomegaly" in findings:
        masks["Cardiomegaly"] = heart
    return _acquire(img, masks, rng, s)


def _opacity(img: np.ndarray, lungs: list[np.ndarray], rng: np.random.Generator, s: int) -> np.ndarray:
    """Irregular soft blobs inside a lung; contrast from faint to dense."""
    mask = np.zeros((s, s), bool)
    for _ in range(int(rng.integers(1, 3))):
        lung = lungs[int(rng.integers(2))]
        ys, xs = np.nonzero(lung)
        i = int(rng.integers(len(ys)))
        radius = s * rng.uniform(0.05, 0.11)
        yy, xx = np.mgrid[0:s, 0:s]
        blob = np.exp(-(((xx - xs[i]) ** 2 + (yy - ys[i]) ** 2) / (2 * radius**2)))
        texture = cv2.GaussianBlur(rng.random((s, s)).astype(np.float32), (0, 0), max(1.0, s / 40))
        texture = (texture - texture.min()) / (np.ptp(texture) + 1e-6)
        lesion = np.clip(blob * (0.6 + 0.8 * texture), 0, 1) * lung
        img += rng.uniform(0.10, 0.30) * lesion
        mask |= lesion > 0.35
    return mask


def _effusion(img, lungs, rng, s, c, a) -> np.ndarray:
    """Fluid at one or both lung bases, its surface curving up at the edge (meniscus)."""
    mask = np.zeros((s, s), bool)
    sides = [int(rng.integers(2))] if rng.random() < 0.7 else [0, 1]
    yy, xx = np.mgrid[0:s, 0:s]
    for side in sides:
        bottom = c[1] - s * 0.04 + a["lung"][1]
        level = bottom - a["lung"][1] * rng.uniform(0.25, 0.5)
        lateral = np.abs(xx - c[0]) / (a["lung_dx"] + a["lung"][0])
        fluid = lungs[side] & (yy > level - s * 0.08 * lateral**2)
        img[fluid] += rng.uniform(0.25, 0.4)
        mask |= fluid
    return mask


def _acquire(img, masks, rng, s) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pose (rotation, scale, shift), exposure (gamma, gain), blur and noise of one acquisition."""
    matrix = cv2.getRotationMatrix2D((s / 2, s / 2), rng.uniform(-5, 5), rng.uniform(0.94, 1.06))
    matrix[:, 2] += rng.uniform(-0.04, 0.04, 2) * s
    warp = dict(dsize=(s, s), borderMode=cv2.BORDER_CONSTANT, borderValue=0.06)
    img = cv2.warpAffine(img, matrix, flags=cv2.INTER_LINEAR, **warp)
    masks = {k: cv2.warpAffine(m.astype(np.uint8), matrix, flags=cv2.INTER_NEAREST, dsize=(s, s)) > 0
             for k, m in masks.items()}
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2) * s / 128)
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25) * rng.uniform(0.85, 1.1)
    img += rng.normal(0, rng.uniform(0.01, 0.03), img.shape).astype(np.float32)
    return np.clip(img * 255, 0, 255).astype(np.uint8), masks


def _findings_for(task: str, label: str | list[str]) -> set[str]:
    if task == "multilabel":
        return set(label)
    return set() if label.lower() == "normal" else {"Pneumonia" if label == "PNEUMONIA" else label}


def write_dataset(out: str, task: str = "binary", n_patients: int = 120, size: int = 128, seed: int = 0) -> str:
    """Write a synthetic dataset in the layout its task uses and return `out`.

    binary and multiclass: `out/<class>/images/*.png` with lesion masks in `out/<class>/masks/<finding>/`
    (the COVID-19 Radiography Database layout). multilabel: `out/images/*.png`, `out/masks/<finding>/` and
    `out/labels.csv` (path, patient, '|'-separated labels).
    """
    if task not in TASK_CLASSES:
        raise ValueError(f"task must be one of {list(TASK_CLASSES)}, got {task!r}")
    rng = np.random.default_rng(seed)
    classes = TASK_CLASSES[task]
    rows = []
    for patient in range(n_patients):
        if task == "multilabel":
            label = [f for f in FINDINGS if rng.random() < 0.35]
            folder = out
        else:
            label = classes[patient % len(classes)]
            folder = os.path.join(out, label)
        anatomy = _anatomy(rng, size)
        lesion_seed = int(rng.integers(2**31))
        for k in range(int(rng.integers(1, 4))):
            name = f"patient{patient:05d}_{k}.png"
            image, masks = phantom(rng, size, _findings_for(task, label), anatomy,
                                   np.random.default_rng(lesion_seed))
            _write_png(os.path.join(folder, "images", name), image)
            for finding, mask in masks.items():
                _write_png(os.path.join(folder, "masks", finding, name), mask.astype(np.uint8) * 255)
            rows.append((os.path.join("images", name), f"patient{patient:05d}", "|".join(label)))
    if task == "multilabel":
        with atomic_writer(os.path.join(out, "labels.csv"), newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "patient", "labels"])
            writer.writerows(rows)
    return out


def _write_png(path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_writer(path, "wb") as f:
        f.write(data.tobytes())
