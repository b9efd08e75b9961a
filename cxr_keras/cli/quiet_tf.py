"""TensorFlow's start-up lines (oneDNN, CUDA, absl notices) kept off the terminal. They come from C++ before any
log level applies, so the import runs with file descriptor 2 sent to a temporary file: shown when the import
fails, or always with CXR_KERAS_TF_LOGS=1.

`quiet_when_imported()` does this lazily, whenever something first imports TensorFlow, so that a command that
refuses its options, or never needs TensorFlow, answers at once instead of after TensorFlow's 5 seconds."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile


@contextlib.contextmanager
def stderr_captured():
    """Send fd 2 to a temporary file inside the block; on an exception, write what was captured and re-raise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _wanted() -> bool:
    return "tensorflow" not in sys.modules and not os.environ.get("CXR_KERAS_TF_LOGS")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow now, quietly (nothing to do when it is imported already or absent)."""
    if not _wanted():
        return
    with stderr_captured():
        try:
            import tensorflow  # noqa: F401
        except ModuleNotFoundError:
            pass  # a device without TensorFlow: the commands that need it say so


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run with fd 2 captured."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader  # TensorFlow's code sees its usual loader
        with stderr_captured():
            self._loader.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` the usual way and hands its import to `_QuietLoader`, once."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_when_imported() -> None:
    """Make the first import of TensorFlow, whoever does it, a quiet one."""
    if _wanted() and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
