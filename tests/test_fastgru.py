"""The fused GRU (fastgru.py) computes the same model as Keras's layers: logits, states, loss,
gradients, training updates; and generation and evaluation give the same results either way."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from charrnn.data.vocab import Vocabulary, count_chars
from charrnn.nn import evaluation, network
from charrnn.nn.modeldir import ModelConfig
from charrnn.sampling import generation
from charrnn.sampling.settings import SamplingSettings

CFG = ModelConfig(vocab_size=30, embedding_dim=16, units=24, layers=2)


def pair(config=CFG):
    keras.utils.set_random_seed(3)
    slow = network.build(config, rnn_impl="keras")
    fast = network.build(config, rnn_impl="fused")
    fast.set_weights(slow.get_weights())
    assert fast.use_fused(training=True) and not slow.use_fused(training=True)
    return slow, fast


def batch(b=4, t=11, v=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, v, (b, t)).astype(np.int32), rng.integers(0, v, (b, t)).astype(np.int32)


def test_same_logits_and_states():
    slow, fast = pair()
    x, _ = batch()
    states = [[tf.random.stateless_normal((4, 24), (i, 0))] for i in range(2)]
    ls, ss = slow(x, states, return_state=True)
    lf, sf = fast(x, states, return_state=True)
    np.testing.assert_allclose(lf, ls, atol=1e-5)
    for a, b in zip(ss, sf):
        np.testing.assert_allclose(b[0], a[0], atol=1e-5)


def test_same_loss_and_gradients_in_a_compiled_step():
    slow, fast = pair()
    x, y = batch()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def grads(model):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            return loss, tape.gradient(loss, model.trainable_variables)
        return step()

    (a, ga), (b, gb) = grads(slow), grads(fast)
    np.testing.assert_allclose(float(b), float(a), rtol=1e-6)
    for v, g1, g2 in zip(slow.trainable_variables, ga, gb):
        assert type(g1) is type(g2), v.path  # the embedding's gradient stays IndexedSlices
        np.testing.assert_allclose(tf.convert_to_tensor(g2), tf.convert_to_tensor(g1), atol=1e-6, err_msg=v.path)


def test_same_training_curve_with_adam():
    slow, fast = pair()
    losses = {}
    for name, model in (("keras", slow), ("fused", fast)):
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        losses[name] = [float(model.train_on_batch(*batch())) for _ in range(6)]  # one batch, learnt
    np.testing.assert_allclose(losses["fused"], losses["keras"], rtol=1e-5)
    assert losses["keras"][-1] < losses["keras"][0]


def test_dropout_during_training_uses_keras():
    config = ModelConfig(vocab_size=30, embedding_dim=8, units=8, dropout=0.1)
    model = network.build(config, rnn_impl="fused")
    assert not model.use_fused(training=True) and model.use_fused(training=False)
    lstm = network.build(ModelConfig(vocab_size=30, embedding_dim=8, units=8, cell="lstm"), rnn_impl="fused")
    assert not lstm.use_fused(training=False)


def test_evaluation_and_generation_agree():
    slow, fast = pair()
    ids = np.random.default_rng(5).integers(1, 30, 2000).astype(np.int32)
    a = evaluation.held_out_loss(slow, ids, batch_size=8, seq_length=20)
    b = evaluation.held_out_loss(fast, ids, batch_size=8, seq_length=20)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
    vocab = Vocabulary.from_counts(count_chars(["abcdefghijklmnopqrstuvwxyzABC"]))
    assert vocab.size == 30
    texts = [generation.generate(m, vocab, ["abc", "x"], SamplingSettings(40, 0.8, seed=11)) for m in (slow, fast)]
    assert texts[0] == texts[1]


def test_mixed_precision_model_builds_and_runs_on_cpu():
    model = network.build(CFG, policy="mixed_float16")
    x, y = batch()
    assert model.dtype_policy.name == "mixed_float16" and not model.use_fused(training=True)
    logits = model(x)
    assert logits.dtype == tf.float32  # the logits layer stays float32
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(float(model.train_on_batch(x, y)))
    assert network.policy(True) == "float32"  # no GPU here: the param does nothing on a CPU
