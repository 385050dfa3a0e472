"""The clusters of the adaptive softmax (charrnn.nn.adaptive), chosen from the vocabulary's
counts, without TensorFlow.

Cluster choice (`choose_clusters`, from the vocabulary's counts): every part of the layer gets
the same share of the text per dimension of its projection. The head (U dimensions) holds the most
frequent characters up to 3/4 of the text, tail cluster i (U / 4^i dimensions) the next ones until
what is left is (1/4)^i of what the head left, and the last of MAX_TAILS clusters the rest. The
head is capped at U characters, so that it costs at most a third of a GRU layer's recurrent matmul
(3U x U per position): training stays within about 1.4x the time per character of a 77-character
vocabulary (bench/large_vocab.py). A vocabulary of at most U characters gets no tail at all (the
head is then a full softmax).
"""
from __future__ import annotations

import numpy as np

MAX_TAILS = 3
SHRINK = 4  # tail cluster i projects to U / SHRINK**i dimensions and holds 1/SHRINK of what is left


def ranked(counts) -> np.ndarray:
    """Ids by rank: [UNK] (id 0) first, then the characters (ids 1..) by count, most frequent
    first, ties by id."""
    counts = np.asarray(counts, np.int64)
    return np.concatenate([[0], np.lexsort((np.arange(len(counts)), -counts)) + 1]).astype(np.int64)


def choose_clusters(counts, units: int) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """(clusters, tail_dims) for a vocabulary with these character counts: the ids of the head,
    then of each tail cluster, and each tail cluster's projection size."""
    order = ranked(counts)
    size = len(order)
    if size <= units:
        return (tuple(int(i) for i in order),), ()
    share = np.concatenate([[0], np.asarray(counts, np.float64)[order[1:] - 1]])
    covered = np.concatenate([[0.0], np.cumsum(share) / max(share.sum(), 1.0)])  # by the first r ranks

    def ranks_covering(fraction):
        return int(np.searchsorted(covered, fraction - 1e-9))  # the fewest ranks covering `fraction`

    edges = [0, min(units, ranks_covering(1 - 1 / SHRINK))]
    left = 1 - covered[edges[-1]]
    for i in range(1, MAX_TAILS):
        end = ranks_covering(1 - left / SHRINK**i)
        if end > edges[-1] and end < size:
            edges.append(end)
    clusters = tuple(tuple(int(i) for i in order[lo:hi]) for lo, hi in zip(edges, [*edges[1:], size]))
    return clusters, tuple(max(1, units // SHRINK**i) for i in range(1, len(clusters)))
