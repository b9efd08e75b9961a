"""The verification pass: every image is decoded once, in parallel, before any training.

Files that cannot be decoded (empty, truncated, not an image, unreadable DICOM, unsupported format) or that
exceed the pixel limit are reported and dropped, so training never meets them mid-epoch. Results are cached
per file by size and modification time, so the second look at a dataset costs a `stat` per file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from cxr_keras.config import DEFAULT_MAX_PIXELS
from cxr_keras.data.decode import decode_gray
from cxr_keras.data.dicom import dicom_to_uint8, is_dicom_bytes
from cxr_keras.data.table import Dropped
from cxr_keras.io_utils import atomic_writer, cache_dir

TF_FORMATS = {"PNG", "JPEG", "BMP", "GIF"}
CACHE_VERSION = 1


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _decoded_shape(contents: tf.Tensor) -> tf.Tensor:
    return tf.shape(decode_gray(contents))


def _inspect(path: str, data: bytes, max_pixels: int) -> tuple[str | None, int, int, bool]:
    """Read one file's header from its bytes: (problem or None, width, height, fully decoded already?).

    DICOM is decoded in full here (pydicom is the pipeline's DICOM decoder too), once its declared size is
    under `max_pixels`; other formats only have their header read, so that an oversized image is refused before
    anything decodes it.
    """
    if not data:
        return "empty file (0 bytes)", 0, 0, False
    if is_dicom_bytes(data) or path.lower().endswith(".dcm"):
        try:
            height, width = dicom_to_uint8(data, max_pixels).shape
        except Exception as exc:  # any pydicom failure means the file is unusable
            if "above the limit" in str(exc):
                return f"DICOM image of {exc} (raise --max-pixels or downsample the file)", 0, 0, False
            return f"unreadable DICOM: {exc}", 0, 0, False
        return None, width, height, True
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            fmt = image.format
    except Image.DecompressionBombError as exc:  # Pillow refuses before telling the size; its message has it
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        return f"image has {size}, more than can be decoded safely: downsample the file", 0, 0, False
    except UnidentifiedImageError:
        return "not an image file (content is not PNG, JPEG, BMP, GIF or DICOM)", 0, 0, False
    except Exception as exc:  # Pillow raises assorted errors on broken headers
        return f"corrupt image header: {exc}", 0, 0, False
    if fmt not in TF_FORMATS:
        return f"unsupported image format {fmt}: convert it to PNG", width, height, False
    return None, width, height, False


def _decode_problem(data: bytes) -> str | None:
    try:
        _decoded_shape(tf.constant(data))
    except tf.errors.OpError as exc:
        return f"truncated or corrupt image: {exc.message.splitlines()[0][:200]}"
    except Exception as exc:  # e.g. an error message TF cannot even decode: the file is unusable all the same
        return f"truncated or corrupt image ({type(exc).__name__})"
    return None


def _check(path: str, max_pixels: int) -> list:
    """[problem or None, width, height, fully decoded?] for one file, read from disk once."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # /dev/zero or a pipe behind a symlink: never read it
            return ["not a regular file (a device, pipe or folder)", 0, 0, False]
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return [f"cannot read file: {exc.strerror or exc}", 0, 0, False]
    problem, width, height, decoded = _inspect(path, data, max_pixels)
    if problem is not None or decoded or width * height > max_pixels:
        return [problem, width, height, decoded]
    return [_decode_problem(data), width, height, True]


def _pixel_problem(width: int, height: int, max_pixels: int) -> str | None:
    if width * height > max_pixels:
        return (
            f"image is {width} x {height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
            "(raise --max-pixels or downsample the file)"
        )
    return None


def _cache_file(root: str) -> str:
    digest = hashlib.sha1(os.path.abspath(root).encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), "verify", f"{digest}.json")


def _load_cache(path: str) -> dict:
    try:
        with open(path) as f:
            cache = json.load(f)
        return cache["files"] if cache.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError, KeyError):
        return {}


def verify_files(
    paths: list[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    root: str | None = None,
    workers: int | None = None,
) -> tuple[list[str], list[Dropped]]:
    """Split `paths` into (usable, dropped) by decoding each once; cached under `root`'s key when given."""
    cache_path = _cache_file(root) if root else None
    cache = _load_cache(cache_path) if cache_path else {}
    stats = {p: os.stat(p) if os.path.exists(p) else None for p in paths}
    todo = [p for p in paths if stats[p] is not None and not _cache_hit(cache.get(p), stats[p], max_pixels)]

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        for path, result in zip(todo, pool.map(lambda p: _check(p, max_pixels), todo)):
            cache[path] = [stats[path].st_size, stats[path].st_mtime_ns, *result]
    if cache_path and todo:
        try:
            with atomic_writer(cache_path) as f:
                json.dump({"version": CACHE_VERSION, "files": cache}, f)
        except OSError:
            pass  # a read-only cache: the results stand for this run, they are only not remembered

    usable, dropped = [], []
    for path in paths:
        if stats[path] is None:
            dropped.append(Dropped(path, "file not found"))
            continue
        _, _, problem, width, height, _ = cache[path]
        problem = problem or _pixel_problem(width, height, max_pixels)
        if problem:
            dropped.append(Dropped(path, problem))
        else:
            usable.append(path)
    return usable, dropped


def _cache_hit(entry: list | None, st: os.stat_result, max_pixels: int) -> bool:
    """A cached result stands if the file is unchanged and was decoded (or is still too large to decode)."""
    if entry is None or entry[0] != st.st_size or entry[1] != st.st_mtime_ns:
        return False
    _, _, problem, width, height, decoded = entry
    return decoded or problem is not None or width * height > max_pixels
