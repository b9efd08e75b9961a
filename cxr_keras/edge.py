"""What runs on a small device without TensorFlow: reading images with Pillow/pydicom and running a .tflite
model through the ai-edge-litert interpreter. Imports neither TensorFlow nor Keras (tested)."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from cxr_keras.config import DEFAULT_MAX_PIXELS
from cxr_keras.data.dicom import dicom_to_uint8, is_dicom_bytes

CARD = "model_card.json"


class ArtifactError(ValueError):
    """A model artifact does not match its model card; the message names the file and what to do."""


def open_gray(path: str, max_pixels: int = DEFAULT_MAX_PIXELS):
    """A file (PNG 8/16-bit, JPEG, BMP, DICOM) as an 8-bit grayscale Pillow image at its own size; an image of
    more than `max_pixels` pixels is refused from its header, before it is decoded."""
    import stat

    from PIL import Image

    if not stat.S_ISREG(os.stat(path).st_mode):  # /dev/zero or a pipe behind a symlink: never read it
        raise ValueError(f"{path} is not a regular file")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"{path} is empty")
    if is_dicom_bytes(data):
        return Image.fromarray(dicom_to_uint8(data, max_pixels))
    import io

    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours: refused before it tells the size
        raise ValueError(f"image is above the limit of {max_pixels:,} pixels (--max-pixels)") from None
    except Image.UnidentifiedImageError:
        raise ValueError("not an image Pillow or pydicom can read (PNG, JPEG, BMP, DICOM)") from None
    if image.size[0] * image.size[1] > max_pixels:
        raise ValueError(f"{image.size[0]}x{image.size[1]} px is above the limit of {max_pixels:,} pixels "
                         "(--max-pixels)")
    if image.mode in ("I;16", "I;16B", "I"):
        array = np.asarray(image, dtype=np.float64)
        low, high = array.min(), array.max()
        return Image.fromarray(((array - low) / max(high - low, 1) * 255).round().astype(np.uint8))
    return image.convert("L")


def to_pixels(image, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 1) float32 pixels of a Pillow image stretched to `size` = (H, W).

    Pillow's antialiased bilinear resize stands in for TensorFlow's here: values differ from the training
    pipeline's by rounding only.
    """
    from PIL import Image

    return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR), dtype=np.float32)[..., None]


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
    """A .tflite classifier: raw (N, H, W, 1) pixels in, probabilities out, int8/uint8 inputs and outputs
    quantized and dequantized with the model's own scale and zero point."""

    def __init__(self, path: str, threads: int = 2):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.image_size = tuple(int(v) for v in self.input["shape"][1:3])

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        """One (H, W, 1) image -> the output vector, dequantized."""
        x = image[None].astype(np.float32)
        scale, zero = self.input["quantization"]
        if self.input["dtype"] in (np.int8, np.uint8):
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])[0].astype(np.float32)
        scale, zero = self.output["quantization"]
        return (y - zero) * scale if self.output["dtype"] in (np.int8, np.uint8) else y

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.stack([self.predict_one(image) for image in images])
