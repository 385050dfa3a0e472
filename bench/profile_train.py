"""Where a training step's time goes, tutorial configuration (GRU 1024, batch 64, seq 100).

Prints the FLOPs of one step, the step time and achieved GFLOP/s of the reference (Keras GRU)
and of charrnn's fused GRU, and what these cores reach on the step's matmul shapes alone, so
the gap to the hardware limit is visible:

    .venv/bin/python bench/profile_train.py [--units 1024]
"""
from __future__ import annotations

import argparse
import time

import common  # first: quiets TensorFlow before anything imports it
import numpy as np


def timed(f, reps):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=1024)
    ap.add_argument("--emb", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    import keras
    import tensorflow as tf

    from charrnn.nn import network, training

    training.configure(42, 0)
    B, T, V, D, U = 64, 100, 66, a.emb, a.units
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, T)).astype(np.int32)
    y = rng.integers(0, V, (B, T)).astype(np.int32)
    rec = 2 * B * U * 3 * U * T  # one recurrent matmul over the sequence
    inp = 2 * B * T * D * 3 * U
    dense = 2 * B * T * U * V
    flops = {"keras": 3 * rec + 3 * inp + 3 * dense,  # fwd, d_input, d_weight for every matmul
             "fused": 3 * rec + inp + 3 * dense}  # the input projection: only d_embedding is per position
    print(f"load {common.load()}; {common.machine()}")
    print(f"GRU {U}, embedding {D}, batch {B}, seq {T}: recurrent matmuls {3 * rec / 1e9:.1f} GFLOP/step, "
          f"input projection {3 * inp / 1e9:.1f} (Keras) / {inp / 1e9:.1f} (fused), dense {3 * dense / 1e9:.1f}")

    # What the cores reach on the step's shapes, matmuls alone, chained like the loop.
    h = tf.random.normal((B, U))
    r = tf.random.normal((U, 3 * U))

    @tf.function
    def loop_matmuls():
        acc = h
        for _ in range(20):
            acc = tf.matmul(acc, r)[:, :U] * 1e-3
        return acc

    s = timed(loop_matmuls, a.reps)
    print(f"[{B},{U}]x[{U},{3 * U}] matmul, 20 chained:        {20 * 2 * B * U * 3 * U / s / 1e9:6.1f} GFLOP/s")
    hs = tf.random.normal((B * T, U))
    dz = tf.random.normal((B * T, 3 * U))
    s = timed(lambda: tf.matmul(hs, dz, transpose_a=True), a.reps)
    print(f"[{U},{B * T}]x[{B * T},{3 * U}] matmul (fused dR):     {2 * B * T * U * 3 * U / s / 1e9:6.1f} GFLOP/s")
    hst = tf.random.normal((20, B, U))
    dzt = tf.random.normal((20, B, 3 * U))

    @tf.function
    def per_step_dr():
        acc = tf.zeros((U, 3 * U))
        for i in range(20):
            acc += tf.matmul(hst[i], dzt[i], transpose_a=True)
        return acc

    s = timed(per_step_dr, a.reps)
    print(f"[{U},{B}]x[{B},{3 * U}] matmul + accumulate (per-step dR, Keras's way): "
          f"{20 * 2 * B * U * 3 * U / s / 1e9:6.1f} GFLOP/s")
    rt = tf.random.normal((3 * U, U))

    @tf.function
    def back_matmuls():
        acc = dzt[0]
        for _ in range(20):
            acc = tf.tile(tf.matmul(acc, rt) * 1e-3, [1, 3])
        return acc

    s = timed(back_matmuls, a.reps)
    print(f"[{B},{3 * U}]x[{3 * U},{U}] matmul, 20 chained (backward loop): {20 * 2 * B * U * 3 * U / s / 1e9:6.1f} GFLOP/s")

    cfg = network.ModelConfig(vocab_size=V, embedding_dim=D, units=U)
    for impl in ("keras", "fused"):
        m = network.build(cfg, rnn_impl=impl)
        m.compile(optimizer=keras.optimizers.Adam(0.001), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        step = timed(lambda: m.train_on_batch(x, y), a.reps)
        fwd_fn = tf.function(lambda: m(x))
        fwd = timed(fwd_fn, a.reps)
        print(f"{impl:5s}: train step {step:.3f} s ({B * T / step:,.0f} chars/s, {flops[impl] / step / 1e9:.1f} GFLOP/s); "
              f"forward alone {fwd:.3f} s ({B * T / fwd:,.0f} chars/s); load {common.load()}")


if __name__ == "__main__":
    main()
