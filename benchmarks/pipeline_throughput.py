"""Pipeline throughput: this toolkit's tf.data pipeline against `keras.utils.image_dataset_from_directory`.

    python benchmarks/pipeline_throughput.py [--data-dir ../shared/datasets/kermany/train] [--size 224]

Both sides read the same folder at the same size and batch, shuffle, and apply the `standard` augmentation
(the same ChestXrayAugment layer; the Keras side also runs once with the equivalent chain of stock Keras
layers). Timed: epochs 2-4 (median), as a training run sees them. Printed: images/s of each, their ratio, the
cache's memory against N x H x W bytes, and the warp alone in OpenCV (what the layer runs) against TensorFlow's
op (what Keras' layers run). Target: ratio >= 3 on 2 cores; cache growth within 10% of N x H x W.

The cache saves the decode, so against the same layer the ratio is 1 + decode time / augmentation time: try
full-size radiographs (e.g. --data-dir ../shared/datasets/darkcovidnet) as well as the Kermany copy, whose
JPEGs are already 224 px and decode in about 70 us each.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import keras
import tensorflow as tf

from cxr_keras.data.augment import PRESETS, ChestXrayAugment
from cxr_keras.data.pipeline import make_dataset
from cxr_keras.data.sources import load_dataset

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "kermany", "train")


def steady_epoch_rate(ds: tf.data.Dataset, epochs: int = 3) -> float:
    """Images per second after a first full pass of `ds`: the median over `epochs` further passes (one pass of a
    small dataset is too short to time alone)."""
    for _ in ds:
        pass
    rates = []
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for x, _ in ds:
            n += int(x.shape[0])
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def warp_milliseconds(layer: ChestXrayAugment, size: int, batch: int, repeats: int = 20) -> tuple[float, float]:
    """Milliseconds per batch of the layer's geometry: OpenCV's warpAffine (what the layer runs) against
    TensorFlow's ImageProjectiveTransformV3 (what Keras' geometric layers run) on the same matrices."""
    import numpy as np

    from cxr_keras.data.augment import _tone_and_warp

    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 1)).astype(np.uint8)
    matrices = layer._matrices(tf.constant(images), tf.constant([0, 1]))
    transforms = tf.concat([tf.reshape(matrices, [batch, 6]), tf.zeros([batch, 2])], axis=1)
    floats = tf.constant(images, tf.float32)
    no_tone = np.zeros((batch, 0), np.float32)
    tensorflow_warp = tf.function(lambda: tf.raw_ops.ImageProjectiveTransformV3(
        images=floats, transforms=transforms, output_shape=[size, size], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT"))
    timings = []
    for run in (lambda: _tone_and_warp(images, matrices.numpy(), no_tone, 0.0), lambda: tensorflow_warp().numpy()):
        run()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        timings.append((time.perf_counter() - start) / repeats * 1000)
    return timings[0], timings[1]


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    size = (args.size, args.size)

    table = load_dataset(args.data_dir)
    print(f"{len(table):,} images in {args.data_dir} ({table.layout}), {args.size} px, batch {args.batch}, "
          f"{os.cpu_count()} CPU cores")

    before = rss_mib()
    start = time.perf_counter()
    ours = make_dataset(table.paths, table.targets(), size, args.batch, training=True, augment="standard", seed=0)
    build = time.perf_counter() - start
    expected = len(table) * args.size * args.size / 2**20
    print(f"cxr_keras: decoded into the cache in {build:.1f} s; measured: peak RSS grew by "
          f"{rss_mib() - before:.0f} MiB while building (N x H x W uint8 would be {expected:.1f} MiB)")
    ours_rate = steady_epoch_rate(ours)

    fused = ChestXrayAugment(**PRESETS["standard"], seed=0)
    p = PRESETS["standard"]
    stock = keras.Sequential([
        keras.layers.RandomRotation(p["rotation"] / 360, fill_mode="constant", seed=0),
        keras.layers.RandomZoom(p["zoom"], fill_mode="constant", seed=0),
        keras.layers.RandomTranslation(p["shift"], p["shift"], fill_mode="constant", seed=0),
        keras.layers.RandomBrightness(p["brightness"], value_range=(0, 255), seed=0),
        keras.layers.RandomContrast(p["contrast"], value_range=(0, 255), seed=0),
    ])
    rates = {}
    for name, layer in (("same ChestXrayAugment layer", fused), ("stock Keras layer chain", stock)):
        baseline = keras.utils.image_dataset_from_directory(
            args.data_dir, color_mode="grayscale", image_size=size, batch_size=args.batch, shuffle=True, seed=0,
            verbose=False,
        ).map(lambda x, y, layer=layer: (layer(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        rates[name] = steady_epoch_rate(baseline.prefetch(tf.data.AUTOTUNE))

    print(f"\n{'pipeline':58s} {'images/s':>9s} {'ratio':>6s}")
    print(f"{'cxr_keras make_dataset (memory cache, standard)':58s} {ours_rate:9.0f} {1:6.2f}")
    for name, rate in rates.items():
        print(f"{'image_dataset_from_directory + ' + name:58s} {rate:9.0f} {rate / ours_rate:6.2f}")
    for name, rate in rates.items():
        print(f"speed-up over image_dataset_from_directory + {name}: {ours_rate / rate:.2f}x (target >= 3x)")
    opencv, tensorflow = warp_milliseconds(fused, args.size, args.batch)
    print(f"one {args.batch} x {args.size} x {args.size} warp: OpenCV warpAffine (uint8) {opencv:.1f} ms, TensorFlow "
          f"ImageProjectiveTransformV3 (float32) {tensorflow:.1f} ms ({tensorflow / opencv:.1f}x)")


if __name__ == "__main__":
    main()
