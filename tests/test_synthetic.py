import os

import cv2
import numpy as np
import pytest

from cxr_keras.data.sources import load_dataset
from cxr_keras.data.synthetic import FINDINGS, phantom, write_dataset


def test_phantom_is_seeded_and_draws_masks():
    a, masks = phantom(np.random.default_rng(1), 96, {"Pneumonia", "Effusion", "Cardiomegaly"})
    b, _ = phantom(np.random.default_rng(1), 96, {"Pneumonia", "Effusion", "Cardiomegaly"})
    np.testing.assert_array_equal(a, b)
    assert a.shape == (96, 96) and a.dtype == np.uint8
    assert set(masks) == set(FINDINGS) and all(m.any() for m in masks.values())
    normal, none = phantom(np.random.default_rng(1), 96, set())
    assert none == {}
    lesion = masks["Pneumonia"] & ~masks["Cardiomegaly"]
    assert a[lesion].mean() > normal[lesion].mean()  # the opacity is denser than the lung it sits in


@pytest.mark.parametrize("task, layout", [("binary", "covid-radiography"), ("multiclass", "covid-radiography"),
                                          ("multilabel", "csv")])
def test_written_datasets_load_with_patients_and_masks(tmp_path, task, layout):
    root = write_dataset(str(tmp_path / task), task, n_patients=12, size=48, seed=0)
    table = load_dataset(root)
    assert table.layout == layout and table.task == task and len(table.dropped) == 0
    assert all(p is not None for p in table.patients) and len(set(table.patients)) == 12
    lesion_images = [p for p, row in zip(table.paths, table.labels)
                     if row[table.classes.index("Pneumonia" if task != "binary" else "PNEUMONIA")]]
    for path in lesion_images:
        mask = os.path.join(os.path.dirname(os.path.dirname(path)), "masks", "Pneumonia", os.path.basename(path))
        assert cv2.imread(mask, cv2.IMREAD_GRAYSCALE).max() == 255


def test_same_seed_same_files(tmp_path):
    a = write_dataset(str(tmp_path / "a"), "binary", n_patients=4, size=32, seed=9)
    b = write_dataset(str(tmp_path / "b"), "binary", n_patients=4, size=32, seed=9)
    names = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert names == sorted(os.path.relpath(os.path.join(d, f), b) for d, _, fs in os.walk(b) for f in fs)
    for name in names:
        assert open(os.path.join(a, name), "rb").read() == open(os.path.join(b, name), "rb").read()
