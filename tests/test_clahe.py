"""CLAHE inside the model: the same pixels as OpenCV's, saved and reloaded, exported to TFLite, and a
training run that applies it."""

import json
import os
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
from test_train import blobs, config  # noqa: F401 (blobs: the module's data fixture)

from cxr_keras.models.clahe import CLAHE
from cxr_keras.models.factory import build_model
from cxr_keras.models.saving import load_model
from cxr_keras.train import run_experiment


def radiograph_like(shape, seed):
    """Smooth anatomy-like shading, a bright band and noise: histograms with peaks, so clipping matters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    image = 90 + 60 * np.sin(3 * x + 1.5 * seed) * np.cos(2 * y) + 40 * (np.abs(x - 0.5) < 0.1)
    return np.clip(image + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape, clip, tiles", [
    ((64, 64), 2.0, (8, 8)),     # tiles divide the image
    ((50, 70), 40.0, (8, 8)),    # neither side divisible: the image is reflected to whole tiles
    ((33, 47), 0.5, (3, 5)),     # one side divisible: OpenCV pads it by a whole tile row all the same
    ((128, 96), 3.0, (4, 6)),
    ((8, 12), 2.0, (8, 8)),      # a pad as long as the side: reflected again
])
def test_clahe_gives_opencvs_pixels(shape, clip, tiles):
    images = np.stack([radiograph_like(shape, seed) for seed in range(3)])
    images[2, :, : shape[1] // 2] = 0  # a flat region: one full bin per tile, all of it clipped and spread
    out = CLAHE(clip, tiles)(images[..., None].astype(np.float32)).numpy()[..., 0]
    for image, ours in zip(images, out):
        reference = cv2.createCLAHE(clipLimit=clip, tileGridSize=(tiles[1], tiles[0])).apply(image)
        difference = np.abs(ours - reference.astype(np.float32))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (difference.max(), (difference > 0).mean())
        assert not np.array_equal(reference, image)  # CLAHE changed something: the comparison means something


def test_bad_clahe_settings_are_refused():
    with pytest.raises(ValueError, match="clip limit must be above 0"):
        CLAHE(0)
    with pytest.raises(ValueError, match="needs images of at least"):
        CLAHE(2.0)(np.zeros((1, 4, 4, 1), np.float32))


def test_a_model_with_clahe_saves_reloads_and_exports_to_tflite(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from cxr_keras.ensemble import average_model
    from cxr_keras.export import clahe_layers, convert_tflite, export_savedmodel, model_card
    from cxr_keras.models.saving import save_model

    model = build_model("baseline", "binary", ["NORMAL", "PNEUMONIA"], 32, "none", clahe=2.0)
    assert model.layers[1].name == "cxr_clahe"
    assert len(clahe_layers(average_model([model, model]))) == 2  # found in an ensemble's members too
    images = np.stack([radiograph_like((32, 32), seed) for seed in range(4)])[..., None].astype(np.float32)
    expected = model.predict(images, verbose=0)
    save_model(model, str(tmp_path / "m.keras"), {"task": "binary", "classes": ["NORMAL", "PNEUMONIA"]})
    reloaded = load_model(str(tmp_path / "m.keras"))[0]
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-6)
    # plain Keras in a fresh process, as `cxr predict` and users load it: importing cxr_keras.models registers it
    opened = subprocess.run([sys.executable, "-c", "import keras, cxr_keras.models, sys; "
                             "print(keras.saving.load_model(sys.argv[1]).layers[1].name)", str(tmp_path / "m.keras")],
                            capture_output=True, text=True, timeout=120)
    assert opened.stdout.strip().endswith("cxr_clahe"), opened.stderr[-2000:]

    card = model_card(model, {"task": "binary"}, {}, str(tmp_path), None, "float")
    assert "CLAHE with clip limit 2 on 8 x 8 tiles" in card["input"]["preprocessing"]
    interpreter = Interpreter(model_content=convert_tflite(export_savedmodel(model, str(tmp_path / "sm")), "fp32"))
    interpreter.allocate_tensors()
    given, taken = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    for image, want in zip(images, expected):
        interpreter.set_tensor(given, image[None])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(taken)[0], want, atol=1e-5)


def test_a_run_with_clahe_normalises_the_equalised_pixels(blobs, tmp_path):  # noqa: F811
    """The from-scratch input standardisation is fitted to what the backbone sees: CLAHE's output."""
    cfg = config(blobs, tmp_path, size=32)
    cfg.model.clahe = 2.0
    cfg.data.augment = "none"
    run_dir = run_experiment(cfg, quiet=True)
    model, meta = load_model(os.path.join(run_dir, "best.keras"))
    assert "CLAHE" in meta["input"]["preprocessing"]
    assert json.load(open(os.path.join(run_dir, "config.json")))["model"]["clahe"] == 2.0
    equalised = keras.Model(model.input, model.get_layer("cxr_preprocess").output)
    from cxr_keras.data.pipeline import dataset_for_split
    from cxr_keras.run_folder import run_table

    train = dataset_for_split(run_table(run_dir), "train", (32, 32), 16)
    standardised = np.concatenate([equalised.predict(x, verbose=0) for x, _ in train])
    assert standardised.mean() == pytest.approx(0.0, abs=0.05) and standardised.std() == pytest.approx(1.0, abs=0.05)


def _clahe_output(flatbuffer: bytes, image: np.ndarray) -> np.ndarray:
    """What a TFLite model's CLAHE layer hands on (the input of its gray-to-RGB concatenation), in grey levels."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    concat = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONCATENATION"][0]
    tensor = [t for t in interpreter.get_tensor_details() if t["index"] == concat["inputs"][0]][0]
    scale, zero = tensor["quantization"]
    values = interpreter.get_tensor(tensor["index"]).astype(np.float32)
    return ((values - zero) * scale if scale else values)[0, ..., 0]


def test_int8_mixed_keeps_clahe_exact_where_full_int8_quantises_it(tmp_path):
    from cxr_keras.export import convert_tflite, export_savedmodel

    model = build_model("baseline", "binary", ["NORMAL", "PNEUMONIA"], 32, "none", clahe=2.0)
    images = np.stack([radiograph_like((32, 32), seed) for seed in range(12)])[..., None].astype(np.float32)
    savedmodel = export_savedmodel(model, str(tmp_path / "sm"))
    reference = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(images[11, ..., 0].astype(np.uint8))
    mixed = convert_tflite(savedmodel, "int8-mixed", images[:10], clahe=True)
    np.testing.assert_allclose(_clahe_output(mixed, images[11]), reference, atol=0.5)
    full = convert_tflite(savedmodel, "int8", images[:10])
    assert np.abs(_clahe_output(full, images[11]) - reference).max() >= 1  # why int8-mixed keeps it in float
