"""`cxr ensemble`: one model averaging several runs' best.keras, in a run folder of its own."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    """`cxr ensemble` and its options."""
    ensemble = commands.add_parser(
        "ensemble", help="average several runs of the same data and split into one model",
        description="Average the probabilities of several runs' best.keras (e.g. the same recipe with --seed 0 "
                    "and --seed 1) into one model, written as a run folder: then cxr evaluate --run, export and "
                    "gradcam use it like any run. The runs must share data, split, task, classes and image size.")
    ensemble.add_argument("runs", nargs="+", metavar="RUN", help="run folders made by cxr train (two or more)")
    ensemble.add_argument("--out", required=True, help="new folder for the ensemble run")
    ensemble.add_argument("--overwrite", action="store_true", help="write into an existing --out")
    ensemble.set_defaults(func=cmd_ensemble)


def cmd_ensemble(args: argparse.Namespace) -> int:
    from cxr_keras.ensemble import ensemble_runs

    out = ensemble_runs(args.runs, args.out, args.overwrite)
    print(f"Wrote {out}: best.keras averages {len(args.runs)} runs. Choose its threshold and measure it with "
          f"`cxr evaluate --run {out}`")
    return 0
