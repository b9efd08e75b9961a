"""tf.distribute: MirroredStrategy over two logical CPU devices trains like the default strategy."""

import json
import os
import subprocess
import sys

from helpers import write_blob_dataset

HERE = os.path.dirname(__file__)


def run(data_dir, runs_dir, strategy) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE)}
    result = subprocess.run([sys.executable, os.path.join(HERE, "strategy_run.py"), data_dir, runs_dir, strategy],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mirrored_over_two_logical_cpus_trains_like_the_default(tmp_path):
    data_dir = write_blob_dataset(str(tmp_path / "data"), n_per_class=40, size=32)
    default = run(data_dir, str(tmp_path / "runs"), "default")
    mirrored = run(data_dir, str(tmp_path / "runs"), "mirrored")
    assert (default["replicas"], mirrored["replicas"]) == (1, 2)
    assert default["best_val_auc"] > 0.9 and mirrored["best_val_auc"] > 0.9, (default, mirrored)
