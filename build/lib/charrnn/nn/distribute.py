"""Which devices train the model: the tf.distribute strategy named by `train.distribute`.

- auto: MirroredStrategy over all local GPUs when there are two or more, else the default
  (one-device) strategy, so a laptop or a one-GPU box runs exactly as without this module;
- mirrored: MirroredStrategy over all local GPUs, or over all logical CPU devices when there is
  no GPU (one, unless the process configured more, as the tests do);
- multi_worker: MultiWorkerMirroredStrategy over the workers that TF_CONFIG lists; every worker
  runs the same training, and the chief (task 0) is the one that logs to MLflow.

The global batch stays `train.batch_size`: Keras splits each batch across the replicas and
averages the gradients, so results match one-device training within float tolerance. Create the
strategy before the process runs other TensorFlow work (MultiWorkerMirroredStrategy requires it).
"""
from __future__ import annotations

import os

import tensorflow as tf

from charrnn.core.errors import CharrnnError

KINDS = ("auto", "mirrored", "multi_worker")


class DistributeError(CharrnnError, RuntimeError):
    pass


def strategy(kind: str) -> tf.distribute.Strategy:
    if kind == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise DistributeError("train.distribute=multi_worker needs TF_CONFIG (the cluster's workers and this "
                                  "worker's index) in the environment of every worker; see README 'Running as a team'")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if kind == "auto":
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
    raise DistributeError(f"unknown train.distribute {kind!r}: use one of {', '.join(KINDS)}")


def is_multi_worker(s: tf.distribute.Strategy) -> bool:
    return isinstance(s, tf.distribute.MultiWorkerMirroredStrategy)


def describe(s: tf.distribute.Strategy) -> str:
    return f"{type(s).__name__} with {s.num_replicas_in_sync} replica(s)"


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Every worker reads all shards and takes its part of each global batch, so the batches
    are those of one-process training, however many files the records have."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def fit_under_multi_worker(model, s: tf.distribute.Strategy, sample_batch) -> None:
    """Let Keras 3's fit() run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Two spots in keras 3.15 break there: the symbolic build before the first step reduces a data
    batch across workers (so build the model here, from a local batch, and skip that step), and
    per-replica scalar metrics are averaged with axis=0 (so hand them over as shape [1]).
    """
    with s.scope():
        model._symbolic_build(data_batch=sample_batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: {k: tf.reshape(v, [1]) for k, v in step(data).items()})
