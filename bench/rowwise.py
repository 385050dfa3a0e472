"""Row-by-row products (charrnn.nn.stepping.rowwise: in column blocks; and over the whole matrix,
as before 2026-12-07) against a matrix product, at the tutorial's GRU-1024 recurrent kernel
([B, 1024] x [1024, 3072]), under the CPU pin:

    .venv/bin/python bench/rowwise.py [--steps 300] [--repeats 3]

1. batch invariance: for B = 1..64, whether row i of a B-row product has the bits of row i of the
   64-row product (one character per B: '=' equal, 'x' differs);
2. speed: milliseconds per character of a while loop of such products (tanh between them), at
   1, 2, 8 and 64 rows, best of `repeats`;
3. the bits under every oneDNN instruction-set limit and 1, 2 and 8 threads (fresh processes):
   a hash of the products of 1, 2, 7, 25 and 64 rows.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import common  # first: quiets TensorFlow before anything imports it

ISAS = ("SSE41", "AVX", "AVX2", "AVX512_CORE")
THREADS = (1, 2, 8)


def operands():
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w = tf.constant(rng.normal(size=(1024, 3072)).astype(np.float32) * 0.03)
    h = tf.constant(rng.normal(size=(64, 1024)).astype(np.float32))
    return w, h


def products():
    """{name: (lay out w once, x @ laid-out w)}."""
    import tensorflow as tf

    from charrnn.nn import stepping

    def whole(x, w):
        return tf.linalg.matmul(x[:, None, :], w)[:, 0, :]

    return {"matrix product (tf.matmul)": (lambda w: w, tf.matmul),
            "row by row, whole matrix": (lambda w: w, whole),
            "row by row in column blocks": (stepping.column_blocks, lambda x, b: stepping.rowwise(x, b, 3072))}


def invariance(product, w, h) -> str:
    import numpy as np
    import tensorflow as tf

    prepare, multiply = product
    laid_out = prepare(w)
    f = tf.function(lambda x: multiply(x, laid_out))
    full = f(h).numpy()
    return "".join("=" if np.array_equal(f(h[:b]).numpy(), full[:b]) else "x" for b in range(1, 65))


def ms_per_step(product, w, h, rows: int, steps: int, repeats: int) -> float:
    import tensorflow as tf

    prepare, multiply = product

    @tf.function
    def loop(x):
        laid_out = prepare(w)  # once per call, as the generator's graphs do
        return tf.while_loop(lambda t, x: t < steps, lambda t, x: (t + 1, tf.tanh(multiply(x, laid_out)[:, :1024])),
                             (0, x))[1]

    x = h[:rows]
    loop(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        loop(x).numpy()
        best = min(best, time.perf_counter() - start)
    return best * 1000 / steps


def bits() -> None:
    """In a child process: the hashes of both products, as JSON on stdout."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["THREADS"]))
    w, h = operands()
    out = {}
    for name, product in products().items():
        digest = hashlib.sha256()
        prepare, multiply = product
        for rows in (1, 2, 7, 25, 64):
            digest.update(multiply(h[:rows], prepare(w)).numpy().tobytes())
        out[name] = digest.hexdigest()[:16]
    print(json.dumps(out))


def main():
    if os.environ.get("ROWWISE_CHILD"):
        return bits()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    load_before = common.load()
    w, h = operands()
    print(f"### Row-by-row products against a matrix product ({common.now()})\n")
    print("batch invariance, B = 1..64 ('=': row i of B rows has the bits of row i of 64 rows):")
    for name, product in products().items():
        print(f"  {name:30s} {invariance(product, w, h)}")
    print("\nms per step, [B, 1024] x [1024, 3072] (best of %d, %d steps):" % (a.repeats, a.steps))
    for name, product in products().items():
        times = ", ".join(f"{rows} rows {ms_per_step(product, w, h, rows, a.steps, a.repeats):.3f}"
                          for rows in (1, 2, 8, 64))
        print(f"  {name:30s} {times}")
    print("\nbits under each oneDNN instruction-set limit and thread count (hash of 1, 2, 7, 25, 64 rows):")
    for isa in ISAS:
        for threads in THREADS:
            env = {**os.environ, "ROWWISE_CHILD": "1", "THREADS": str(threads), "ONEDNN_MAX_CPU_ISA": isa}
            done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, check=True)
            hashes = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  ONEDNN_MAX_CPU_ISA={isa:11s} threads {threads}: " + ", ".join(f"{k} {v}" for k, v in hashes.items()))
    print(f"\nmachine: {common.machine()}; load average {load_before} before, {common.load()} after")
    print(f"command: .venv/bin/python bench/rowwise.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
