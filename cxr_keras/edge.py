"""What runs on a small device without TensorFlow: reading images with Pillow/pydicom and running a .tflite
model through the ai-edge-litert interpreter. Imports neither TensorFlow nor Keras (tested)."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from cxr_keras.data.image_io import resize_gray

CARD = "model_card.json"


class ArtifactError(ValueError):
    """A model artifact does not match its model card; the message names the file and what to do."""


def to_pixels(image: np.ndarray, size: tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """(H, W, 1) float32 pixels of a (H, W) uint8 image resized to `size` = (H, W): the training pipeline's own
    resize, so a film gets the same pixels, and score, here as in evaluation."""
    return resize_gray(image, size, mode).astype(np.float32)


def sha256(path: str) -> str:
    """SHA-256 of a file, or of every file of a folder (sorted relative paths and contents)."""
    digest = hashlib.sha256()
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names)
    for name in files:
        if not os.path.isfile(path):
            digest.update(os.path.relpath(name, path).encode())
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def verify_artifact(card_dir: str, card: dict, artifact: str) -> dict:
    """The card's entry for `artifact` (a file or folder in `card_dir`) once its SHA-256 matches; an artifact the
    card does not list, or one whose bytes changed, is an ArtifactError (check before loading anything)."""
    name = os.path.basename(os.path.normpath(artifact))
    entry = next((e for e in card.get("artifacts", {}).values() if e.get("file") == name), None)
    if entry is None:
        listed = sorted(e.get("file") for e in card.get("artifacts", {}).values())
        raise ArtifactError(f"{artifact} is not listed in {os.path.join(card_dir, CARD)} (it lists {listed}): "
                            "it was not made by this export; re-export, or pass --no-verify if you trust it")
    actual = sha256(os.path.join(card_dir, name))
    if actual != entry.get("sha256"):
        raise ArtifactError(f"{name} does not match {CARD}: sha256 {actual[:12]}... != "
                            f"{str(entry.get('sha256'))[:12]}...; the file was changed or belongs to another "
                            "export. Re-export it, or pass --no-verify if you trust it")
    return entry


class TFLiteModel:
    """A .tflite classifier: raw (N, H, W, 1) pixels in, probabilities (and, when the model computes it, the
    out-of-distribution score) out, int8/uint8 inputs and outputs quantized and dequantized with the model's own
    scale and zero point. Outputs are told apart by their signature names ("probabilities", "ood_score")."""

    def __init__(self, path: str, threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output, self.ood_output = self.interpreter.get_output_details()[0], None
        named = self._named_outputs()
        if "probabilities" in named:
            self.output, self.ood_output = named["probabilities"], named.get("ood_score")
        self.image_size = tuple(int(v) for v in self.input["shape"][1:3])

    def _named_outputs(self) -> dict:
        signatures = self.interpreter.get_signature_list()
        if "serving_default" not in signatures:
            return {}
        return self.interpreter.get_signature_runner("serving_default").get_output_details()

    def _read(self, details: dict) -> np.ndarray:
        y = self.interpreter.get_tensor(details["index"])[0].astype(np.float32)
        scale, zero = details["quantization"]
        return (y - zero) * scale if details["dtype"] in (np.int8, np.uint8) else y

    def score_one(self, image: np.ndarray) -> tuple[np.ndarray, float | None]:
        """One (H, W, 1) image -> (the output vector, the out-of-distribution score or None), dequantized."""
        x = image[None].astype(np.float32)
        scale, zero = self.input["quantization"]
        if self.input["dtype"] in (np.int8, np.uint8):
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        ood = None if self.ood_output is None else float(self._read(self.ood_output).ravel()[0])
        return self._read(self.output), ood

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        """One (H, W, 1) image -> the output vector, dequantized."""
        return self.score_one(image)[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.stack([self.predict_one(image) for image in images])

    def predict_scored(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (N, outputs), out-of-distribution scores (N,) or None for a model without them)."""
        scored = [self.score_one(image) for image in images]
        ood = None if self.ood_output is None else np.array([s for _, s in scored])
        return np.stack([p for p, _ in scored]), ood
