"""Lesion masks that come with a dataset: the synthetic data's mask folders and NIH's bounding-box CSV."""

from __future__ import annotations

import numpy as np


def lesion_mask(image_path: str, size: tuple[int, int]) -> np.ndarray | None:
    """The union of the synthetic data's lesion masks for an image (`<class>/masks/<finding>/<name>`), resized
    to `size`; None when the image has none."""
    import glob
    import os

    from PIL import Image

    folder, name = os.path.split(image_path)
    pattern = os.path.join(os.path.dirname(folder), "masks", "*", name)
    masks = [np.asarray(Image.open(p).convert("L").resize(size[::-1], Image.NEAREST)) > 127
             for p in sorted(glob.glob(pattern))]
    return np.any(masks, axis=0) if masks else None


def box_masks(paths: list[str], boxes_csv: str, size: tuple[int, int], finding: str | None = None
              ) -> list[np.ndarray | None]:
    """Masks from NIH `BBox_List_2017.csv` boxes (x, y, w, h on the original 1024 x 1024 image), matched by file
    name and drawn at `size` (the images may be stored smaller: the box is scaled as a share of the side)."""
    import csv
    import os

    from cxr_keras.data.csv_source import open_text as _open_text

    boxes: dict[str, list[tuple[float, ...]]] = {}
    with _open_text(boxes_csv) as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            if len(row) >= 6 and (finding is None or row[1] == finding):
                boxes.setdefault(row[0], []).append(tuple(float(v) / 1024 for v in row[2:6]))
    masks: list[np.ndarray | None] = []
    height, width = size
    for path in paths:
        found = boxes.get(os.path.basename(path))
        if not found:
            masks.append(None)
            continue
        mask = np.zeros(size, dtype=bool)
        for x, y, w, h in found:
            rows = slice(int(y * height), int(np.ceil((y + h) * height)))
            mask[rows, int(x * width) : int(np.ceil((x + w) * width))] = True
        masks.append(mask)
    return masks


