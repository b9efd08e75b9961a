"""File bytes to a resized 8-bit grayscale image: the one decoder and the one resize of every path.

Training, evaluation, Grad-CAM, export calibration and `cxr predict` (full and edge install alike) all read
films through `read_gray` and `resize_gray`, so the same film gets the same pixels, and the same score, wherever
it is scored. Pillow and pydicom do the work; no TensorFlow here (the edge install has none): the tf.data
pipeline calls these functions through `tf.numpy_function` (data/decode.py).

What a viewer does, this does: EXIF orientation is applied, the first frame of an animation or multi-page
TIFF is read, 16-bit images are stretched min..max to 0..255, colour is converted to luminance (ITU-R 601-2,
as Pillow's "L"), and DICOM goes through its modality and VOI LUTs with MONOCHROME1 inverted (data/dicom.py).
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxr_keras.data.dicom import DICOM_MAGIC, DICOM_MAGIC_OFFSET, dicom_to_uint8, is_dicom_bytes

# What Pillow reads beside PNG, JPEG and BMP: TIFF, WebP and GIF; DICOM by extension or by its DICM magic.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom")
RESIZE_MODES = ("stretch", "pad")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")

# Our own --max-pixels limit is checked from the header before decoding; Pillow's warning about its (higher)
# limit would only repeat it on the console.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class ImageReadError(ValueError):
    """A file cannot be read as a film; the message says why in a few words."""


# The first bytes of the formats read here, for files whose name has no extension (DICOM: 'DICM' at byte 128).
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")


def has_image_magic(path: str) -> bool:
    """True when the file's first bytes say PNG, JPEG, BMP, GIF, TIFF, WebP or DICOM, whatever its name."""
    try:
        with open(path, "rb") as f:
            head = f.read(DICOM_MAGIC_OFFSET + 4)
    except OSError:
        return False
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return head[DICOM_MAGIC_OFFSET:] == DICOM_MAGIC or webp or head.startswith(SIGNATURES)


def is_image_name(path: str) -> bool:
    """True for a file this toolkit reads: a known image extension, or no extension and image content (a PACS
    export's `IM0001`)."""
    name = os.path.basename(path)
    if name.startswith("."):
        return False
    if name.lower().endswith(IMAGE_EXTENSIONS):
        return True
    return "." not in name and os.path.isfile(path) and has_image_magic(path)


def stat_or_reason(path: str) -> os.stat_result | str:
    """The file's stat, or in a few words why there is none (not found, a broken link or link loop)."""
    try:
        return os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            return "broken symbolic link or link loop"
        return "file not found" if isinstance(exc, FileNotFoundError) else f"cannot read file: {exc.strerror or exc}"


def read_bytes(path: str) -> bytes:
    """A regular file's bytes; a device, pipe, folder, broken link or link loop is an ImageReadError."""
    info = stat_or_reason(path)
    if isinstance(info, str):
        raise ImageReadError(info)
    if not stat.S_ISREG(info.st_mode):  # /dev/zero or a pipe behind a symlink: never read it
        raise ImageReadError("not a regular file (a device, pipe or folder)")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ImageReadError(f"cannot read file: {exc.strerror or exc}") from None


def read_gray(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode a file's bytes to a (H, W) uint8 image as a viewer shows it; ImageReadError says what is wrong.

    An image of more than `max_pixels` pixels is refused from its header, before it is decoded.
    """
    if not data:
        raise ImageReadError("empty file (0 bytes)")
    if is_dicom_bytes(data):
        try:
            return dicom_to_uint8(data, max_pixels)
        except Exception as exc:  # any pydicom failure means the file is unusable
            if "above the limit" in str(exc):
                raise ImageReadError(f"DICOM image of {exc} (raise --max-pixels or downsample the file)") from None
            raise ImageReadError(f"unreadable DICOM: {exc}") from None
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow refuses before telling the size; its message has it
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise ImageReadError(f"image has {size}, more than can be decoded safely: downsample the file") from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image file (content is not PNG, JPEG, BMP, TIFF, WebP, GIF or DICOM)") from None
    except Exception as exc:  # Pillow raises assorted errors on broken headers
        raise ImageReadError(f"corrupt image header: {exc}") from None
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        raise ImageReadError(f"image is {width} x {height} = {width * height:,} pixels, above the limit of "
                             f"{max_pixels:,} (raise --max-pixels or downsample the file)")
    try:
        image.seek(0)  # the first frame of a GIF or multi-page TIFF
        image = ImageOps.exif_transpose(image)  # EXIF orientation, as every viewer applies it
        return _to_uint8(image)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data, found while decoding
        raise ImageReadError(f"truncated or corrupt image: {exc}") from None


def _to_uint8(image: Image.Image) -> np.ndarray:
    """A decoded Pillow image as (H, W) uint8 luminance; 16-bit and float images stretched min..max."""
    if image.mode in SIXTEEN_BIT_MODES:
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        if high <= low:
            return np.zeros(array.shape, dtype=np.uint8)
        return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)  # colour, palette and alpha alike


def resize_gray(image: np.ndarray, size: tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """A (H, W) uint8 image resized to `size` = (height, width), as (height, width, 1) uint8.

    Pillow's bilinear filter, antialiased when shrinking. `stretch` ignores the aspect ratio (as the usual
    Keras recipes do); `pad` keeps it and pads with black, centred.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    height, width = size
    source = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if mode == "stretch":
        out = np.asarray(source.resize((width, height), Image.BILINEAR))
    else:
        scale = min(height / image.shape[0], width / image.shape[1])
        inner_h = max(1, min(height, round(image.shape[0] * scale)))
        inner_w = max(1, min(width, round(image.shape[1] * scale)))
        out = np.zeros((height, width), dtype=np.uint8)
        top, left = (height - inner_h) // 2, (width - inner_w) // 2
        out[top : top + inner_h, left : left + inner_w] = np.asarray(source.resize((inner_w, inner_h),
                                                                                   Image.BILINEAR))
    return out[..., None]


def load_gray(path: str, size: tuple[int, int], mode: str = "stretch", max_pixels: int | None = None) -> np.ndarray:
    """Read, decode and resize one file to (height, width, 1) uint8."""
    return resize_gray(read_gray(read_bytes(path), max_pixels), size, mode)
