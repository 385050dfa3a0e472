"""The adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs"): the
output layer of `train.softmax: adaptive`, for vocabularies of thousands of characters.

A full softmax costs U x V multiply-adds per position (U: the RNN's units, V: the vocabulary), and
with a CJK vocabulary (V ~ 4,000+) that is three times the GRU's own work. Characters are far from
equally frequent, so the vocabulary is split by rank (corpus count, most frequent first; [UNK],
whose count is unknown, always first):

- the head: the H most frequent characters plus one entry per tail cluster, a Dense U -> H + K;
- tail cluster i: the next n_i characters by rank, a projection U -> d_i (d_i = U / 4^i, no bias)
  and a Dense d_i -> n_i.

    log p(c | h) = log_softmax(head(h))[c]                                       c in the head
                 = log_softmax(head(h))[H + i] + log_softmax(tail_i(proj_i(h)))[c]  c in cluster i

Both factors are normalised, so this is an exact distribution over the whole vocabulary.
`AdaptiveSoftmax(h)` returns it in full ([..., V], ids in vocabulary order: what evaluation and
generation read, as logits whose softmax is the distribution); `nll(h, targets)` computes only
-log p(target), running tail cluster i only for the positions whose target is in it, so a
training position costs U (H + K) + d_i (U + n_i) for its target's cluster i alone.

Which characters go to which cluster: charrnn.nn.clusters.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class AdaptiveSoftmax(keras.layers.Layer):
    """RNN outputs [..., U] -> log-probabilities [..., V] (ids in vocabulary order); `nll`: the
    loss of given targets, computing each tail cluster only where it is needed."""

    def __init__(self, clusters, tail_dims, **kwargs):
        super().__init__(**kwargs)
        self.head_size = len(clusters[0])
        order = np.concatenate([np.asarray(c, np.int64) for c in clusters])  # ids, cluster by cluster
        cluster = np.repeat(np.arange(len(clusters)), [len(c) for c in clusters])
        index = np.concatenate([np.arange(len(c)) for c in clusters])
        # Per id (int32 tables): where it sits in `order`, its cluster, its index in the cluster,
        # and the head entry that scores it (its own, or its cluster's).
        self.position = _by_id(order, np.arange(len(order)))
        self.cluster = _by_id(order, cluster)
        self.index = _by_id(order, index)
        self.head_label = _by_id(order, np.where(cluster == 0, index, self.head_size + cluster - 1))
        dtype = kwargs.get("dtype")
        self.head = keras.layers.Dense(self.head_size + len(tail_dims), name="head", dtype=dtype)
        self.projections = [keras.layers.Dense(d, use_bias=False, name=f"projection_{i}", dtype=dtype)
                            for i, d in enumerate(tail_dims, 1)]
        self.tails = [keras.layers.Dense(len(ids), name=f"tail_{i}", dtype=dtype)
                      for i, ids in enumerate(clusters[1:], 1)]

    def call(self, x):
        return self.log_probs(x, lambda layer, v: layer(v))

    def log_probs(self, x, apply, log_softmax=tf.nn.log_softmax):
        """call()'s log-probabilities, each Dense layer run as apply(layer, input) (the generator
        runs them, and log_softmax, row by row: charrnn.nn.stepping)."""
        head = log_softmax(apply(self.head, x))
        parts = [head[..., :self.head_size]]
        for i, (projection, tail) in enumerate(zip(self.projections, self.tails)):
            cluster = head[..., self.head_size + i, None]
            parts.append(cluster + log_softmax(apply(tail, apply(projection, x))))
        return tf.gather(tf.concat(parts, axis=-1), self.position, axis=-1)

    def nll(self, x, targets):
        """-log p(target) for every position, shaped like `targets` ([...] ids; x: [..., U])."""
        y = tf.reshape(targets, [-1])
        x = tf.reshape(x, [-1, x.shape[-1]])
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.gather(self.head_label, y),
                                                             logits=self.head(x))
        cluster = tf.gather(self.cluster, y)
        for i, (projection, tail) in enumerate(zip(self.projections, self.tails), 1):
            rows = tf.where(tf.equal(cluster, i))  # [n, 1]: the positions whose target is in cluster i
            logits = tail(projection(tf.gather_nd(x, rows)))
            labels = tf.gather(self.index, tf.gather_nd(y, rows))
            nll = tf.tensor_scatter_nd_add(
                nll, rows, tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        return tf.reshape(nll, tf.shape(targets))


def _by_id(order: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.empty(len(order), np.int32)
    out[order] = values
    return out
