"""Two fixes that let Keras 3's `model.fit` run under MultiWorkerMirroredStrategy (keras-team/keras#20585, open:
the TensorFlow guide's own multi-worker example fails with Keras 3).

1. `Trainer._maybe_symbolic_build` reduces the first distributed batch with `strategy.reduce(..., axis=None)`,
   which MultiWorkerMirroredStrategy cannot do ("Attempt to convert a value (PerReplica...)"): the model is
   built instead from one local batch of the undistributed dataset, as it is without a strategy.
2. `reduce_per_replica` averages the step's logs across workers with `strategy.reduce("MEAN", v, axis=0)`,
   which fails on the scalar loss ("Invalid reduction dimension 0 for input with 0 dimensions"): scalars are
   averaged with axis=None.
Applied only for `--strategy multiworker`; a test trains two real workers (tests/test_multiworker.py), so a Keras
release that changes these internals fails it instead of a user's run.
"""

from __future__ import annotations

import keras
import tensorflow as tf

_PATCHED = False


def fix_fit(model: keras.Model, dataset: tf.data.Dataset) -> None:
    """Apply both fixes for `model.fit` on `dataset` (the undistributed one) under MultiWorkerMirroredStrategy."""
    _patch_reduce()
    batch = next(iter(dataset))
    build = model._maybe_symbolic_build

    def local_build(iterator=None, data_batch=None):
        return build(data_batch=batch)

    model._maybe_symbolic_build = local_build


def _patch_reduce() -> None:
    global _PATCHED
    if _PATCHED:
        return
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if not (trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("mean", "auto")):
            return original(values, strategy, reduction)

        def mean(v):
            local = strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v
            return strategy.reduce("MEAN", v, axis=0 if len(getattr(local, "shape", ())) else None)

        return tf.nest.map_structure(mean, values)

    trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True
