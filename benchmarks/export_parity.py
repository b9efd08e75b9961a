"""Export parity against the issue's targets: every format of trained runs, measured on their validation split.

    python benchmarks/export_parity.py RUN_DIR [RUN_DIR ...] [--threads 2] [--out runs/export_parity]

For each run (a binary model made by `cxr train` / `experiments.kermany_scratch`): SavedModel and TFLite fp32,
fp16, dynamic-range, int8 and int8-mixed, calibrated on 200 training images, the parity report on the run's
validation images with each artifact's own threshold recalibrated (`cxr export --recalibrate-threshold`), then
each target printed beside the Keras model's figure from the same run:

    fp32 max |dp| <= 1e-4; fp16 max |dp| <= 1e-2; int8 ROC-AUC drop <= 0.01 and sensitivity drop <= 0.02 at the
    same threshold; int8 size <= 30% of fp32; int8 mean latency <= 0.6x fp32 TFLite.
"""

from __future__ import annotations

import argparse
import json
import os

from cxr_keras.export import FORMATS, export_model, parity_for_table
from cxr_keras.io_utils import atomic_writer
from cxr_keras.run_folder import run_table


def targets(report: dict, int8: str) -> list[tuple[str, float, float, bool]]:
    """(what, measured, limit, met) for each target; `int8` is the artifact judged as int8."""
    a = report["artifacts"]
    k, q, f32 = a["keras"], a[int8], a["tflite-fp32"]
    checks = [("fp32 max |dp|", f32["max_abs_dp"], 1e-4), ("fp16 max |dp|", a["tflite-fp16"]["max_abs_dp"], 1e-2),
              (f"{int8} ROC-AUC drop", k["roc_auc"] - q["roc_auc"], 0.01),
              (f"{int8} sensitivity drop", k["sensitivity"] - q["sensitivity"], 0.02),
              (f"{int8} size / fp32", q["bytes"] / f32["bytes"], 0.30),
              (f"{int8} latency / fp32", q["mean_ms"] / f32["mean_ms"], 0.60)]
    return [(what, value, limit, value <= limit) for what, value, limit in checks]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders with best.keras and splits.csv")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join("runs", "export_parity"))
    args = parser.parse_args(argv)
    results = {}
    for run_dir in args.runs:
        table = run_table(run_dir)
        best = os.path.join(run_dir, "best.keras")
        out = os.path.join(args.out, os.path.basename(run_dir.rstrip(os.sep)))
        card = export_model(best, out, list(FORMATS), table.split("train").paths, 200)
        report = parity_for_table(best, out, table.split("val"), args.threads, recalibrate=True)
        print(f"\n{card['backbone']} ({os.path.basename(run_dir)}), {report['n_images']} validation images, "
              f"{card['input']['shape'][1]} px:")
        print(open(os.path.join(out, "README.md")).read().split("\n\n", 3)[-1])
        results[run_dir] = {}
        for int8 in ("tflite-int8", "tflite-int8-mixed"):
            checks = targets(report, int8)
            results[run_dir][int8] = [dict(zip(("what", "measured", "limit", "met"), c)) for c in checks]
            for what, value, limit, met in checks:
                print(f"  {what:<34} {value:10.4g}  target <= {limit:g}  {'met' if met else 'NOT met'}")
    os.makedirs(args.out, exist_ok=True)
    with atomic_writer(os.path.join(args.out, "targets.json")) as f:
        json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
