"""MultiWorkerMirroredStrategy: two real worker processes on 127.0.0.1 train one run; TF_CONFIG faults are one
line. Ports are free ones, every process is bounded in time and ended by the test."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers import write_blob_dataset

from cxr_keras.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def train_args(data: str, run_dir: str, strategy: str, epochs: int = 3) -> list[str]:
    return ["train", "--data-dir", data, "--backbone", "baseline", "--weights", "none", "--image-size", "32",
            "--epochs", str(epochs), "--split-ratios", "0.7", "0.3", "0", "--strategy", strategy, "--run-dir", run_dir,
            "--quiet"]


def start_workers(args_of, addresses: list[str], tmp: str) -> list[subprocess.Popen]:
    """One `cxr` process per address, worker `index` getting `args_of(index)`; temporary folders under `tmp` (a
    killed worker cannot remove its own)."""
    workers = []
    for index in range(len(addresses)):
        config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONPATH": ROOT, "TMPDIR": tmp}
        workers.append(subprocess.Popen([sys.executable, "-m", "cxr_keras.cli", *args_of(index)], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return workers


def end(workers: list[subprocess.Popen]) -> None:
    for w in workers:
        if w.poll() is None:
            w.kill()
            w.wait()


def test_two_workers_train_one_run_that_the_chief_writes_and_a_killed_pair_resumes(tmp_path):
    """A pair killed after an epoch; both given `--resume` of the chief's folder finish the run in it, as well as
    a single process does, and no second run folder is ever made."""
    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=30, size=32, seed=4)
    run = tmp_path / "run0"
    epochs, workers = 4, []
    try:
        workers = start_workers(lambda index: train_args(data, str(tmp_path / f"run{index}"), "multiworker", epochs),
                                [f"127.0.0.1:{p}" for p in free_ports(2)], str(tmp_path))
        deadline = time.monotonic() + 300
        while not (run / "state.json").exists() and time.monotonic() < deadline and workers[0].poll() is None:
            time.sleep(0.05)
        end(workers)
        killed_at = json.load(open(run / "state.json"))
        assert not killed_at.get("complete") and 1 <= killed_at["epoch"] < epochs, killed_at

        workers = start_workers(lambda index: ["train", "--resume", str(run), "--quiet"],
                                [f"127.0.0.1:{p}" for p in free_ports(2)], str(tmp_path))
        outputs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        end(workers)
    assert [w.returncode for w in workers] == [0, 0], [o[-2000:] for o in outputs]
    assert not (tmp_path / "run1").exists()  # only the chief writes a run folder
    state = json.load(open(run / "state.json"))
    assert state["complete"] and state["epoch"] > killed_at["epoch"], state
    with open(run / "history.csv") as f:
        rows = [int(float(line.split(",", 1)[0])) for line in f.readlines()[1:]]
    assert rows == list(range(state["epoch"])), rows  # one row per epoch, none lost or repeated by the kill
    from cxr_keras.models.saving import load_model

    load_model(str(run / "best.keras"))
    assert main(train_args(data, str(tmp_path / "single"), "default", epochs)) == 0
    single = json.load(open(tmp_path / "single" / "state.json"))
    assert state["best"] >= single["best"] - 0.05, (state, single)


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs TF_CONFIG"),
    ("{bad", "not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "out of range"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "is not host:port"),
    ('{"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker", "index": 0}}', "must be a list"),
])
def test_tf_config_faults_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=4, size=16, seed=0)
    assert main(train_args(data, str(tmp_path / "run"), "multiworker")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "run").exists()


def test_a_worker_that_cannot_read_the_chiefs_folder_says_so(tmp_path):
    from cxr_keras.run_folder import RunError
    from cxr_keras.run_folder import copy_resume_point as _copy_resume_point

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(RunError, match=r"cannot read splits.csv, state.json, last.keras there; every worker resumes"):
        _copy_resume_point(str(tmp_path / "run"), str(tmp_path))
