import math

import numpy as np
import pytest
import tensorflow as tf

from charrnn.nn import evaluation
from tests.kit import VOCAB, tiny_model


def tiny(cell="gru"):
    return tiny_model(VOCAB, cell=cell, layers=2), VOCAB


def reference_loss(model, ids):
    """Straightforward: one pass over the whole text, mean cross-entropy of every next character."""
    logits = model(ids[None, :-1])
    nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids[None, 1:], logits=logits)
    return float(tf.reduce_mean(tf.cast(nll, tf.float64)))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_one_stream_equals_a_single_pass(cell):
    model, vocab = tiny(cell)
    ids = np.random.default_rng(1).integers(1, vocab.size, size=237).astype("int32")
    result = evaluation.held_out_loss(model, ids, batch_size=1, seq_length=10)
    assert result["chars"] == 236
    assert result["loss"] == pytest.approx(reference_loss(model, ids), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert result["bpc"] == pytest.approx(result["loss"] / math.log(2))


def test_parallel_streams_count_every_character_once():
    model, vocab = tiny()
    ids = np.random.default_rng(2).integers(1, vocab.size, size=1001).astype("int32")
    result = evaluation.held_out_loss(model, ids, batch_size=7, seq_length=16)
    assert result["chars"] == 1000
    # rows restart their state, so the value differs slightly from one stream, but not much
    assert result["loss"] == pytest.approx(reference_loss(model, ids), rel=0.02)


def test_too_short():
    model, _ = tiny()
    with pytest.raises(evaluation.EvaluationError):
        evaluation.held_out_loss(model, np.array([1], dtype="int32"), 4, 10)
