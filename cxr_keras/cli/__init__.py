"""The `cxr` command: `cxr train` trains a model, `cxr evaluate` measures one, `cxr gradcam` explains its
predictions, `cxr export` makes it deployable, `cxr predict` runs it, `cxr ensemble` averages runs,
`cxr data-report` describes a dataset, `cxr synth` writes sample data. One parser, built from each command's
own module; TensorFlow starts after parsing, so `--help` and usage errors are instant."""

from __future__ import annotations

import argparse
import os
import sys

from cxr_keras.cli import data_report, ensemble, evaluate, export, gradcam, predict, synth, train
from cxr_keras.cli.errors import EXPECTED, report_errors

__all__ = ["EXPECTED", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr", description="Chest X-ray classifiers on Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (data_report, evaluate, export, predict, gradcam, train, ensemble, synth):
        command.add_parser(commands)
    return parser


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up lines (oneDNN, CUDA, absl notices) kept off the terminal: they come from
    C++ before any log level applies. Shown when the import fails, or always with CXR_KERAS_TF_LOGS=1."""
    if "tensorflow" in sys.modules or os.environ.get("CXR_KERAS_TF_LOGS"):
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except ModuleNotFoundError:
            pass  # a device without TensorFlow: the commands that need it say so
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and usage errors end here, before TensorFlow starts
    import_tensorflow_quietly()
    return report_errors(lambda: args.func(args))
