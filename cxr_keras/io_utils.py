"""Small file helpers shared by every module that writes: atomic writes, cache directory."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path` and move it over `path` only if the block succeeds.

    A crash or exception midway leaves any previous `path` untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def cache_dir() -> str:
    """Where cxr_keras keeps caches: $CXR_KERAS_CACHE_DIR, else ~/.cache/cxr_keras."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "cxr_keras")
    path = os.environ.get("CXR_KERAS_CACHE_DIR", default)
    os.makedirs(path, exist_ok=True)
    return path
