"""The baseline: TensorFlow's "Text generation with an RNN" tutorial, re-implemented here.

Written from the tutorial's description of its approach, adapted only where Keras 3 requires
(no `super().__init__(self)`, no `GRU.get_initial_state`):
- the dataset: the whole text as ids -> from_tensor_slices -> batch(seq_length + 1) -> map(split
  input/target) -> shuffle(10000) -> batch(64, drop_remainder) -> prefetch;
- the model: a keras.Model subclass Embedding -> GRU(return_sequences, return_state) -> Dense;
- training: compile(Adam, SparseCategoricalCrossentropy(from_logits=True)) + model.fit;
- generation: a OneStep module whose tf.function generates one character, called once per
  character from a Python loop, carrying the GRU state between calls.
"""
from __future__ import annotations

import keras
import tensorflow as tf

BUFFER_SIZE = 10000


def lookups(text: str):
    vocab = sorted(set(text))
    ids_from_chars = keras.layers.StringLookup(vocabulary=vocab, mask_token=None)
    chars_from_ids = keras.layers.StringLookup(vocabulary=ids_from_chars.get_vocabulary(), invert=True,
                                               mask_token=None)
    return ids_from_chars, chars_from_ids


def split_input_target(sequence):
    return sequence[:-1], sequence[1:]


def dataset(text: str, ids_from_chars, seq_length: int = 100, batch_size: int = 64, seed: int | None = None):
    all_ids = ids_from_chars(tf.strings.unicode_split(text, "UTF-8"))
    ids_dataset = tf.data.Dataset.from_tensor_slices(all_ids)
    sequences = ids_dataset.batch(seq_length + 1, drop_remainder=True)
    ds = sequences.map(split_input_target)
    return (ds.shuffle(BUFFER_SIZE, seed=seed)
              .batch(batch_size, drop_remainder=True)
              .prefetch(tf.data.experimental.AUTOTUNE))


class MyModel(keras.Model):
    def __init__(self, vocab_size, embedding_dim, rnn_units):
        super().__init__()
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim)
        self.gru = keras.layers.GRU(rnn_units, return_sequences=True, return_state=True)
        self.dense = keras.layers.Dense(vocab_size)

    def call(self, inputs, states=None, return_state=False, training=False):
        x = self.embedding(inputs, training=training)
        x, states = self.gru(x, initial_state=states, training=training)
        x = self.dense(x, training=training)
        if return_state:
            return x, states
        return x


def build(vocab_size: int, embedding_dim: int, rnn_units: int) -> MyModel:
    model = MyModel(vocab_size, embedding_dim, rnn_units)
    model(tf.zeros((1, 1), tf.int64))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class OneStep(tf.Module):
    def __init__(self, model, chars_from_ids, ids_from_chars, temperature=1.0):
        super().__init__()
        self.temperature = temperature
        self.model = model
        self.chars_from_ids = chars_from_ids
        self.ids_from_chars = ids_from_chars
        # A mask that keeps "[UNK]" from ever being generated.
        skip_ids = self.ids_from_chars(["[UNK]"])[:, None]
        sparse_mask = tf.SparseTensor(values=[-float("inf")] * len(skip_ids), indices=skip_ids,
                                      dense_shape=[len(ids_from_chars.get_vocabulary())])
        self.prediction_mask = tf.sparse.to_dense(sparse_mask)

    @tf.function
    def generate_one_step(self, inputs, states=None):
        input_chars = tf.strings.unicode_split(inputs, "UTF-8")
        input_ids = self.ids_from_chars(input_chars).to_tensor()
        predicted_logits, states = self.model(inputs=input_ids, states=states, return_state=True)
        predicted_logits = predicted_logits[:, -1, :]
        predicted_logits = predicted_logits / self.temperature
        predicted_logits = predicted_logits + self.prediction_mask
        predicted_ids = tf.random.categorical(predicted_logits, num_samples=1)
        predicted_ids = tf.squeeze(predicted_ids, axis=-1)
        predicted_chars = self.chars_from_ids(predicted_ids)
        return predicted_chars, states


def generate(one_step: OneStep, prompts: list[str], num_chars: int) -> list[str]:
    """The tutorial's loop: one call of generate_one_step per character, from Python."""
    states = None
    next_char = tf.constant(prompts)
    result = [next_char]
    for _ in range(num_chars):
        next_char, states = one_step.generate_one_step(next_char, states=states)
        result.append(next_char)
    return [s.decode("utf-8") for s in tf.strings.join(result).numpy()]
