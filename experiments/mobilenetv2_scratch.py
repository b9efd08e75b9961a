"""MobileNetV2 trained from scratch (random weights, one all-trainable stage): no download, no pretrained weights.

    python -m experiments.mobilenetv2_scratch --data-dir ../shared/datasets/kermany/train

The toolkit's from-scratch path: BatchNorm momentum 0.9, BatchNorm statistics recalibrated on training batches
before every validation, one epoch of learning-rate warm-up then cosine decay, inputs standardised with the
training pixels' mean and std. See docs/training.md for why plain Keras fails here.
"""

from __future__ import annotations

from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from cxr_keras.train_cli import run_from_args
from experiments.sample_data import parse_args

CONFIG = ExperimentConfig(
    name="mobilenetv2_scratch",
    data=DataConfig(image_size=128, batch_size=32, augment="standard", split_ratios=(0.8, 0.1, 0.1)),
    model=ModelConfig(backbone="mobilenetv2", weights="none", dropout=0.2),
    train=TrainConfig(stages=[StageConfig(name="scratch", epochs=12, trainable="all", learning_rate=1e-3,
                                          warmup_epochs=1, schedule="cosine")]),
)
SAMPLE = {"image_size": 96, "batch_size": 16, "epochs": [8], "split_ratios": (0.7, 0.15, 0.15)}


def main(argv: list[str] | None = None) -> str | None:
    return run_from_args(parse_args("mobilenetv2_scratch", __doc__, argv, SAMPLE), CONFIG)


if __name__ == "__main__":
    main()
