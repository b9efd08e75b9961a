"""`cxr predict`: predictions.csv from any artifact (cxr_keras.predict does the work)."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    """`cxr predict` and its options."""
    from cxr_keras.predict import add_predict_arguments

    predict = commands.add_parser("predict", help="predictions.csv from a .keras, SavedModel or .tflite model")
    add_predict_arguments(predict)
    predict.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from cxr_keras.predict import run

    return run(args)
