"""`cxr synth`: a synthetic chest X-ray dataset with lesion masks."""

from __future__ import annotations

import argparse
import os
import sys

from cxr_keras.choices import TASKS


def add_parser(commands) -> None:
    """`cxr synth` and its options."""
    synth = commands.add_parser("synth", help="write a synthetic chest X-ray dataset with lesion masks")
    synth.add_argument("out", help="new folder to write into")
    synth.add_argument("--task", choices=TASKS, default="binary",
                       help="labels to generate (default binary)")
    synth.add_argument("--patients", type=int, default=120, help="patients (1-3 images each; default 120)")
    synth.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    from cxr_keras.data.synthetic import write_dataset

    for option, value, least, most in (("--patients", args.patients, 1, 100_000), ("--size", args.size, 8, 4096)):
        if not least <= value <= most:
            print(f"error: {option} must be {least} to {most}, got {value}", file=sys.stderr)
            return 2
    if os.path.isfile(args.out):
        print(f"error: {args.out} is a file; give a new folder", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and os.listdir(args.out):
        print(f"error: {args.out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2  # synth only writes into a new folder: mixing two generated datasets would mislabel
    write_dataset(args.out, args.task, n_patients=args.patients, size=args.size, seed=args.seed)
    print(f"Wrote a synthetic {args.task} dataset ({args.patients} patients, {args.size} px) to {args.out}")
    return 0
