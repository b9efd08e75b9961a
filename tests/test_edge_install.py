"""The edge distribution (edge/setup.py) installed alone in a fresh virtual environment: no TensorFlow, no Keras,
and the same predictions as the full install, the same refusals."""

import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import train_baseline, write_blob_dataset, write_dicom

from cxr_keras.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
           "Max retries exceeded", "ConnectionError")


def _run(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def edge_env(tmp_path_factory):
    """A fresh venv holding only `pip install edge/` (from a copy of the sources, so the tree stays clean)."""
    root = tmp_path_factory.mktemp("edge")
    ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    for name in ("cxr_keras", "edge"):
        shutil.copytree(os.path.join(REPO, name), root / "src" / name, ignore=ignore)
    result = _run([sys.executable, "-m", "venv", root / "venv"], root)
    assert result.returncode == 0, result.stderr[-2000:]
    python = root / "venv" / "bin" / "python"
    install = _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", root / "src" / "edge"], root)
    if install.returncode != 0 and any(word in install.stderr for word in OFFLINE):
        pytest.skip("the package index is unreachable: the edge install cannot be tested offline")
    assert install.returncode == 0, install.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = write_blob_dataset(str(root / "data"), n_per_class=20, size=32, seed=3)
    run_dir = train_baseline(data, str(root / "runs"), epochs=2)
    assert main(["evaluate", "--run", run_dir, "--resamples", "20"]) == 0  # fits the out-of-distribution score
    out = str(root / "saved")
    assert main(["export", "--model", os.path.join(run_dir, "best.keras"), "--out", out, "--formats",
                 "tflite-int8", "--calibration-data", data, "--calibration-count", "20"]) == 0
    return data, out, run_dir


def _images(data, folder):
    """A PNG, the same image as JPEG, a DICOM, a broken file and an image above a 1,000-pixel limit."""
    from PIL import Image

    folder.mkdir()
    png = os.path.join(data, "PNEUMONIA", sorted(os.listdir(os.path.join(data, "PNEUMONIA")))[0])
    shutil.copy(png, folder / "a.png")
    Image.open(png).convert("L").save(folder / "b.jpg", quality=90)
    write_dicom(str(folder / "c.dcm"), (np.arange(32 * 32).reshape(32, 32) % 700 * 5).astype(np.uint16))
    (folder / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "e.png")
    return str(folder)


def _rows(path):
    return {os.path.basename(r["path"]): r for r in csv.DictReader(open(path))}


def test_the_edge_environment_has_no_tensorflow_and_predicts_as_the_full_install(edge_env, exported, tmp_path):
    data, out, run_dir = exported
    python = edge_env / "venv" / "bin" / "python"
    probe = _run([python, "-c", "import importlib.util as u, cxr_keras; print(cxr_keras.__file__); print(["
                  "m for m in ('tensorflow', 'keras', 'keras_cv', 'sklearn', 'cv2') if u.find_spec(m)])"], tmp_path)
    assert probe.returncode == 0, probe.stderr[-2000:]
    where, present = probe.stdout.split()
    assert where.startswith(str(edge_env / "venv")) and present == "[]"

    images = _images(data, tmp_path / "images")
    model = os.path.join(out, "model_int8.tflite")
    edge = _run([edge_env / "venv" / "bin" / "cxr-predict", "--model", model, "--images", images,
                 "--out", tmp_path / "edge.csv", "--max-pixels", "1100"], tmp_path)
    assert edge.returncode == 0, edge.stderr[-2000:]
    assert main(["predict", "--model", model, "--images", images, "--out", str(tmp_path / "full.csv"),
                 "--max-pixels", "1100"]) == 0
    edge_rows, full_rows = _rows(tmp_path / "edge.csv"), _rows(tmp_path / "full.csv")
    assert list(edge_rows) == ["a.png", "b.jpg", "c.dcm", "d.png", "e.png"]  # in the order given, failures too
    assert "not an image file" in edge_rows["d.png"]["error"]
    assert set(edge_rows) == {"a.png", "b.jpg", "c.dcm", "d.png", "e.png"}
    for name in ("a.png", "b.jpg", "c.dcm"):
        assert edge_rows[name]["error"] == ""
        assert float(edge_rows[name]["p_PNEUMONIA"]) == pytest.approx(float(full_rows[name]["p_PNEUMONIA"]),
                                                                      abs=1e-6)
        assert edge_rows[name]["decision"] == full_rows[name]["decision"]
        assert edge_rows[name]["ood_score"] and float(edge_rows[name]["ood_score"]) == pytest.approx(
            float(full_rows[name]["ood_score"]), rel=1e-6)
        assert edge_rows[name]["flag"] == full_rows[name]["flag"]
    assert edge_rows["d.png"]["error"] and full_rows["d.png"]["error"]
    assert "above the limit of 1,100" in edge_rows["e.png"]["error"]


def test_the_edge_install_refuses_a_tampered_artifact(edge_env, exported, tmp_path):
    data, out, run_dir = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "model_int8.tflite", "r+b") as f:  # one byte changed, the card untouched
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    edge = _run([edge_env / "venv" / "bin" / "cxr-predict", "--model", copy / "model_int8.tflite", "--images",
                 data, "--out", tmp_path / "p.csv"], tmp_path)
    assert edge.returncode == 2 and "does not match model_card.json" in edge.stderr
    assert "Traceback" not in edge.stderr and not (tmp_path / "p.csv").exists()


def test_the_edge_install_says_it_runs_tflite_only(edge_env, exported, tmp_path):
    data, _, run_dir = exported
    edge = _run([edge_env / "venv" / "bin" / "cxr-predict", "--model", os.path.join(run_dir, "best.keras"),
                 "--images", data, "--out", tmp_path / "p.csv"], tmp_path)
    assert edge.returncode == 2 and "needs TensorFlow, which this install does not have" in edge.stderr
    assert "Traceback" not in edge.stderr and edge.stderr.count("\n") == 1
