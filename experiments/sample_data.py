"""Generated sample data for experiments run without `--data-dir`: a synthetic chest X-ray dataset, written
once per (task, patients, size, seed) under runs/sample-data/ and reused afterwards."""

from __future__ import annotations

import os

from cxr_keras.data.synthetic import write_dataset

SAMPLE_ROOT = os.path.join("runs", "sample-data")


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
