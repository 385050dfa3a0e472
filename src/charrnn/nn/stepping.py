"""The model one character at a time, as the generator runs it: every row computed by itself.

A row's next character must not depend on the rows beside it (charrnn.sampling.generation), so
no product here is a matrix product over the batch. Under the CPU pin (charrnn.core.isa) oneDNN's
sgemm sums the rows of a small or odd batch (fewer than 8 rows, 25, 49, ...) in another order
than those of a full one, so a matrix product would give a row other bits alone than batched.
`rowwise` runs matrix-vector products instead: Eigen's own compiled kernel, whose sums are the
same for any number of rows, any instruction set oneDNN is allowed and 1, 2 or 8 threads
(bench/rowwise.py), and which for one row skips the packing of the weights that makes a small
sgemm slow (one prompt at GRU 1024: about 4x the characters per second).

Each weight is multiplied in blocks of COLUMNS columns, every row against one block before the
next: a block stays in a core's cache while the rows read it, where the whole matrix (12 MiB at
GRU 1024) would be read from memory once per row. A column's sum does not depend on the block
around it, so the bits are those of one product per row (bench/rowwise.py); at GRU 1024 a step
of 64 rows takes 4.7 ms instead of 6.9 (BENCHMARKS.md 2026-12-07). The blocks are laid out once
per call of a graph.

Elementwise functions need the same care: Eigen runs sigmoid, exp and log on a tensor's last few
elements with scalar code that rounds differently from its vector code, and TensorFlow's softmax
and log-softmax are not row-independent either. So the cells' activations, the sampler's softmax
and the adaptive head's log-softmax go through `elementwise`, `softmax` and `log_softmax` here
(a sigmoid over 300 units, or a softmax over 65 characters, gave some rows other bits alone than
in a batch of 64).

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


COLUMNS = 64  # a [1024, 64] float32 block is 256 KiB: it stays in a core's L2 while every row reads it


def column_blocks(w):
    """w [K, N] as [ceil(N / COLUMNS), 1, K, COLUMNS]: its column blocks, the last padded with zeros."""
    k, n = w.shape
    count = -(-n // COLUMNS)
    w = tf.pad(w, [[0, 0], [0, count * COLUMNS - n]])
    return tf.transpose(tf.reshape(w, [k, count, COLUMNS]), [1, 0, 2])[:, None]


def rowwise(x, blocks, n: int):
    """x [B, K] @ w [K, n], w given as its column_blocks: a matrix-vector product per row and block
    (see the module docstring)."""
    y = tf.linalg.matmul(x[None, :, None, :], blocks)[:, :, 0, :]  # [blocks, B, COLUMNS]
    return tf.reshape(tf.transpose(y, [1, 0, 2]), [-1, blocks.shape[0] * COLUMNS])[:, :n]


LANES = 16  # floats in a vector of the widest instruction set (AVX-512)


def elementwise(f, x):
    """f(x) for an elementwise f (sigmoid, tanh, exp, log) on x [B, D], each element as in any batch.

    Eigen computes the last (size mod vector width) elements of a tensor with its scalar code, which
    rounds exp and sigmoid differently from its vector code, and which elements those are depends
    on B. With D padded to a multiple of LANES there is no such tail."""
    d = x.shape[-1]
    if d is not None and d % LANES == 0:
        return f(x)
    d = tf.shape(x)[-1]
    return f(tf.pad(x, [[0, 0], [0, (LANES - d % LANES) % LANES]]))[:, :d]


def softmax(x):
    """softmax over the last axis of x [B, D], each row's bits the same in any batch (`elementwise`;
    a sum over a row is the same in any batch)."""
    e = elementwise(tf.exp, x - tf.reduce_max(x, axis=-1, keepdims=True))
    return e / tf.reduce_sum(e, axis=-1, keepdims=True)


def log_softmax(x):
    """log(softmax(x)), as `softmax`."""
    z = x - tf.reduce_max(x, axis=-1, keepdims=True)
    return z - elementwise(tf.math.log, tf.reduce_sum(elementwise(tf.exp, z), axis=-1, keepdims=True))


class Products:
    """x @ w, row by row, for every weight matrix a step of `model` multiplies by, each laid out in
    column blocks once (when made, in the graph that runs the steps)."""

    def __init__(self, model):
        self.blocks = {id(w): column_blocks(w.value) for w in matrices(model)}

    def __call__(self, x, w):
        return rowwise(x, self.blocks[id(w)], w.shape[1])

    def dense(self, layer, x):
        """A Keras Dense layer (no activation) on x."""
        y = self(x, layer.kernel)
        return y + layer.bias.value if layer.use_bias else y


def matrices(model):
    """The kernels the step multiplies by (not a GRU's first input kernel: the table holds it)."""
    for i, rnn in enumerate(model.rnns):
        yield rnn.cell.recurrent_kernel
        if i > 0 or model.config.cell == "lstm":
            yield rnn.cell.kernel
    head = model.head if model.adaptive else None
    for layer in [head.head, *head.projections, *head.tails] if head else [model.dense]:
        yield layer.kernel


def step_fn(model, table=None):
    """ids [B], states -> logits [B, V] (the adaptive softmax: its log-probabilities), new states.

    With a GRU, layer 1's input projection is a row of `table` (fastgru.input_table: embedding @
    kernel + input bias per character; computed here when not given): its work per character is
    then only the recurrent product."""
    if model.config.cell == "gru":
        table = fastgru.input_table(model) if table is None else table
    product = Products(model)

    def step(ids, states):
        x, new_states = None, []
        for i, (rnn, state) in enumerate(zip(model.rnns, states)):
            cell = rnn.cell
            if model.config.cell == "gru":
                xp = tf.gather(table, ids) if i == 0 else product(x, cell.kernel) + cell.bias.value[0]
                x = _gru(product, cell, xp, state[0])
                new_states.append([x])
            else:
                inputs = model.embedding(ids) if i == 0 else x
                x, c = _lstm(product, cell, inputs, *state)
                new_states.append([x, c])
        return logits(product, model, x), new_states

    return step


def _gru(product, cell, xp, h):
    x_z, x_r, x_h = tf.split(xp, 3, axis=1)
    r_z, r_r, r_h = tf.split(product(h, cell.recurrent_kernel) + cell.bias.value[1], 3, axis=1)
    z = elementwise(tf.sigmoid, x_z + r_z)
    r = elementwise(tf.sigmoid, x_r + r_r)
    hh = elementwise(tf.tanh, x_h + r * r_h)
    return z * h + (1 - z) * hh


def _lstm(product, cell, inputs, h, c):
    z = product(inputs, cell.kernel) + product(h, cell.recurrent_kernel)
    if cell.use_bias:
        z = z + cell.bias.value
    z_i, z_f, z_c, z_o = tf.split(z, 4, axis=1)
    c = elementwise(tf.sigmoid, z_f) * c + elementwise(tf.sigmoid, z_i) * elementwise(tf.tanh, z_c)
    return elementwise(tf.sigmoid, z_o) * elementwise(tf.tanh, c), c


def logits(product, model, x):
    """The output layer on x [B, U], row by row."""
    if not model.adaptive:
        return product.dense(model.dense, x)
    return model.head.log_probs(x, product.dense, log_softmax)
