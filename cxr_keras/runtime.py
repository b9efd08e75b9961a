"""Process-wide training settings: seeds and op determinism, mixed precision, tf.distribute strategies."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Iterator

import keras
import tensorflow as tf

from cxr_keras.choices import STRATEGIES  # noqa: F401  (re-exported: the one list, read without TensorFlow)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, make TensorFlow ops deterministic too."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


_STRATEGIES: dict[str, tf.distribute.Strategy] = {}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """A tf.distribute strategy by name (made once per process and reused).

    auto: MirroredStrategy when more than one GPU is visible, else the default. mirrored: over every GPU, or
    over the logical CPU devices when there is no GPU. multiworker: MultiWorkerMirroredStrategy from TF_CONFIG;
    it must be made before TensorFlow runs any op (run_experiment makes it first), so it is made before anything
    here asks TensorFlow for its devices.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name in _STRATEGIES:
        return _STRATEGIES[name]
    if name == "multiworker":
        cluster_spec()  # one clear line for a missing or malformed TF_CONFIG, before TensorFlow's own errors
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as exc:
            if "must be configured at program startup" in str(exc):
                raise RuntimeError("strategy multiworker must be created before TensorFlow runs any op: call "
                                   "run_experiment (or make_strategy('multiworker')) first in the process") from None
            raise
    else:
        gpus = tf.config.list_logical_devices("GPU")
        if name == "auto":
            name = "mirrored" if len(gpus) > 1 else "default"
        if name == "default":
            return tf.distribute.get_strategy()
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    _STRATEGIES[name] = strategy
    return strategy


def cluster_spec() -> dict:
    """TF_CONFIG, checked: {"cluster": {"worker": ["host:port", ...], "chief": [...]?}, "task": {"type", "index"}}.
    Each fault is one line that names what to fix."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError("strategy multiworker needs TF_CONFIG in the environment, e.g. TF_CONFIG='{\"cluster\": "
                         "{\"worker\": [\"host1:23456\", \"host2:23456\"]}, \"task\": {\"type\": \"worker\", "
                         "\"index\": 0}}' (docs/training.md, Scale)")
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos})") from None
    cluster, task = (spec.get("cluster"), spec.get("task")) if isinstance(spec, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise ValueError('TF_CONFIG needs "cluster" with a "worker" list of "host:port" addresses')
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(f'TF_CONFIG "task" must name a type of the cluster ({", ".join(cluster)}) and an index')
    for role, addresses in cluster.items():
        if not isinstance(addresses, list):
            raise ValueError(f'TF_CONFIG cluster "{role}" must be a list of "host:port" addresses, got {addresses!r}')
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"TF_CONFIG {role} address {address!r} is not host:port")
    members = cluster[task["type"]]
    if not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(members):
        raise ValueError(f'TF_CONFIG task index {task.get("index")!r} is out of range for the {len(members)} '
                         f'{task["type"]} address(es)')
    return spec


def is_chief() -> bool:
    """Whether this process writes the run folder: always without TF_CONFIG; with it, the chief, or worker 0
    when the cluster has no chief (TensorFlow's rule)."""
    if not os.environ.get("TF_CONFIG"):
        return True
    spec = cluster_spec()
    task = spec["task"]
    return task["type"] == "chief" or (task["type"] == "worker" and task["index"] == 0
                                       and "chief" not in spec["cluster"])


@contextlib.contextmanager
def precision(mixed: bool) -> Iterator[None]:
    """Use Keras' mixed_float16 policy inside the block (mixed_bfloat16 without a GPU); restore it after."""
    previous = keras.config.dtype_policy()
    if mixed:
        keras.config.set_dtype_policy("mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def versions() -> dict[str, str]:
    """Versions that decide whether a run can be repeated."""
    import cxr_keras

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "cxr_keras": cxr_keras.__version__, "platform": platform.platform()}
