"""MultiWorkerMirroredStrategy: two real worker processes on 127.0.0.1 train one run; TF_CONFIG faults are one
line. Ports are free ones, every process is bounded in time and ended by the test."""

import json
import os
import socket
import subprocess
import sys

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


def train_args(data: str, run_dir: str, strategy: str) -> list[str]:
    return ["train", "--data-dir", data, "--backbone", "baseline", "--weights", "none", "--image-size", "32",
            "--epochs", "3", "--split-ratios", "0.7", "0.3", "0", "--strategy", strategy, "--run-dir", run_dir,
            "--quiet"]


def test_two_workers_train_one_run_that_the_chief_writes(tmp_path):
    data = write_blob_dataset(str(tmp_path / "data"), n_per_class=30, size=32, seed=4)
    addresses = [f"127.0.0.1:{p}" for p in free_ports(2)]
    workers = []
    try:
        for index in range(2):
            config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONPATH": ROOT}
            args = train_args(data, str(tmp_path / f"run{index}"), "multiworker")
            workers.append(subprocess.Popen([sys.executable, "-m", "cxr_keras.cli", *args], env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [w.communicate(timeout=300)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert [w.returncode for w in workers] == [0, 0], [o[-2000:] for o in outputs]
    assert not (tmp_path / "run1").exists()  # only the chief writes a run folder
    state = json.load(open(tmp_path / "run0" / "state.json"))
    assert state["complete"] and state["epoch"] == 3
    from cxr_keras.models.saving import load_model

    load_model(str(tmp_path / "run0" / "best.keras"))
    assert main(train_args(data, str(tmp_path / "single"), "default")) == 0
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
