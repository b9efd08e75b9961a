"""A DICOM beside JPEGs goes through every command that reads images inside tf.data (issue: a valid
MONOCHROME1 DICOM crashed train, evaluate and gradcam while verification accepted it)."""

import csv
import json
import os

import numpy as np
import pytest
from helpers import train_baseline, write_blob_dataset, write_dicom

from cxr_keras.cli import main
from cxr_keras.data.pipeline import make_dataset
from cxr_keras.data.sources import load_dataset


def _with_dicoms(root):
    data = write_blob_dataset(str(root / "data"), n_per_class=12, size=32, seed=5)
    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):  # one per class, so whichever split it lands in holds a DICOM
        raw = rng.integers(0, 4096, (40, 36)).astype(np.uint16)
        write_dicom(os.path.join(data, cls, f"patient9{cls[0]}_0.dcm"), raw, monochrome1=True)
    return data


@pytest.mark.parametrize("cache", ["memory", None])
def test_dicom_decodes_inside_tf_data_like_outside(tmp_path, cache):
    from cxr_keras.data.decode import load_image_numpy

    data = _with_dicoms(tmp_path)
    table = load_dataset(data)
    dicoms = [i for i, p in enumerate(table.paths) if p.endswith(".dcm")]
    assert len(dicoms) == 2 and not table.dropped
    images = next(iter(make_dataset(table.paths, table.targets(), (32, 32), 64, cache=cache)))[0].numpy()
    for i in dicoms:
        np.testing.assert_array_equal(images[i], load_image_numpy(table.paths[i], (32, 32)))


def test_train_evaluate_gradcam_and_predict_read_the_dicom(tmp_path, capsys):
    data = _with_dicoms(tmp_path)
    run_dir = train_baseline(data, str(tmp_path / "runs"), split_ratios=(0.5, 0.25, 0.25), batch_size=8, name="dicom")
    with open(os.path.join(run_dir, "splits.csv")) as f:
        assert sum(row["path"].endswith(".dcm") for row in csv.DictReader(f)) == 2
    assert main(["evaluate", "--run", run_dir]) == 0
    scored = []
    for split in ("val", "test"):
        with open(os.path.join(run_dir, "evaluation", split, "scores.csv")) as f:
            scored += [row["path"] for row in csv.DictReader(f)]
    best = os.path.join(run_dir, "best.keras")
    out = str(tmp_path / "cams")
    assert main(["gradcam", "--model", best, "--images", data, "--out", out]) == 0
    assert json.load(open(os.path.join(out, "gradcam.json")))["n_images"] == 26
    predictions = str(tmp_path / "pred.csv")
    assert main(["predict", "--model", best, "--images", data, "--out", predictions]) == 0
    with open(predictions) as f:
        rows = {os.path.basename(r["path"]): r for r in csv.DictReader(f)}
    assert {"patient9N_0.dcm", "patient9P_0.dcm"} <= set(rows)
    assert sum(p.endswith(".dcm") for p in scored) == sum(
        1 for r in csv.DictReader(open(os.path.join(run_dir, "splits.csv")))
        if r["path"].endswith(".dcm") and r["split"] in ("val", "test"))
