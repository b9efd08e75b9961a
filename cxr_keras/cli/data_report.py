"""`cxr data-report`: what a dataset holds, what was dropped and why."""

from __future__ import annotations

import argparse
import os

from cxr_keras.cli.common import add_data_arguments, add_out_argument, load_from_args
from cxr_keras.io_utils import check_out


def add_parser(commands) -> None:
    """`cxr data-report` and its options."""
    report = commands.add_parser("data-report", help="counts per class, split and patient; dropped files; chart")
    add_data_arguments(report)
    add_out_argument(report, "folder for report.txt, the chart and dropped.csv (default ./data-report)",
                     default="data-report")
    report.add_argument("--split", action="store_true", help="also make the seeded, patient-grouped split")
    report.add_argument("--split-ratios", nargs=3, type=float, default=[0.8, 0.1, 0.1],
                        metavar=("TRAIN", "VAL", "TEST"), help="split shares (default 0.8 0.1 0.1)")
    report.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    report.add_argument("--resplit", action="store_true", help="ignore the data's own split and make a new one")
    report.set_defaults(func=cmd_data_report)


def cmd_data_report(args: argparse.Namespace) -> int:
    from cxr_keras.data.report import format_report, write_report
    from cxr_keras.data.splits import save_splits, split_table

    args.data_dir = args.data_dir or args.data_dir_option
    if not args.data_dir:
        raise ValueError("say which dataset to report on: cxr data-report DIR (or --data-dir DIR)")
    check_out(args.out, args.overwrite, data=[args.data_dir, args.images_dir or ""])
    table = load_from_args(args)
    if args.split:
        table = split_table(table, tuple(args.split_ratios), seed=args.seed, keep_existing=not args.resplit)
    print(format_report(table))
    paths = write_report(table, args.out)
    if args.split:
        paths["splits.csv"] = os.path.join(args.out, "splits.csv")
        save_splits(table, paths["splits.csv"])
    print("\nWrote " + ", ".join(paths.values()))
    return 0
