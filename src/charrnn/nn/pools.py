"""TensorFlow's thread pools, sized once per process, before it runs any op.

The intra-op pool (the threads one op shares) is part of every result: a matrix product splits its
sums between them, so each stage that runs TensorFlow sizes it from `train.threads` (README
"Reproducibility"). The inter-op pool only schedules ops, and its size changes no bits.
"""
from __future__ import annotations

import os

import tensorflow as tf


def fix(threads: int = 0, inter_op: int = 0) -> None:
    """`threads` intra-op threads (0: all cores) and `inter_op` inter-op threads (0: as many). A
    process that already ran an op keeps its pools (tests, notebooks; no stage runs one first)."""
    n = threads or os.cpu_count() or 1
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op or n)
    except RuntimeError:
        pass
