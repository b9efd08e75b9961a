"""Write a synthetic binary chest X-ray dataset and report on it: the data layer end to end.

    python -m experiments.data_report_sample [--out runs/sample-data] [--patients 120] [--size 128]

Stands in for the main job (`experiments.efficientnet_finetune`) until training lands.
"""

from __future__ import annotations

import argparse
import os
import shutil

from cxr_keras.data.pipeline import dataset_for_split
from cxr_keras.data.report import format_report, write_report
from cxr_keras.data.sources import load_dataset
from cxr_keras.data.splits import save_splits, split_table
from cxr_keras.data.synthetic import write_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("runs", "sample-data"), help="folder to (re)write")
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data_dir = os.path.join(args.out, "data")
    shutil.rmtree(data_dir, ignore_errors=True)  # this folder is ours: regenerate it from the seed
    write_dataset(data_dir, "binary", n_patients=args.patients, size=args.size, seed=args.seed)
    table = split_table(load_dataset(data_dir), (0.7, 0.15, 0.15), seed=args.seed)
    print(format_report(table))
    report_dir = os.path.join(args.out, "report")
    paths = write_report(table, report_dir)
    save_splits(table, os.path.join(report_dir, "splits.csv"))
    images, targets = next(iter(dataset_for_split(table, "train", (args.size, args.size), 16,
                                                  training=True, augment="standard", seed=args.seed)))
    print(f"\nFirst training batch: images {tuple(images.shape)} {images.dtype.name} "
          f"in [{float(images.numpy().min()):.0f}, {float(images.numpy().max()):.0f}], targets {tuple(targets.shape)}")
    print(f"Data in {data_dir}; report in {', '.join(paths.values())}")


if __name__ == "__main__":
    import sys

    from cxr_keras.cli.errors import report_errors

    sys.exit(report_errors(main))
