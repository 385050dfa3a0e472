"""The network: Embedding -> RNN layer(s) (GRU or LSTM) -> Dense logits, with state in and out.

With `train.softmax: adaptive` the output layer is charrnn.adaptive's AdaptiveSoftmax instead of
the Dense: the model's output is then the normalised log-probabilities (logits whose softmax is the
distribution, so evaluation and generation read them as they read logits), and training computes
its loss from the RNN outputs and the targets (`train_step`), never forming the [B, T, V] output.

A model on disk is a self-contained directory (charrnn.modeldir): config.json (architecture + the
fingerprint of the vocabulary it was trained with), model.weights.h5 and vocab.json. Loading
rebuilds the architecture from our own config and reads weights only, so no code or pickled
object is ever deserialized.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import keras
import tensorflow as tf
from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution

from charrnn.core import files
from charrnn.data.vocab import Vocabulary
from charrnn.nn import fastgru, modeldir
from charrnn.nn.adaptive import AdaptiveSoftmax
from charrnn.nn.modeldir import CONFIG, VOCAB, WEIGHTS, ModelConfig, ModelError  # noqa: F401  (re-exported)


class CharRNN(keras.Model):
    """logits = model(ids); (logits, states) = model(ids, states, return_state=True).

    `states` is a list with one entry per RNN layer: [h] for a GRU, [h, c] for an LSTM.
    Dropout sits on the embedding and on each RNN output, never on the recurrent connections,
    which keeps Keras's cuDNN kernels eligible on a GPU.
    """

    def __init__(self, config: ModelConfig, rnn_impl: str = "auto", policy: str = "float32", **kwargs):
        super().__init__(dtype=policy, **kwargs)
        self.config = config
        self.rnn_impl = rnn_impl  # "auto" | "keras" | "fused": see use_fused(); not saved with the model
        rnn = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[config.cell]
        self.embedding = keras.layers.Embedding(config.vocab_size, config.embedding_dim, name="embedding", dtype=policy)
        self.rnns = [rnn(config.units, return_sequences=True, return_state=True, name=f"{config.cell}_{i}", dtype=policy)
                     for i in range(config.layers)]
        self.drop = keras.layers.Dropout(config.dropout, name="dropout", dtype=policy)
        # the output layer, in float32 (logits and loss) under any policy
        if config.softmax == "adaptive":
            self.head = AdaptiveSoftmax(config.clusters, config.tail_dims, name="logits", dtype="float32")
        else:
            self.dense = keras.layers.Dense(config.vocab_size, name="logits", dtype="float32")

    def use_fused(self, training: bool = False) -> bool:
        """Whether a call runs fastgru's fused GRU: with rnn_impl "fused", or "auto" on a machine
        without a GPU (there Keras's cuDNN kernel is the fast path), and only when the fused path
        computes exactly this model's function (fastgru.eligible)."""
        if self.rnn_impl == "keras" or not all(r.built for r in self.rnns):  # the first call builds the layers
            return False
        if self.rnn_impl == "auto" and _gpu_visible():
            return False
        return fastgru.eligible(self.config, self.dtype_policy.name, training and self.config.dropout > 0)

    @property
    def adaptive(self) -> bool:
        return self.config.softmax == "adaptive"

    def call(self, ids, states=None, return_state=False, training=False):
        if self.use_fused(training):
            logits, new_states = fastgru.forward(self, ids, states)
        else:
            x, new_states = self.rnn_outputs(ids, states, training)
            logits = self.logits(x)
        return (logits, new_states) if return_state else logits

    def rnn_outputs(self, ids, states=None, training=False):
        """The last RNN layer's outputs [B, T, U] (what the output layer reads) and the new states."""
        if self.use_fused(training):
            x, new_states = fastgru.outputs(self, ids, states)
            return tf.transpose(x, [1, 0, 2]), new_states
        x = self.drop(self.embedding(ids), training=training)
        new_states = []
        for i, rnn in enumerate(self.rnns):
            out = rnn(x, initial_state=None if states is None else states[i], training=training)
            x, layer_state = out[0], list(out[1:])
            x = self.drop(x, training=training)
            new_states.append(layer_state)
        return x, new_states

    def logits(self, x):
        """The output layer on RNN outputs [..., U]: Dense logits, or the adaptive softmax's
        log-probabilities."""
        return self.head(x) if self.adaptive else self.dense(x)

    def mean_nll(self, ids, targets, training=False):
        """The mean of -log p(target): with the adaptive softmax, each tail cluster computed only
        for the positions whose target is in it (adaptive.AdaptiveSoftmax.nll)."""
        if not self.adaptive:
            logits = self(ids, training=training)
            return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))
        if self.use_fused(training):  # time-major outputs: transpose the targets, not the outputs
            x, _ = fastgru.outputs(self, ids)
            targets = tf.transpose(targets)
        else:
            x, _ = self.rnn_outputs(ids, training=training)
        return tf.reduce_mean(self.head.nll(x, targets))

    # With the adaptive softmax, fit's steps are Keras's (keras/src/backend/tensorflow/trainer.py,
    # keras 3.15) with the loss taken from self.mean_nll instead of the compiled loss on self(x).
    def train_step(self, data):
        if not self.adaptive:
            return super().train_step(data)
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)  # no sample weights in charrnn
        with tf.GradientTape() as tape:
            loss = scale_loss_for_distribution(self.mean_nll(x, y, training=True))
            scaled = self.optimizer.scale_loss(loss)
        self.optimizer.apply_gradients(zip(tape.gradient(scaled, self.trainable_weights), self.trainable_weights))
        return self._report(loss, x)

    def test_step(self, data):
        if not self.adaptive:
            return super().test_step(data)
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)  # no sample weights in charrnn
        return self._report(scale_loss_for_distribution(self.mean_nll(x, y)), x)

    def _report(self, loss, x):
        self._loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=tf.shape(x)[0])
        return self.get_metrics_result()

    def initial_states(self, batch_size: int):
        per_layer = 1 if self.config.cell == "gru" else 2
        return [[tf.zeros((batch_size, self.config.units)) for _ in range(per_layer)] for _ in self.rnns]

    def get_config(self):
        return asdict(self.config)


