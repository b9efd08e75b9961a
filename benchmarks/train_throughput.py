"""Training throughput: a toolkit run against plain `model.fit` of the same Keras application, same input.

    python benchmarks/train_throughput.py [--data-dir ../shared/datasets/kermany/train] [--backbone mobilenetv2]
                                          [--size 128] [--batch-size 32] [--epochs 2]

Both train from random weights on the same tf.data pipeline (same split, cache, augmentation) with validation
each epoch; images/s is training images over the wall time of the last epoch (tracing excluded):
  plain      Input -> gray to RGB -> Rescaling -> keras.applications.<Backbone> (nested) -> GAP -> Dense, `fit`
  toolkit    `run_experiment` (flat model, CSVLogger, TensorBoard, atomic checkpoints, BatchNorm recalibration)
  toolkit-norecal   the same without BatchNorm recalibration
  plain-again      plain once more, last, to show drift between the first and the last measurement
Target: toolkit / plain >= 0.95.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import keras

from cxr_keras.config import DataConfig, ExperimentConfig, ModelConfig, StageConfig, TrainConfig
from cxr_keras.data.balance import class_weights
from cxr_keras.data.pipeline import dataset_for_split
from cxr_keras.data.sources import load_dataset
from cxr_keras.data.splits import split_table
from cxr_keras.models.factory import metrics_for
from cxr_keras.models.registry import get_backbone
from cxr_keras.train import run_experiment


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.perf_counter() - self.start


def plain_fit(table, args) -> float:
    size = (args.size, args.size)
    train = dataset_for_split(table, "train", size, args.batch_size, training=True, augment="standard", seed=0)
    val = dataset_for_split(table, "val", size, args.batch_size)
    inputs = keras.Input((*size, 1))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(keras.layers.Concatenate()([inputs] * 3))
    base = get_backbone(args.backbone).constructor(include_top=False, weights=None, input_shape=(*size, 3))
    x = keras.layers.Dropout(0.2)(keras.layers.GlobalAveragePooling2D()(base(x)))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=metrics_for("binary", 1))
    timer = EpochTimer()
    weights = class_weights(table.split("train").targets(), table.classes)
    model.fit(train, validation_data=val, epochs=args.epochs, class_weight=weights, callbacks=[timer], verbose=2)
    return timer.last


def toolkit_fit(args, recalibrate: str) -> float:
    timer = EpochTimer()
    config = ExperimentConfig(
        name="throughput", runs_dir=tempfile.mkdtemp(prefix="cxr-bench-"),
        data=DataConfig(data_dir=args.data_dir, image_size=args.size, batch_size=args.batch_size,
                        augment="standard", split_ratios=(0.8, 0.2, 0.0), resplit=True),
        model=ModelConfig(backbone=args.backbone, weights="none"),
        train=TrainConfig(stages=[StageConfig(epochs=args.epochs, trainable="all")], recalibrate_bn=recalibrate),
    )
    run_experiment(config, callbacks=[timer])
    return timer.last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="dataset folder (default: generated sample data, 300 patients)")
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if not args.data_dir:
        from cxr_keras.data.synthetic import write_dataset

        args.data_dir = write_dataset(tempfile.mkdtemp(prefix="cxr-bench-data-"), "binary", 300, args.size)
    table = split_table(load_dataset(args.data_dir), (0.8, 0.2, 0.0), seed=42, keep_existing=False)
    n = len(table.split("train"))
    seconds = {"plain": plain_fit(table, args), "toolkit": toolkit_fit(args, "auto"),
               "toolkit-norecal": toolkit_fit(args, "false"), "plain-again": plain_fit(table, args)}
    print(f"\n{args.backbone} {args.size}px batch {args.batch_size}, {n} training images, epoch {args.epochs}:")
    plain = (seconds["plain"] + seconds["plain-again"]) / 2
    for name, s in seconds.items():
        print(f"  {name:<16} {n / s:7.1f} images/s ({s:.1f} s, validation included)   "
              f"ratio to plain (mean of both plain runs) {plain / s:.3f}")


if __name__ == "__main__":
    main()
