"""The from-scratch BatchNorm trap, measured: why a from-scratch MobileNetV2 can score AUC 0.99 in `fit` and
0.50 in inference, and what the toolkit's defaults change.

    python benchmarks/scratch_batchnorm.py --data-dir ../shared/datasets/kermany/train [--epochs 3] [--size 128]

Same seeded, patient-grouped 80/20 split, same data order, same epochs for each variant:
  keras-default   BN momentum 0.999 (as keras.applications.MobileNetV2 builds it)
  momentum-0.9    the toolkit's from-scratch default
For each, validation ROC-AUC and the spread of predictions in inference mode (moving statistics), with batch
statistics (training-mode BN), and in inference mode after `recalibrate_batchnorm`.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from cxr_keras.data.balance import class_weights
from cxr_keras.data.pipeline import dataset_for_split
from cxr_keras.data.sources import load_dataset
from cxr_keras.data.splits import split_table
from cxr_keras.models.factory import build_model, loss_for, metrics_for
from cxr_keras.models.finetune import recalibrate_batchnorm


def predict(model, dataset, training: bool) -> np.ndarray:
    return np.concatenate([np.asarray(model(x, training=training)) for x, _ in dataset]).ravel()


def describe(name: str, y: np.ndarray, p: np.ndarray) -> str:
    spread = f"std {p.std():.4f} range [{p.min():.3f}, {p.max():.3f}]"
    return f"{name:<28} AUC {roc_auc_score(y, p):.3f}   predictions {spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="mobilenetv2")
    args = parser.parse_args()

    table = split_table(load_dataset(args.data_dir), (0.8, 0.2, 0.0), seed=42, keep_existing=False)
    size = (args.size, args.size)
    y_val = table.split("val").targets().ravel()
    for name, momentum in (("keras-default", 0.999 if args.backbone == "mobilenetv2" else 0.99), ("momentum-0.9", 0.9)):
        keras.utils.set_random_seed(0)
        train = dataset_for_split(table, "train", size, args.batch_size, training=True, augment="light", seed=0)
        val = dataset_for_split(table, "val", size, args.batch_size)
        model = build_model(args.backbone, "binary", table.classes, size, "none", bn_momentum=momentum)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_for("binary"), metrics=metrics_for("binary", 1))
        start = time.perf_counter()
        history = model.fit(train, epochs=args.epochs, class_weight=class_weights(table.split("train").targets(),
                            table.classes), verbose=2)
        print(f"\n== {name} (BN momentum {momentum}): {args.epochs} epochs in {time.perf_counter() - start:.0f} s, "
              f"training AUC in fit {history.history['auc'][-1]:.3f}")
        print(describe("inference (moving stats)", y_val, predict(model, val, False)))
        print(describe("batch statistics", y_val, predict(model, val, True)))
        recalibrate_batchnorm(model, train, 50)
        print(describe("inference, recalibrated", y_val, predict(model, val, False)))


if __name__ == "__main__":
    main()
