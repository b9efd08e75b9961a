"""`cxr gradcam` end to end: figures, raw maps, contact sheet and the pointing game on synthetic lesion masks."""

import json
import os

import numpy as np

from cxr_keras.cli import main
from cxr_keras.data.synthetic import write_dataset
from cxr_keras.models.factory import build_model
from cxr_keras.models.saving import save_model


def test_gradcam_command_writes_maps_figures_and_pointing_game(tmp_path, capsys):
    data = write_dataset(str(tmp_path / "data"), "binary", n_patients=6, size=48, seed=1)
    model_path = str(tmp_path / "model.keras")
    save_model(build_model("baseline", "binary", ["NORMAL", "PNEUMONIA"], 48), model_path,
               {"task": "binary", "classes": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA"})
    out = str(tmp_path / "cams")
    assert main(["gradcam", "--model", model_path, "--images", data, "--out", out, "--masks",
                 "--method", "gradcam++", "--class-index", "1", "--figures", "2"]) == 0
    summary = json.load(open(os.path.join(out, "gradcam.json")))
    n = summary["n_images"]
    assert n == sum(len(os.listdir(os.path.join(data, c, "images"))) for c in ("NORMAL", "PNEUMONIA"))
    cams = np.load(os.path.join(out, "cams.npy"))
    assert cams.shape == (n, 48, 48) and summary["layer"] == "baseline_block4_relu"
    assert summary["explained"] == ["PNEUMONIA"] * n
    game = summary["pointing_game"]
    assert game["images_with_lesion"] > 0 and 0 <= game["hit_rate"] <= 1 and 0 <= game["energy_inside"] <= 1
    assert len([f for f in os.listdir(out) if f[:4].isdigit()]) == 2
    assert os.path.getsize(os.path.join(out, "contact_sheet.png")) > 0
    assert os.path.getsize(os.path.join(out, "mean_by_class.png")) > 0
    assert "pointing game" in capsys.readouterr().out
