"""Sample data for experiments run without `--data-dir`: a synthetic chest X-ray dataset, written once per
(task, patients, size, seed) under runs/sample-data/ and reused afterwards; or the small real Kermany sample that
ships in experiments/data/ (480 pediatric X-rays at 128 px, CC BY 4.0; see docs/data.md)."""

from __future__ import annotations

import os

from cxr_keras.data.synthetic import write_dataset

SAMPLE_ROOT = os.path.join("runs", "sample-data")
KERMANY_SAMPLE = os.path.join(os.path.dirname(__file__), "data", "kermany-sample.zip")


def sample_dataset(task: str = "binary", n_patients: int = 120, size: int = 128, seed: int = 0) -> str:
    """Path of the sample dataset, written first if it is not there yet."""
    folder = os.path.join(SAMPLE_ROOT, f"{task}-{n_patients}p-{size}px-seed{seed}")
    done = os.path.join(folder, ".complete")
    if not os.path.exists(done):
        import shutil

        shutil.rmtree(folder, ignore_errors=True)  # a half-written folder from an interrupted earlier call
        write_dataset(folder, task, n_patients=n_patients, size=size, seed=seed)
        open(done, "w").close()
        print(f"Wrote generated sample data ({task}, {n_patients} patients, {size} px) to {folder}")
    return folder


def kermany_sample() -> str:
    """The embedded real sample, unpacked once under runs/sample-data/ (atomically: a whole folder or none)."""
    import tempfile
    import zipfile

    from cxr_keras.io_utils import publish_mode

    folder = os.path.join(SAMPLE_ROOT, "kermany-sample")
    if not os.path.isdir(folder):
        os.makedirs(SAMPLE_ROOT, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=SAMPLE_ROOT, prefix=".kermany-sample-")
        with zipfile.ZipFile(KERMANY_SAMPLE) as archive:
            archive.extractall(tmp)
        publish_mode(tmp, folder)
        os.replace(os.path.join(tmp, "kermany-sample"), folder)
        os.rmdir(tmp)
        print(f"Unpacked the embedded Kermany sample (240 NORMAL, 240 PNEUMONIA, 128 px) to {folder}")
    return folder


def parse_args(prog: str, doc: str, argv: list[str] | None, sample: dict, task: str = "binary", extra=None):
    """Parse the `cxr train` options; without --data-dir (or --config/--resume) point them at sample data
    (`sample["data"]`: "synthetic", the default, or "kermany-sample") and apply `sample`'s small defaults
    (image_size, epochs...) wherever the command line is silent. `extra(parser)` may add experiment options."""
    import argparse

    from cxr_keras.cli.train_options import add_train_arguments

    where = ("the embedded real Kermany sample (480 X-rays, 128 px)" if sample.get("data") == "kermany-sample" else
             f"generated {task} sample data")
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{prog}", description=doc.split("\n\n")[0],
                                     epilog=f"Without --data-dir it runs on {where}.")
    add_train_arguments(parser)
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    if args.data_dir and not args.print_config and not os.path.isdir(args.data_dir):  # before weights are sought
        parser.exit(2, f"error: --data-dir {args.data_dir} is not a folder; give the folder that holds the images\n")
    if not (args.data_dir or args.config or args.resume):
        if sample.get("data") == "kermany-sample":
            args.data_dir = kermany_sample()
        else:
            args.data_dir = sample_dataset(task, n_patients=sample.get("patients", 120), size=sample["image_size"])
        for key, value in sample.items():
            if key not in ("patients", "data") and getattr(args, key) is None:
                setattr(args, key, value)
    return args
