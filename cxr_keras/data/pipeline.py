"""The tf.data pipeline: decode once into a uint8 cache, shuffle per epoch with a seed, batch, augment, prefetch.

Models receive raw (B, H, W, 1) float32 pixels in 0..255; normalisation lives inside the model.

Caches: `cache="memory"` decodes every image once into one (N, H, W, 1) uint8 tensor and batches are
gathered from it by shuffled index, so memory is N x H x W bytes (a tf.data shuffle buffer of images would
hold a second copy); `cache="disk"` does the same from a file (data/disk_cache.py: data larger
than RAM, the same batches for the same seed); `cache="auto"` picks memory when it fits the memory budget,
else disk, and says which. `cache="/some/file"` uses tf.data's file cache, with a bounded shuffle buffer;
`cache=None` decodes every epoch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cxr_keras.data import disk_cache
from cxr_keras.data.augment import augmenter
from cxr_keras.data.decode import TENSOR_ALIGNMENT, decode_all, load_image
from cxr_keras.data.table import ImageTable

AUTOTUNE = tf.data.AUTOTUNE
FILE_CACHE_SHUFFLE_BUFFER = 2048


def as_tensor_in_place(array: np.ndarray) -> tf.Tensor:
    """A tensor over the array's own memory (DLPack), so a cache of N x H x W bytes is not briefly held twice;
    `tf.constant` would copy it (twice, measured). Falls back to a copy for an array TensorFlow cannot alias."""
    if array.flags.c_contiguous and array.ctypes.data % TENSOR_ALIGNMENT == 0:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return tf.convert_to_tensor(array)


def make_dataset(
    paths: list[str],
    targets: np.ndarray,
    image_size: tuple[int, int],
    batch_size: int = 32,
    *,
    training: bool = False,
    augment: str = "none",
    seed: int = 0,
    cache: str | None = "memory",
    resize: str = "stretch",
    verbose: bool = False,
    cache_budget: int | None = None,
) -> tf.data.Dataset:
    """Batches of (images (B, H, W, 1) float32 0..255, targets float32).

    With `training`, rows are reshuffled every epoch and augmented with `augment`, both from `seed`: the same
    seed gives the same order and the same augmentations. Without it, order is kept and nothing is augmented.
    `cache_budget` (bytes) overrides the memory budget of `cache="auto"`.
    """
    if len(paths) == 0:
        raise ValueError("cannot build a dataset from zero images")
    targets = tf.constant(np.asarray(targets, dtype=np.float32))
    if cache == "auto":
        cache, why = disk_cache.choose(len(paths), image_size, cache_budget)
        if verbose:
            print(why)
    if cache in ("memory", "disk"):
        ds = tf.data.Dataset.range(len(paths))
        if training:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        if cache == "memory":
            images = as_tensor_in_place(decode_all(paths, image_size, resize, verbose))
            ds = ds.map(lambda i: (tf.gather(images, i), tf.gather(targets, i)))
        else:
            # one reader: parallel numpy_function calls contend for the GIL (measured: 15-16k img/s against
            # 21-22k for one reader at 224 px, 5k images on 2 cores; benchmarks/scale.py)
            ds = ds.map(_gather_from(disk_cache.open_cache(paths, image_size, resize, verbose=verbose), targets))
    else:
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, dtype=tf.string), targets)).map(
            lambda p, y: (load_image(p, image_size, resize), y), num_parallel_calls=AUTOTUNE, deterministic=True
        )
        if cache:  # one file set per data, split and labels: never another split's or a stale dataset's pixels
            ds = ds.cache(f"{cache}-{file_cache_key(paths, targets, image_size, resize)}")
        if training:
            ds = ds.shuffle(min(len(paths), FILE_CACHE_SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
    if training and augment != "none":
        ds = _augment(ds, augment, seed)  # on the uint8 batches; returns float32
    else:
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return ds.prefetch(AUTOTUNE)


def file_cache_key(paths: list[str], targets: tf.Tensor, image_size: tuple[int, int], resize: str) -> str:
    """What tf.data's file cache holds depends on: the files (path, size, mtime), decoding and the targets."""
    import hashlib

    digest = hashlib.sha256(disk_cache.cache_key(paths, image_size, resize).encode())
    digest.update(np.ascontiguousarray(targets.numpy()).tobytes())
    return digest.hexdigest()[:16]


def _gather_from(images, targets: tf.Tensor):
    """A batch-of-indices -> (images, targets) map over a disk cache (`disk_cache.CacheFile`, read outside the
    graph)."""
    shape = (None, *images.shape[1:])

    def gather(indices):
        batch = tf.numpy_function(images.read, [indices], tf.uint8, stateful=False)
        return tf.ensure_shape(batch, shape), tf.gather(targets, indices)

    return gather


def _augment(ds: tf.data.Dataset, preset: str, seed: int) -> tf.data.Dataset:
    """Apply a preset on batches with one stateless seed per batch (a new stream every epoch)."""
    layer = augmenter(preset, seed)  # not None: make_dataset calls this only for a preset other than "none"
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(ds, seeds).map(
        lambda batch, s: (layer(batch[0], seed=s), batch[1]), num_parallel_calls=AUTOTUNE, deterministic=True
    )


def datasets_for_run(table: ImageTable, data, seed: int, verbose: bool = True) -> tuple[tf.data.Dataset,
                                                                                    tf.data.Dataset]:
    """A run's (train, val) datasets per its `config.DataConfig`, with one cache choice for both (`auto`: memory
    when train and val together fit the budget, else disk; said when `verbose`)."""
    size = (data.image_size, data.image_size)
    cache = data.cache
    if cache == "auto":
        budget = None if data.cache_budget_gb is None else int(data.cache_budget_gb * 1e9)
        cache, why = disk_cache.choose(len(table.split("train")) + len(table.split("val")), size, budget)
        if verbose:
            print(why, flush=True)
    train = dataset_for_split(table, "train", size, data.batch_size, training=True, augment=data.augment, seed=seed,
                              cache=cache, resize=data.resize, verbose=verbose)
    val = dataset_for_split(table, "val", size, data.batch_size, cache=cache, resize=data.resize)
    return train, val


def dataset_for_split(table: ImageTable, split: str, image_size: tuple[int, int], batch_size: int = 32,
                      **kwargs) -> tf.data.Dataset:
    """`make_dataset` over one split of a table, with the task's targets."""
    part = table.split(split)
    if len(part) == 0:
        raise ValueError(f"split {split!r} is empty; choose split ratios that give it images")
    return make_dataset(part.paths, part.targets(), image_size, batch_size, **kwargs)


def pixel_statistics(dataset: tf.data.Dataset, transform=None, batches: int = 20) -> tuple[float, float]:
    """Mean and standard deviation of the pixels in the first `batches` batches (for from-scratch inputs),
    after `transform` (a layer the model applies first) when given."""
    total = total_sq = count = 0.0
    for images, *_ in dataset.take(batches):
        x = np.asarray(transform(images) if transform is not None else images, dtype=np.float64)
        total, total_sq, count = total + x.sum(), total_sq + np.square(x).sum(), count + x.size
    mean = total / count
    return float(mean), float(max(np.sqrt(total_sq / count - mean**2), 1.0))
