"""A fused GRU forward/backward for CPU training: the same model, the same weights, fewer FLOPs.

Keras runs a GRU on the CPU as a while loop over its cell, and TensorFlow differentiates that loop
step by step. Per time step that costs, besides the unavoidable recurrent matmul h @ R, an input
matmul x @ W, and in the backward pass two gradient accumulations dW += x^T dz and dR += h^T dz
whose inner dimension is only the batch size: matmuls that stream the whole [U, 3U] weight through
memory each step while doing little arithmetic on it. This module computes the very same function
(Keras's GRU with reset_after=True, sigmoid/tanh) differently:

- Layer 1's input projection Embedding(ids) @ W + b is a gather from the [vocab, 3U] table
  E @ W + b, computed once per step of training, not once per character.
- Deeper layers project their whole input sequence in one matmul, outside the loop.
- The loop does one matmul per time step forward and one backward (a tf.custom_gradient with a
  hand-written backward loop); dR is one [U, T*B] x [T*B, 3U] matmul after the loop.
- Matmuls with a transposed right operand are avoided (the operand is transposed once): on this
  CPU build they ran at about half the speed of the plain ones (bench/profile_train.py).

Used by model.CharRNN for a GRU when nothing stands in the way (see `eligible`): training,
evaluation; with either output layer (the Dense, or charrnn.adaptive's softmax, which training
applies to `outputs` directly). tests/test_fastgru.py checks it against the Keras layers: same
logits, same loss, same gradients (to float rounding); tests/test_adaptive.py with the adaptive
softmax.
"""
from __future__ import annotations

import tensorflow as tf


def eligible(config, dtype_policy: str, training_dropout: bool) -> bool:
    """The fused path computes exactly Keras's function: a GRU in float32, no active dropout."""
    return config.cell == "gru" and dtype_policy == "float32" and not training_dropout


@tf.custom_gradient
def gru_loop(xp, h0, recurrent_kernel, recurrent_bias):
    """States of a GRU over time-major input projections.

    xp [T, B, 3U] = x @ kernel + input bias, h0 [B, U], recurrent_kernel [U, 3U],
    recurrent_bias [3U] -> hs [T, B, U] (hs[t] the state after step t).
    """
    steps = tf.shape(xp)[0]

    def forward(t, h, hs, z_a, r_a, hh_a, rh_a):
        x_z, x_r, x_h = tf.split(xp[t], 3, axis=1)
        inner = tf.matmul(h, recurrent_kernel) + recurrent_bias
        r_z, r_r, r_h = tf.split(inner, 3, axis=1)
        z = tf.sigmoid(x_z + r_z)
        r = tf.sigmoid(x_r + r_r)
        hh = tf.tanh(x_h + r * r_h)
        h = z * h + (1 - z) * hh
        return t + 1, h, hs.write(t, h), z_a.write(t, z), r_a.write(t, r), hh_a.write(t, hh), rh_a.write(t, r_h)

    arrays = [tf.TensorArray(xp.dtype, size=steps) for _ in range(5)]
    _, _, hs, zs, rs, hhs, rhs = tf.while_loop(lambda t, *_: t < steps, forward, (tf.constant(0), h0, *arrays))
    hs, zs, rs, hhs, rhs = hs.stack(), zs.stack(), rs.stack(), hhs.stack(), rhs.stack()

    def backward(dhs):
        h_prev = tf.concat([h0[None], hs[:-1]], axis=0)  # [T, B, U]: the state each step started from
        kernel_t = tf.transpose(recurrent_kernel)  # once, not a transposed matmul every step

        def step(i, dh_next, dxp, dinner):
            t = steps - 1 - i
            dh = dh_next + dhs[t]
            z, r, hh, r_h = zs[t], rs[t], hhs[t], rhs[t]
            da_h = dh * (1 - z) * (1 - hh * hh)
            da_z = dh * (h_prev[t] - hh) * z * (1 - z)
            da_r = da_h * r_h * r * (1 - r)
            d_inner = tf.concat([da_z, da_r, da_h * r], axis=1)
            dh_next = dh * z + tf.matmul(d_inner, kernel_t)
            return i + 1, dh_next, dxp.write(t, tf.concat([da_z, da_r, da_h], axis=1)), dinner.write(t, d_inner)

        arrays = [tf.TensorArray(xp.dtype, size=steps) for _ in range(2)]
        _, dh0, dxp, dinner = tf.while_loop(lambda i, *_: i < steps, step, (tf.constant(0), tf.zeros_like(h0), *arrays))
        dinner = dinner.stack()
        units3 = tf.shape(dinner)[2]
        flat_h = tf.reshape(h_prev, [-1, tf.shape(h0)[1]])
        d_kernel = tf.matmul(flat_h, tf.reshape(dinner, [-1, units3]), transpose_a=True)
        return dxp.stack(), dh0, d_kernel, tf.reduce_sum(dinner, axis=[0, 1])

    return hs, backward


