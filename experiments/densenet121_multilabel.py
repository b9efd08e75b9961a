"""DenseNet121 on multi-label findings (NIH ChestX-ray14 style): one sigmoid per finding, per-label positive
weights in the loss (Keras' class_weight cannot weigh multi-label targets), macro AUC over findings.

    python -m experiments.densenet121_multilabel --data-dir ../shared/datasets/darkcovidnet \\
        --csv ../shared/datasets/nih-metadata/Data_Entry_2017_v2020.csv

With the NIH CSV, rows whose image is not under --data-dir are left out (and counted); splits are grouped by
`Patient ID` and stratified by each image's rarest finding.
"""

from __future__ import annotations

from cxr_keras.cli.train_options import run_from_args
from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from experiments.sample_data import parse_args

CONFIG = ExperimentConfig(
    name="densenet121_multilabel",
    data=DataConfig(image_size=224, batch_size=32, augment="light", split_ratios=(0.7, 0.1, 0.2)),
    model=ModelConfig(backbone="densenet121", weights="auto", dropout=0.2),
    train=TrainConfig(balance="pos_weight", max_pos_weight=10.0, stages=[
        StageConfig(name="head", epochs=3, trainable="head", learning_rate=1e-3),
        StageConfig(name="finetune", epochs=5, trainable="from:conv5", learning_rate=1e-4, warmup_epochs=0.5,
                    schedule="cosine"),
    ]),
)
SAMPLE = {"image_size": 64, "batch_size": 16, "epochs": [2, 3], "split_ratios": (0.7, 0.15, 0.15)}


def main(argv: list[str] | None = None) -> str | None:
    return run_from_args(parse_args("densenet121_multilabel", __doc__, argv, SAMPLE, task="multilabel"), CONFIG)


if __name__ == "__main__":
    import sys

    from cxr_keras.cli.errors import report_errors

    sys.exit(report_errors(main))
