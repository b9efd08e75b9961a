"""Run by test_strategy.py in a fresh process: TensorFlow's logical devices must be set before it starts.

    python tests/strategy_run.py DATA_DIR RUNS_DIR STRATEGY   -> prints one JSON line
"""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig  # noqa: E402
from cxr_keras.runtime import make_strategy  # noqa: E402
from cxr_keras.train import run_experiment  # noqa: E402

data_dir, runs_dir, strategy = sys.argv[1:4]
config = ExperimentConfig(
    name=strategy, runs_dir=runs_dir,
    data=DataConfig(data_dir=data_dir, image_size=32, batch_size=16, augment="none", split_ratios=(0.8, 0.1, 0.1)),
    model=ModelConfig(backbone="baseline", weights="none"),
    train=TrainConfig(stages=[StageConfig(epochs=4, trainable="all")], strategy=strategy, tensorboard=False),
)
run_dir = run_experiment(config, quiet=True)
with open(f"{run_dir}/state.json") as f:
    state = json.load(f)
print(json.dumps({"replicas": make_strategy(strategy).num_replicas_in_sync, "best_val_auc": state["best"]}))
