"""The image cache for data larger than RAM, and the choice between it and memory.

The disk cache is one uint8 (N, H, W, 1) file: batches are gathered from it, row by row with `os.pread`, by
the same shuffled indices as from the memory cache, so the same seed gives the same batches either way. Reads go
through the operating system's page cache, which is not the process's memory (a memory map's touched pages
would count as resident and grow with N), so the process stays flat in N. It is keyed by the files (path, size,
mtime), the image size and the resize mode; built once, in parallel, by writing decoded chunks into a `.partial`
file whose progress is recorded after every chunk, so a killed build resumes where it stopped; renamed into
place when complete.
tf.data's own file cache (`Dataset.cache(path)`) cannot be gathered from by index and is rebuilt whole after an
interrupted first epoch, hence this small module.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np

from cxr_keras.io_utils import atomic_writer, cache_dir

VERSION = 2  # of the decoding: bump when data/image_io.py changes what it produces
CHUNK = 256  # images decoded and written between progress records
MEMORY_SHARE = 0.5  # the default memory budget: this share of the RAM available when the run starts


def cache_key(paths: list[str], image_size: tuple[int, int], resize: str) -> str:
    """A digest of everything the cached pixels depend on."""
    digest = hashlib.sha256(f"v{VERSION} {image_size} {resize} {len(paths)}\n".encode())
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{os.path.abspath(path)}\0missing\n".encode())
    return digest.hexdigest()[:32]


def available_memory() -> int:
    """Bytes of RAM available now (MemAvailable), or the physical total where /proc/meminfo is absent."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose(n_images: int, image_size: tuple[int, int], budget: int | None = None) -> tuple[str, str]:
    """'memory' or 'disk' for a cache of `n_images`, and why, in words for the run's log."""
    needed = n_images * image_size[0] * image_size[1]
    how = "given" if budget is not None else f"{MEMORY_SHARE:.0%} of the {available_memory() / 1e9:.1f} GB available"
    budget = budget if budget is not None else int(MEMORY_SHARE * available_memory())
    kind = "memory" if needed <= budget else "disk"
    return kind, (f"cache: {kind} ({n_images:,} images at {image_size[0]}x{image_size[1]} need "
                  f"{needed / 1e9:.2f} GB; memory budget {budget / 1e9:.2f} GB, {how})")


class CacheFile:
    """A finished cache file: `read(indices)` -> (len(indices), H, W, 1) uint8, rows in the order asked."""

    def __init__(self, path: str, shape: tuple[int, ...]):
        self.path, self.shape = path, shape
        self.row = int(np.prod(shape[1:]))
        self._fd = os.open(path, os.O_RDONLY)

    def read(self, indices) -> np.ndarray:
        out = np.empty((len(indices), *self.shape[1:]), dtype=np.uint8)
        flat = out.reshape(len(indices), self.row)
        for k, i in enumerate(np.asarray(indices, dtype=np.int64).tolist()):
            os.preadv(self._fd, [flat[k]], i * self.row)  # straight into the batch: no bytes object, no copy
        return out

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self):
        try:
            os.close(self._fd)
        except (OSError, AttributeError):
            pass


def open_cache(paths: list[str], image_size: tuple[int, int], resize: str = "stretch", folder: str | None = None,
               verbose: bool = False) -> CacheFile:
    """The disk cache of `paths`, built (or its build resumed) first when needed."""
    folder = folder or os.path.join(cache_dir(), "images")
    os.makedirs(folder, exist_ok=True)
    shape = (len(paths), *image_size, 1)
    final = os.path.join(folder, f"{cache_key(paths, image_size, resize)}.u8")
    if not os.path.exists(final):
        _build(paths, image_size, resize, final, shape, verbose)
    return CacheFile(final, shape)


def _build(paths, image_size, resize, final: str, shape: tuple[int, ...], verbose: bool) -> None:
    partial, progress = f"{final}.partial", f"{final}.json"
    size = int(np.prod(shape))
    done = _resumable(partial, progress, size)
    if done == 0:
        _reserve(partial, size)
    row = int(np.prod(shape[1:]))
    if verbose and done:
        print(f"resuming the disk cache at image {done:,} of {len(paths):,}: {final}")
    start, last_said = time.monotonic(), 0.0
    with open(partial, "r+b") as f:
        for chunk_start in range(done, len(paths), CHUNK):
            chunk = paths[chunk_start : chunk_start + CHUNK]
            os.pwrite(f.fileno(), _decode(chunk, image_size, resize).tobytes(), chunk_start * row)
            os.fsync(f.fileno())  # the pixels are on disk before the progress record says so
            with atomic_writer(progress) as record:
                json.dump({"done": chunk_start + len(chunk), "bytes": size}, record)
            now = time.monotonic()
            if verbose and (now - last_said > 10 or chunk_start + len(chunk) == len(paths)):
                built = chunk_start + len(chunk) - done
                rate = built / max(now - start, 1e-9)
                left = (len(paths) - chunk_start - len(chunk)) / max(rate, 1e-9)
                print(f"disk cache: {chunk_start + len(chunk):,}/{len(paths):,} images, {rate:.0f} images/s, "
                      f"ETA {left:.0f} s", file=sys.stderr)
                last_said = now
    os.replace(partial, final)
    os.remove(progress)


def _resumable(partial: str, progress: str, size: int) -> int:
    """Images already written by an interrupted build of this same cache (0 when there is none)."""
    try:
        with open(progress) as f:
            record = json.load(f)
        if record["bytes"] == size and os.path.getsize(partial) == size:
            return int(record["done"])
    except (OSError, ValueError, KeyError):
        pass
    return 0


def _reserve(path: str, size: int) -> None:
    """A file of `size` bytes, refused up front when the disk cannot hold it."""
    folder = os.path.dirname(path)
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    if free < size:
        raise OSError(f"the disk cache needs {size / 1e9:.2f} GB but {folder} has {free / 1e9:.2f} GB free; set "
                      "CXR_KERAS_CACHE_DIR to a larger disk, or use a smaller --image-size")
    with open(path, "wb") as f:
        f.truncate(size)


def _decode(paths: list[str], image_size: tuple[int, int], resize: str) -> np.ndarray:
    from cxr_keras.data.decode import decode_all

    return decode_all(paths, image_size, resize)
