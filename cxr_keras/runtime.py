"""Process-wide training settings: seeds and op determinism, mixed precision, tf.distribute strategies."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator

import keras
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, make TensorFlow ops deterministic too."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def make_strategy(name: str) -> tf.distribute.Strategy:
    """A tf.distribute strategy by name.

    auto: MirroredStrategy when more than one GPU is visible, else the default. mirrored: over every GPU, or
    over the logical CPU devices when there is no GPU. multiworker: MultiWorkerMirroredStrategy (reads TF_CONFIG).
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy multiworker needs TF_CONFIG (the cluster spec) in the environment")
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


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
