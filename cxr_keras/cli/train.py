"""`cxr train`: a training run with any option of the default config overridden (cxr_keras/cli/train_options.py)."""

from __future__ import annotations

import argparse
import sys


def add_parser(commands) -> None:
    """`cxr train` and its options."""
    from cxr_keras.cli.train_options import add_train_arguments

    train = commands.add_parser("train", help="train a classifier: stages, callbacks, a run folder (see --help)",
                                description="Train per the default config (EfficientNetB0, ImageNet weights when "
                                "obtainable, head then top 30% fine-tuned) with any option overridden. From "
                                "scratch (--weights none) the stages are one: --epochs N is enough.")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from cxr_keras.cli.train_options import run_from_args
    from cxr_keras.config import ExperimentConfig

    if not (args.data_dir or args.config or args.resume):
        print("error: say where the images are (--data-dir DIR), or give --config FILE or --resume RUN_DIR",
              file=sys.stderr)
        return 2
    run_from_args(args, ExperimentConfig(name="train"))
    return 0
