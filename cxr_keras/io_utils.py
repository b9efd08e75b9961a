"""Small file helpers shared by every module that writes: atomic writes that respect the umask, cache directory."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process umask (reading it means setting it, so briefly and under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def publish_mode(tmp: str, path: str) -> None:
    """Give a temporary file or folder the mode `path` would get if created normally: an existing file's own
    mode, else 0666 / 0777 less the umask (mkstemp and mkdtemp create 0600 / 0700, readable by no one else)."""
    if os.path.exists(path) and os.path.isdir(path) == os.path.isdir(tmp):
        mode = os.stat(path).st_mode & 0o7777
    else:
        mode = (0o777 if os.path.isdir(tmp) else 0o666) & ~umask()
    os.chmod(tmp, mode)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path` and move it over `path` only if the block succeeds.

    A crash or exception midway leaves any previous `path` untouched. The file gets the mode a plain `open`
    would give it (the umask's, or the replaced file's own).
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
        publish_mode(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def pyplot():
    """matplotlib.pyplot on the Agg backend: figures go to files, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> str:
    """Write a matplotlib figure as PNG, atomically, and close it; returns the path."""
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    pyplot().close(fig)
    return os.fspath(path)


def cache_dir() -> str:
    """Where cxr_keras keeps caches: $CXR_KERAS_CACHE_DIR, else ~/.cache/cxr_keras. Made when it can be; every
    cache is optional, so a read-only one only means nothing is remembered."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "cxr_keras")
    path = os.environ.get("CXR_KERAS_CACHE_DIR", default)
    with contextlib.suppress(OSError):
        os.makedirs(path, exist_ok=True)
    return path


class OutputExists(ValueError):
    """An --out that holds earlier results, given without --overwrite."""


def check_out(path: str, overwrite: bool, folder: bool = True, data: list[str] | tuple[str, ...] = ()) -> None:
    """The one --out policy of every command: a new or empty folder (a new file), or --overwrite to write over
    earlier results (files of the same name are replaced, each atomically; nothing else is deleted); never inside
    a `data` folder the command reads; writable, checked before any work."""
    check_outside_data(path, data)
    if folder and os.path.isfile(path):
        raise OutputExists(f"--out {path} is a file; give a folder")
    if not folder and os.path.isdir(path):
        raise OutputExists(f"--out {path} is a folder; give a file name, e.g. {os.path.join(path, 'predictions.csv')}")
    taken = os.path.isfile(path) or (os.path.isdir(path) and bool(os.listdir(path)))
    if taken and not overwrite:
        raise OutputExists(f"--out {path} already exists{' and is not empty' if folder else ''}; choose a new "
                           f"{'folder' if folder else 'file'} or pass --overwrite")
    check_writable(path, folder)


def check_outside_data(path: str, data: list[str] | tuple[str, ...], option: str = "--out") -> None:
    """Refuse an output inside a data folder: what it writes would be read as data next time (a folder of
    figures as a new class, a predictions CSV as the label CSV)."""
    target = os.path.realpath(path)
    for folder in data:
        if folder and os.path.isdir(folder):
            root = os.path.realpath(folder)
            if os.path.commonpath([target, root]) == root:
                raise OutputExists(f"{option} {path} is inside the data folder {folder}: what it writes would be read "
                                   "as data next time (a new class, a label CSV); write it elsewhere")


WRITE_PROBLEMS = {
    errno.ENOSPC: "no space left on the device: free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EROFS: "a read-only file system: write elsewhere",
    errno.EACCES: "permission denied: write in a folder of yours",
    errno.EPERM: "permission denied: write in a folder of yours",
}


class OutputNotWritable(ValueError):
    """An output path this process cannot write; the message names it and why."""


def write_problem(exc: OSError) -> str | None:
    """What a failed write means for the user (full disk, read-only, not theirs), or None for other errors."""
    return WRITE_PROBLEMS.get(exc.errno)


def check_writable(path: str, folder: bool = True, option: str = "--out") -> None:
    """Refuse an --out that cannot be written (read-only, full, not ours) before any work: a probe file is made
    and removed in the folder, or in its nearest existing parent when the folder does not exist yet."""
    target = os.path.abspath(path if folder else os.path.dirname(os.path.abspath(path)))
    while not os.path.exists(target):
        target = os.path.dirname(target)
    try:
        fd, probe = tempfile.mkstemp(dir=target, prefix=".cxr-write-check-")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputNotWritable(f"{option} {path}: cannot write in {target} "
                                f"({write_problem(exc) or exc.strerror or exc})") from None


def check_keras_archive(path: str) -> None:
    """Refuse a .keras file that is not a complete archive (truncated by a full disk or a half-finished copy,
    or not a .keras file at all) in one line, before Keras says "File not found" about a file that exists."""
    import zipfile

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        broken = str(exc) or "unreadable"
    if broken is not None:
        raise ValueError(f"not a readable Keras model: {path} (truncated or corrupt); save or copy it again")
