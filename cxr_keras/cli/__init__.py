"""The `cxr` command: `cxr train` trains a model, `cxr evaluate` measures one, `cxr gradcam` explains its
predictions, `cxr export` makes it deployable, `cxr predict` runs it, `cxr ensemble` averages runs,
`cxr data-report` describes a dataset, `cxr synth` writes sample data. One parser, built from each command's
own module; TensorFlow starts only when a command needs it (quietly, cli/quiet_tf.py), so `--help`, usage
errors and refusals that need no model are instant."""

from __future__ import annotations

import argparse

from cxr_keras.cli import data_report, ensemble, evaluate, export, gradcam, predict, synth, train
from cxr_keras.cli.errors import EXPECTED, report_errors
from cxr_keras.cli.quiet_tf import import_tensorflow_quietly, quiet_when_imported

__all__ = ["EXPECTED", "build_parser", "import_tensorflow_quietly", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr", description="Chest X-ray classifiers on Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (data_report, evaluate, export, predict, gradcam, train, ensemble, synth):
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and usage errors end here, before TensorFlow starts
    quiet_when_imported()  # TensorFlow starts only when a command needs it, and quietly
    return report_errors(lambda: args.func(args))