def embedded_projection(embeddings, kernel, input_bias, ids):
    """Embedding(ids) @ kernel + input_bias, time-major [T, B, 3U], as a gather from the table
    embeddings @ kernel + input_bias.

    The gradients are Keras's own: the embedding's is the same IndexedSlices, one row per
    position, that Keras's Embedding produces (Keras's Adam updates only those rows, and the
    training curve depends on it); the kernel's is embeddings^T @ (the table's gradient), which
    sums the positions per character first instead of one [T*B, D] x [T*B, 3U] matmul.
    """
    ids_tm = tf.transpose(ids)  # [T, B]

    @tf.custom_gradient
    def project(embeddings, kernel, input_bias):
        table = tf.matmul(embeddings, kernel) + input_bias
        xp = tf.gather(table, ids_tm)

        def backward(dxp):
            flat_ids = tf.reshape(ids_tm, [-1])
            flat = tf.reshape(dxp, [-1, tf.shape(dxp)[2]])
            d_table = tf.math.unsorted_segment_sum(flat, flat_ids, tf.shape(embeddings)[0])
            d_embeddings = tf.IndexedSlices(tf.matmul(flat, tf.transpose(kernel)), flat_ids,
                                            tf.shape(embeddings, out_type=tf.int64))
            return d_embeddings, tf.matmul(embeddings, d_table, transpose_a=True), tf.reduce_sum(flat, axis=0)

        return xp, backward

    return project(embeddings, kernel, input_bias)


def input_table(model):
    """Layer 1's input projection for every character: embedding @ kernel + input bias, [V, 3U]."""
    first = model.rnns[0].cell
    return tf.matmul(model.embedding.embeddings.value, first.kernel.value) + first.bias.value[0]


def _read(variable):
    """A variable's value as a plain tensor: under a tf.distribute strategy `.value` is a
    distributed variable, which tf.custom_gradient would take for a captured variable."""
    return tf.identity(variable.value)


def forward(model, ids, states=None):
    """logits [B, T, V] and the new states of a CharRNN(GRU), computed by the fused path."""
    x, new_states = outputs(model, ids, states)
    if model.adaptive:
        return model.head(tf.transpose(x, [1, 0, 2])), new_states
    logits = tf.tensordot(x, model.dense.kernel.value, axes=1) + model.dense.bias.value
    return tf.transpose(logits, [1, 0, 2]), new_states


def outputs(model, ids, states=None):
    """The last GRU layer's outputs, time-major [T, B, U], and the new states."""
    ids = tf.convert_to_tensor(ids)
    if not ids.dtype.is_integer:  # Keras builds a distributed model on a (float) averaged batch
        ids = tf.cast(ids, tf.int32)
    batch = tf.shape(ids)[0]
    x = None  # time-major input of the current layer, [T, B, D]
    new_states = []
    for i, rnn in enumerate(model.rnns):
        cell = rnn.cell
        kernel = _read(cell.kernel)
        bias = _read(cell.bias)  # [2, 3U]: input bias, recurrent bias
        if i == 0:
            xp = embedded_projection(_read(model.embedding.embeddings), kernel, bias[0], ids)
        else:
            xp = tf.tensordot(x, kernel, axes=1) + bias[0]
        h0 = tf.zeros([batch, cell.units], xp.dtype) if states is None else tf.convert_to_tensor(states[i][0])
        x = gru_loop(xp, h0, _read(cell.recurrent_kernel), bias[1])
        new_states.append([x[-1]])
    return x, new_states
