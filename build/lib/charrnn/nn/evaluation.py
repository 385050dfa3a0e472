"""Held-out cross-entropy over a whole text -> loss (nats/char), perplexity, bits per character.

The text is cut into `batch_size` contiguous rows that are read in parallel, seq_length
characters at a time, each row carrying its RNN state from window to window: every character
after the first is predicted from all the text before it in its row, as a reader would.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf

from charrnn.core.errors import CharrnnError
from charrnn.data.split import Split
from charrnn.nn import memory


class EvaluationError(CharrnnError, ValueError):
    pass


def _rows(ids: np.ndarray, batch_size: int, seq_length: int):
    """inputs, targets, mask as [rows, T] arrays, T a multiple of seq_length."""
    n = len(ids) - 1
    if n < 1:
        raise EvaluationError("the held-out text needs at least two characters")
    rows = max(1, min(batch_size, n // seq_length))
    width = math.ceil(math.ceil(n / rows) / seq_length) * seq_length
    pad = rows * width - n

    def shape(a):
        return np.concatenate([a, np.zeros(pad, a.dtype)]).reshape(rows, width)

    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)]).reshape(rows, width)
    return shape(ids[:-1].astype(np.int32)), shape(ids[1:].astype(np.int32)), mask


def evaluate_corpus(model, vocab, corpus: str | Path, val_fraction: float, batch_size: int, seq_length: int) -> dict:
    """held_out_loss over the corpus's held-out tail, the split make_tfrecords made."""
    ids = np.concatenate(list(Split.of(corpus, val_fraction).held_out.ids(vocab)))
    return held_out_loss(model, ids, batch_size, seq_length)


def held_out_loss(model, ids: np.ndarray, batch_size: int, seq_length: int) -> dict:
    """Loss (nats per character), perplexity, bits per character and the number of characters
    predicted, reading `ids` in `batch_size` contiguous rows with the state carried."""
    if batch_size < 1 or seq_length < 1:
        raise EvaluationError(f"batch size and sequence length must be >= 1, got {batch_size} and {seq_length}")
    inputs, targets, mask = _rows(ids, batch_size, seq_length)
    memory.check_evaluation(model.config, inputs.shape[0], seq_length)

    @tf.function(reduce_retracing=True)
    def window_loss(x, y, m, states):
        logits, states = model(x, states, return_state=True)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return tf.reduce_sum(tf.cast(nll * m, tf.float64)), states

    states = model.initial_states(inputs.shape[0])
    total = 0.0
    for start in range(0, inputs.shape[1], seq_length):
        cols = slice(start, start + seq_length)
        loss, states = window_loss(inputs[:, cols], targets[:, cols], mask[:, cols], states)
        total += float(loss)
    chars = int(mask.sum())
    loss = total / chars
    if not loss < 700:  # exp() overflows: no model that learnt anything gets near
        raise EvaluationError(f"held-out loss is {loss:.4g} nats per character: the model diverged in "
                              "training; lower train.learning_rate or set train.clipnorm")
    return {"loss": loss, "perplexity": math.exp(loss), "bpc": loss / math.log(2), "chars": chars}
