"""Which devices train the model: the tf.distribute strategy named by `train.distribute`.

- auto: MirroredStrategy over all local GPUs when there are two or more, else the default
  (one-device) strategy, so a laptop or a one-GPU box runs exactly as without this module;
- mirrored: MirroredStrategy over all local GPUs, or over all logical CPU devices when there is
  no GPU (one, unless the process configured more, as the tests do).

The global batch stays `train.batch_size`: Keras splits each batch across the replicas and
averages the gradients, so results match one-device training within float tolerance.
Several machines (MultiWorkerMirroredStrategy) are not offered: Keras 3's `fit` does not run
under it (keras-team/keras#20585).
"""
from __future__ import annotations

import tensorflow as tf


def strategy(kind: str) -> tf.distribute.Strategy:
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if kind == "auto":
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
    raise ValueError(f"unknown train.distribute {kind!r}: use 'auto' or 'mirrored'")


def describe(s: tf.distribute.Strategy) -> str:
    return f"{type(s).__name__} with {s.num_replicas_in_sync} replica(s)"
