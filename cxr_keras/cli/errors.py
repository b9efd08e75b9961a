"""Expected failures as one line on stderr and exit status 2, for `cxr` and for `python -m experiments.*`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from cxr_keras.io_utils import write_problem

# DataError, SplitError, WeightsError, ExportError, OutputExists... are ValueErrors; the OSErrors are a file
# the user named that is missing, in the way or not theirs to read.
EXPECTED = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def report_errors(run: Callable[[], int | None]) -> int:
    """Call `run`; an expected failure (a message written for the user, a full disk, a read-only folder) becomes
    one line and status 2, Ctrl-C status 130; anything else keeps its traceback (as does CXR_KERAS_DEBUG=1)."""
    try:
        status = run()
    except KeyboardInterrupt:
        return 130  # what was interrupted has said how to go on; no traceback for a Ctrl-C
    except OSError as exc:
        problem = write_problem(exc)
        if os.environ.get("CXR_KERAS_DEBUG") or not (problem or isinstance(exc, EXPECTED)):
            raise
        where = exc.filename or "a file"
        print(f"error: cannot write {where}: {problem}" if problem else f"error: {exc}", file=sys.stderr)
        return 2
    except EXPECTED as exc:  # messages written for the user; anything else keeps its traceback
        if os.environ.get("CXR_KERAS_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0
