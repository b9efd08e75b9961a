"""Fixture writers: small images, DICOM files and broken files, made in temporary folders."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image


def gradient(height: int = 40, width: int = 48, dtype=np.uint8, top: int = 255) -> np.ndarray:
    """A horizontal ramp 0..top: easy to check after resizing and conversion."""
    row = np.linspace(0, top, width)
    return np.tile(row, (height, 1)).round().astype(dtype)


def distinct_gradient(path: str) -> np.ndarray:
    """A gradient with a corner of noise seeded by `path`: every file its own film (copies of one film under two
    labels are refused, and near-identical films share a split group)."""
    image = gradient()
    rng = np.random.default_rng(zlib.crc32(os.path.abspath(path).encode()))
    image[:16, :16] = rng.integers(0, 256, (16, 16))
    return image


def write_image(path: str, array: np.ndarray | None = None, mode: str | None = None, fmt: str | None = None) -> str:
    """Save an array (default: a gradient with a corner of its own, `distinct_gradient`) with Pillow, optionally
    converted to `mode`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(distinct_gradient(path) if array is None else array)
    if mode:
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


def write_dicom(path: str, pixels: np.ndarray, monochrome1: bool = False, window: tuple[float, float] | None = None,
                bits_stored: int = 12, slope: float = 1.0, intercept: float = 0.0) -> str:
    """A minimal valid DICOM file (explicit VR little endian) holding uint16 `pixels`."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def png_header_only(path: str, width: int, height: int) -> str:
    """A PNG whose header claims width x height, with a tiny (invalid) body: a bomb nobody should decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(body)
    return path


def truncated_copy(source: str, path: str, keep: float = 0.5) -> str:
    """The first `keep` share of a file's bytes."""
    with open(source, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])
    return path


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_blob_dataset(root: str, n_per_class: int = 40, size: int = 48, seed: int = 0) -> str:
    """An easy binary set: noisy gray images, 'PNEUMONIA' ones with a bright blob at a random place.

    For tests about training mechanics, where the synthetic phantoms' subtle opacities would need far more
    steps to learn. File names carry patient ids (`patientNNN_0.png`), one image per patient.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
        for i in range(n_per_class):
            image = rng.normal(90, 25, (size, size))
            if label:
                cy, cx = rng.uniform(0.25 * size, 0.75 * size, 2)
                image += 110 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 8) ** 2))
            pixels = np.clip(image, 0, 255).astype(np.uint8)
            write_image(os.path.join(root, cls, f"patient{label}{i:03d}_0.png"), pixels)
    return root


def train_baseline(data_dir: str, runs_dir: str, epochs: int = 1, split_ratios=(0.6, 0.2, 0.2), batch_size: int = 16,
                   name: str = "t") -> str:
    """A quiet from-scratch baseline-CNN run at 32 px without augmentation: the smallest real run; its folder."""
    from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
    from cxr_keras.train import run_experiment

    config = ExperimentConfig(
        name=name, runs_dir=runs_dir,
        data=DataConfig(data_dir=data_dir, image_size=32, batch_size=batch_size, split_ratios=split_ratios,
                        augment="none"),
        model=ModelConfig(backbone="baseline", weights="none"),
        train=TrainConfig(stages=[StageConfig(epochs=epochs, trainable="all")], tensorboard=False))
    return run_experiment(config, quiet=True)
