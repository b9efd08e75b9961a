"""DICOM to 8-bit grayscale, the way a radiologist's viewer shows it."""

from __future__ import annotations

import io

import numpy as np

DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"


def is_dicom_bytes(data: bytes) -> bool:
    """True when the bytes carry the DICOM preamble magic ('DICM' at offset 128)."""
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC


def dicom_to_uint8(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode a DICOM file's bytes to a (H, W) uint8 image.

    Applies the modality LUT (rescale slope/intercept), then the VOI LUT or window centre/width when the file
    has one, inverts MONOCHROME1 (where high values are dark), and stretches the result to 0..255.
    Raises ValueError naming what is wrong when the file has no usable pixel data, or (with `max_pixels`) when
    its frame is larger than that, before decoding it.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    if "PixelData" not in ds:
        raise ValueError("DICOM file has no pixel data")
    if max_pixels and int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) > max_pixels:
        raise ValueError(f"{ds.Columns}x{ds.Rows} px is above the limit of {max_pixels:,} pixels")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for codecs it lacks
        raise ValueError(
            f"cannot decode DICOM pixel data ({exc}); compressed transfer syntaxes need "
            "`pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg`"
        ) from exc
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 1:
        pixels = pixels[0]  # multi-frame: the first frame
    if pixels.ndim != 2:
        raise ValueError(f"expected a single grayscale frame, got pixel array of shape {pixels.shape}")
    image = apply_modality_lut(pixels, ds).astype(np.float64)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        image = apply_voi_lut(image, ds).astype(np.float64)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        image = image.max() - image
    return stretch_to_uint8(image)


def stretch_to_uint8(image: np.ndarray) -> np.ndarray:
    """Linearly map an image's min..max to 0..255 (a constant image becomes all zeros)."""
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.round((image - lo) * (255.0 / (hi - lo))).astype(np.uint8)
