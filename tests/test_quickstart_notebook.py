"""docs/quickstart.ipynb runs end to end (nbclient, a real Jupyter kernel) and is kept without outputs."""

import json
import os
import time

import pytest

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "docs", "quickstart.ipynb")


def test_the_notebook_is_stored_without_outputs():
    cells = json.load(open(NOTEBOOK))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_the_notebook_runs_end_to_end(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is a dev extra")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is a dev extra")
    monkeypatch.setenv("CXR_QUICKSTART_OUT", str(tmp_path))  # outputs outside the repository
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    start = time.monotonic()
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    print(f"quickstart notebook: {time.monotonic() - start:.0f} s")
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # curves, ROC, confusion, Grad-CAM shown inline
    text = "".join(o.get("text", "") for o in outputs)
    assert "test 96 images: ROC-AUC" in text and "ood_score" in text
    runs = [d for d in os.listdir(tmp_path / "runs") if d.startswith("quickstart-")]
    assert len(runs) == 1 and os.path.isfile(tmp_path / "runs" / runs[0] / "report.html")
    assert os.path.isfile(tmp_path / "saved_models" / runs[0] / "model_fp32.tflite")
