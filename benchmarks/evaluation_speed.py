"""Evaluation speed: bootstrap CIs and Grad-CAM, each printed against its reference measured in the same run.

    python benchmarks/evaluation_speed.py [--n 10000] [--resamples 1000] [--size 224] [--batch 32]

1. Bootstrap: 1,000 resamples of ROC-AUC, sensitivity, specificity and F1 over 10,000 binary predictions
   (`evaluate_scores`' vectorised bootstrap) against a loop of scikit-learn `roc_auc_score` calls on the same
   resamples (a subset, extrapolated). Target: at most 2 s.
2. Grad-CAM of a batch at 224 px on EfficientNetB0 (random weights) against one forward plus backward pass of
   the same batch through the same model. Target: ratio at most 2.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from cxr_keras.evaluate.gradcam import compute_cams
from cxr_keras.evaluate.metrics import _bootstrap, as_columns, bootstrap_weights, predictions
from cxr_keras.models.factory import build_model


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bootstrap_speed(n: int, resamples: int) -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, n)
    scores = np.clip(0.3 * y_true + rng.uniform(0, 0.7, n), 0, 1)
    y, s = as_columns("binary", y_true, scores)
    pred = predictions("binary", s, 0.5)
    ours = best_of(lambda: _bootstrap("binary", y, s, pred, resamples, 0, 0.95))
    weights = bootstrap_weights(n, 50, 0)
    loop = best_of(lambda: [roc_auc_score(y_true, scores, sample_weight=w) for w in weights], 1) * resamples / 50
    print(f"bootstrap, {resamples} resamples x {n:,} predictions: {ours:.2f} s (target <= 2 s: "
          f"{'met' if ours <= 2 else 'NOT met'}); scikit-learn loop of roc_auc_score alone {loop:.1f} s "
          f"(extrapolated from 50) = {loop / ours:.1f}x slower")


def gradcam_speed(size: int, batch: int) -> None:
    model = build_model("efficientnetb0", "binary", ["NORMAL", "PNEUMONIA"], size)
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 1)).astype("float32"))

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=False))
        return tape.gradient(loss, model.trainable_variables)

    forward_backward(x)
    compute_cams(model, x.numpy(), batch_size=batch)  # warm-up
    reference = best_of(lambda: forward_backward(x))
    for method in ("gradcam", "gradcam++"):
        seconds = best_of(lambda m=method: compute_cams(model, x.numpy(), m, batch_size=batch))
        print(f"{method}, batch {batch} at {size} px on EfficientNetB0: {seconds:.2f} s; forward + backward "
              f"{reference:.2f} s; ratio {seconds / reference:.2f} (target <= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    bootstrap_speed(args.n, args.resamples)
    gradcam_speed(args.size, args.batch)


if __name__ == "__main__":
    main()
