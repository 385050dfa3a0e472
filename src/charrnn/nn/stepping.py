"""The model one character at a time, as the generator runs it: every row computed by itself.

A row's next character must not depend on the rows beside it (charrnn.sampling.generation), so
no product here is a matrix product over the batch. Under the CPU pin (charrnn.core.isa) oneDNN's
sgemm sums the rows of a small or odd batch (fewer than 8 rows, 25, 49, ...) in another order
than those of a full one, so a matrix product would give a row other bits alone than batched.
`rowwise` is one matrix-vector product per row instead: Eigen's own compiled kernel, whose sums
are the same for any number of rows, any instruction set oneDNN is allowed and 1, 2 or 8 threads
(bench/rowwise.py), and which for one row skips the packing of the weights that makes a small
sgemm slow (one prompt at GRU 1024: about 4x the characters per second).

The cells compute what Keras's compute (GRU with reset_after=True, LSTM; sigmoid/tanh), in
float32: tests/test_generation.py checks them against the Keras layers.
"""
from __future__ import annotations

import tensorflow as tf

from charrnn.nn import fastgru


def runs(model) -> bool:
    """Whether the generator steps with this module: a float32 model (under a mixed-precision
    policy, which only a GPU trains with, it keeps Keras's cells)."""
    return model.dtype_policy.name == "float32"


def needs_table(model) -> bool:
    return runs(model) and model.config.cell == "gru"


def rowwise(x, w):
    """x [B, K] @ w [K, N] as B matrix-vector products (see the module docstring)."""
    return tf.linalg.matmul(x[:, None, :], w)[:, 0, :]


def dense(layer, x):
    """A Keras Dense layer (no activation) on x, row by row."""
    y = rowwise(x, layer.kernel.value)
    return y + layer.bias.value if layer.use_bias else y


def step_fn(model, table=None):
    """ids [B], states -> logits [B, V] (the adaptive softmax: its log-probabilities), new states.

    With a GRU, layer 1's input projection is a row of `table` (fastgru.input_table: embedding @
    kernel + input bias per character; computed here when not given): its work per character is
    then only the recurrent product."""
    if model.config.cell == "gru":
        table = fastgru.input_table(model) if table is None else table

    def step(ids, states):
        x, new_states = None, []
        for i, (rnn, state) in enumerate(zip(model.rnns, states)):
            cell = rnn.cell
            if model.config.cell == "gru":
                xp = tf.gather(table, ids) if i == 0 else rowwise(x, cell.kernel.value) + cell.bias.value[0]
                x = _gru(cell, xp, state[0])
                new_states.append([x])
            else:
                inputs = model.embedding(ids) if i == 0 else x
                x, c = _lstm(cell, inputs, *state)
                new_states.append([x, c])
        return logits(model, x), new_states

    return step


def _gru(cell, xp, h):
    x_z, x_r, x_h = tf.split(xp, 3, axis=1)
    r_z, r_r, r_h = tf.split(rowwise(h, cell.recurrent_kernel.value) + cell.bias.value[1], 3, axis=1)
    z = tf.sigmoid(x_z + r_z)
    r = tf.sigmoid(x_r + r_r)
    hh = tf.tanh(x_h + r * r_h)
    return z * h + (1 - z) * hh


def _lstm(cell, inputs, h, c):
    z = rowwise(inputs, cell.kernel.value) + rowwise(h, cell.recurrent_kernel.value)
    if cell.use_bias:
        z = z + cell.bias.value
    z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)
    c = tf.sigmoid(z_f) * c + tf.sigmoid(z_i) * tf.tanh(z_c)
    return tf.sigmoid(z_o) * tf.tanh(c), c


def logits(model, x):
    """The output layer on x [B, U], row by row."""
    if not model.adaptive:
        return dense(model.dense, x)
    return model.head.log_probs(x, dense)
