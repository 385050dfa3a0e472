"""What the CPU-kernel pin costs (charrnn.core.isa): training steps per second, pinned and not.

    .venv/bin/python bench/isa.py [--repeats 3]

Each measurement is a fresh process (TensorFlow and oneDNN read the variables once, at load):
train_on_batch on random ids with the stage's own compiled model (charrnn.training.build_model),
after warm-up steps. Variants:
- pinned: what charrnn runs everywhere (TF_ENABLE_ONEDNN_OPTS=0, ONEDNN_MAX_CPU_ISA=AVX2);
- sse41: oneDNN's sgemm limited to SSE4.1 (TF_ENABLE_ONEDNN_OPTS=0, ONEDNN_MAX_CPU_ISA=SSE41), the
  kernels that trained the same bytes on an AMD EPYC with AVX2, one with AVX-512 and an Intel Xeon
  with AVX-512 and AMX (bench/results/isa-bytes-*.txt);
- avx, avx2: oneDNN's sgemm limited to AVX (no FMA) or AVX2;
- eigen-kernel: the pin plus TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=false, Eigen's own matrix
  kernel instead of oneDNN's sgemm (tried on 2026-12-02 for the same bytes on every CPU; not taken);
- unpinned: TensorFlow's and oneDNN's own choice on this CPU (both variables left to them);
- onednn-ops: TF_ENABLE_ONEDNN_OPTS=1, the custom ops TensorFlow turns on by itself on CPUs with
  AVX-512 VNNI/BF16 or AMX (on a CPU without them, an estimate of what the pin gives up there).
On a CPU with AVX2 and no AVX-512, pinned and unpinned run the same kernels: the target is no
loss there; elsewhere the figures are the price of one committed dvc.lock for every runner.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import common  # first: quiets TensorFlow before anything imports it

SIZES = {  # name: (train params, seq_length, timed steps)
    "tiny": ({"embedding_dim": 16, "units": 32, "batch_size": 16}, 32, 200),
    "default": ({}, 100, 10),  # TrainParams' defaults: GRU 512, embedding 128, batch 64 (2 s a step on 2 cores)
}
VARIANTS = {
    "pinned": {},
    "sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "avx": {"ONEDNN_MAX_CPU_ISA": "AVX"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "eigen-kernel": {"TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false"},
    "unpinned": {"ONEDNN_MAX_CPU_ISA": "DEFAULT"},  # and TF_ENABLE_ONEDNN_OPTS as TensorFlow picks it
    "onednn-ops": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "DEFAULT"},
}
VOCAB_SIZE = 66


def child(size: str) -> None:
    """Steps per second of one size in this process, as JSON on stdout."""
    import numpy as np

    from charrnn.core.params import TrainParams
    from charrnn.data.vocab import Vocabulary
    from charrnn.nn import training

    overrides, seq_length, steps = SIZES[size]
    params = TrainParams(**overrides, threads=0)
    training.configure(params.seed, params.threads)
    vocab = Vocabulary(tuple(chr(32 + i) for i in range(VOCAB_SIZE - 1)), (1,) * (VOCAB_SIZE - 1))
    model = training.build_model(params, vocab, total_steps=10 * steps)
    rng = np.random.default_rng(0)
    x = rng.integers(1, vocab.size, (params.batch_size, seq_length)).astype("int32")
    y = rng.integers(1, vocab.size, (params.batch_size, seq_length)).astype("int32")
    for _ in range(5):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    print(json.dumps({"steps_per_sec": steps / (time.perf_counter() - start)}))


def measure(size: str, variant: str) -> float:
    env = {**os.environ, **VARIANTS[variant]}
    if variant == "unpinned":  # unset, charrnn would pin it on import: say what TensorFlow would pick
        env["TF_ENABLE_ONEDNN_OPTS"] = _tensorflow_default()
    done = subprocess.run([sys.executable, __file__, "--child", size], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["steps_per_sec"]


def _tensorflow_default() -> str:
    """TensorFlow's own choice of oneDNN custom ops on this CPU (on with AVX-512 VNNI/BF16 or AMX)."""
    flags = set(open("/proc/cpuinfo").read().split())
    return "1" if flags & {"avx512_vnni", "avx512_bf16", "amx_tile"} else "0"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default=",".join(SIZES), help="comma-separated, of: " + ", ".join(SIZES))
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--child", choices=sorted(SIZES))
    a = ap.parse_args()
    if a.child:
        return child(a.child)
    variants = ["pinned"] + [v for v in a.variants.split(",") if v != "pinned"]
    unknown = set(variants + a.sizes.split(",")) - set(VARIANTS) - set(SIZES)
    if unknown:
        ap.error(f"unknown: {', '.join(sorted(unknown))}")
    print(f"{common.now()}; load {common.load()}; {common.machine()}\n")
    print("| size | variant | steps/s (median of %d) | range | vs pinned |" % a.repeats)
    print("|---|---|---|---|---|")
    for size in a.sizes.split(","):
        runs = {variant: [] for variant in variants}
        for _ in range(a.repeats):  # variant after variant, so that a change of load falls on all of them
            for variant in variants:
                runs[variant].append(measure(size, variant))
        pinned = statistics.median(runs["pinned"])
        for variant, got in runs.items():
            median = statistics.median(got)
            print(f"| {size} | {variant} | {median:.2f} | {min(got):.2f}-{max(got):.2f} | {median / pinned:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
