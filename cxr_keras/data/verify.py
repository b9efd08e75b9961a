"""The verification pass: every image is decoded once, in parallel, before any training.

Files that cannot be decoded (empty, truncated, not an image, unreadable DICOM, unsupported format) or that
exceed the pixel limit are reported and dropped, so training never meets them mid-epoch. The decoder is the
pipeline's own (data/image_io.py), so a file that passed cannot fail to decode later. Each readable file's
SHA-256 and perceptual hash are kept (data/copies.py finds copies with them).

Results are cached per file by size and modification time, so the second look at a dataset costs a `stat` and
an `open` per file: the open makes sure a file made unreadable since is not hidden by the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cxr_keras.config import DEFAULT_MAX_PIXELS
from cxr_keras.data.copies import perceptual_hash
from cxr_keras.data.image_io import ImageReadError, read_bytes, read_gray, stat_or_reason
from cxr_keras.data.table import Dropped
from cxr_keras.io_utils import atomic_writer, cache_dir

CACHE_VERSION = 2  # 2: Pillow decoder, content and perceptual hashes


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a readable file's content: its bytes (SHA-256) and its look (the 256-bit difference hash
    of data/copies.py, as 64 hex digits)."""

    sha256: str
    phash: str


def _check(path: str, max_pixels: int) -> list:
    """[problem or None, width, height, refused_at, sha256, phash] for one file, read from disk once;
    `refused_at` is the pixel limit a file was refused under for its size (0 when it was not)."""
    try:
        data = read_bytes(path)
        image = read_gray(data, max_pixels)
    except ImageReadError as exc:
        return [str(exc), 0, 0, max_pixels if "above the limit" in str(exc) else 0, "", ""]
    height, width = image.shape
    return [None, width, height, 0, hashlib.sha256(data).hexdigest(), perceptual_hash(image)]


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
    fingerprints: dict[str, Fingerprint] | None = None,
) -> tuple[list[str], list[Dropped]]:
    """Split `paths` into (usable, dropped) by decoding each once; cached under `root`'s key when given.

    `fingerprints`, when given, is filled with each usable file's `Fingerprint`.
    """
    cache_path = _cache_file(root) if root else None
    cache = _load_cache(cache_path) if cache_path else {}
    stats = {p: stat_or_reason(p) for p in paths}
    todo = [p for p in paths if isinstance(stats[p], os.stat_result)
            and not _cache_hit(cache.get(p), stats[p], max_pixels)]
    checked_now = set(todo)

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
        if not isinstance(stats[path], os.stat_result):
            dropped.append(Dropped(path, stats[path]))
            continue
        _, _, problem, width, height, _, sha, phash = cache[path]
        problem = problem or _pixel_problem(width, height, max_pixels) or (
            None if path in checked_now else _unreadable(path))
        if problem:
            dropped.append(Dropped(path, problem))
        else:
            usable.append(path)
            if fingerprints is not None:
                fingerprints[path] = Fingerprint(sha, phash)
    return usable, dropped


def _unreadable(path: str) -> str | None:
    """Why a file the cache passed cannot be opened now (its permissions changed), else None."""
    try:
        with open(path, "rb"):
            return None
    except OSError as exc:
        return f"cannot read file: {exc.strerror or exc}"


def _cache_hit(entry: list | None, st: os.stat_result, max_pixels: int) -> bool:
    """A cached result stands if the file is unchanged, unless it was refused as too large and the limit is
    now high enough to decode it."""
    if entry is None or len(entry) != 8 or entry[0] != st.st_size or entry[1] != st.st_mtime_ns:
        return False
    refused_at = entry[5]
    return not refused_at or max_pixels <= refused_at