def _gpu_visible() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def policy(mixed_precision: bool) -> str:
    """The Keras dtype policy to train with: mixed_float16 when asked for and a GPU is there
    (on a CPU float16 only costs time), else float32."""
    return "mixed_float16" if mixed_precision and _gpu_visible() else "float32"


def build(config: ModelConfig, rnn_impl: str = "auto", policy: str = "float32") -> CharRNN:
    """A new model with its weights created. rnn_impl and policy choose how it computes, not what
    it is: they are not saved with it (a model trained either way loads and runs either way)."""
    model = CharRNN(config, rnn_impl=rnn_impl, policy=policy, name="charrnn")
    model(keras.ops.zeros((1, 1), dtype="int32"))  # create the weights
    return model


def grow_from(model: CharRNN, parent: CharRNN) -> None:
    """Give `model` the weights of `parent`, a model of the same architecture over a vocabulary
    that `model`'s extends (charrnn.data.vocab.Vocabulary.extended): the embedding rows and output
    columns of the parent's ids are copied, those of the new ids keep their fresh initialisation."""
    for mine, theirs in zip(model.weights, parent.weights, strict=True):
        value, old = keras.ops.convert_to_numpy(mine).copy(), keras.ops.convert_to_numpy(theirs)
        value[tuple(slice(0, n) for n in old.shape)] = old  # only the vocabulary axis differs
        mine.assign(value)


def save(model: CharRNN, vocab, path: str | Path) -> None:
    # Save a fresh copy: weights only (no optimizer slots) and layer names free of the
    # per-process counters Keras appends ("adam_1"), so the file's bytes are reproducible.
    clean = build(model.config)
    clean.set_weights(model.get_weights())
    with files.atomic_path(path) as tmp:
        tmp.mkdir()
        clean.save_weights(tmp / WEIGHTS)
        files.write_json(tmp / CONFIG, model.config.to_dict())
        vocab.save(tmp / VOCAB)


def load(path: str | Path) -> tuple[CharRNN, Vocabulary]:
    """A saved model and its vocabulary, rebuilt from config.json and model.weights.h5 after
    charrnn.modeldir has checked that the three files belong together."""
    saved = modeldir.read(path)
    model = build(saved.config)
    try:
        model.load_weights(saved.path / WEIGHTS)
    except (OSError, ValueError, KeyError) as e:  # a file h5py opened but Keras cannot read
        raise ModelError(f"{saved.path / WEIGHTS}: cannot be loaded ({e}); run `dvc repro train`") from None
    return model, saved.vocab
