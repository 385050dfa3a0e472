"""The CPU kernels TensorFlow may use, pinned before it loads (the same kernels on every x86-64
CPU with AVX2, as far as TensorFlow lets them be; see below for what that does not give).

TensorFlow's CPU results depend on the CPU in two ways, both measured (bench/isa.py):
- It turns its oneDNN custom ops (matmul, softmax, ...) on by itself only on CPUs with AVX-512
  VNNI/BF16 or AMX, and they sum in another order than the Eigen ops other CPUs run.
  TF_ENABLE_ONEDNN_OPTS=0: the Eigen ops everywhere.
- Eigen's matrix products still call oneDNN's sgemm, whose JIT kernels differ by instruction set
  (SSE4.1, AVX, AVX2 and AVX-512 each give other model bytes). ONEDNN_MAX_CPU_ISA=AVX2: the
  AVX2 kernels on every CPU that has AVX2.
Both are what an AVX2 CPU without AVX-512 runs anyway, so they cost nothing there. They do not
make two kinds of CPU agree: an AMD EPYC and an Intel Xeon with AVX-512, both pinned, trained
other bytes (oneDNN's sgemm differs by CPU, not only by instruction set). Eigen's own kernel
(TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=false) made the Xeon's bytes independent of oneDNN's
instruction set, at 1.36x the time a step, but Eigen sizes a product's blocks by the L1 cache,
so it is not taken as a fix that could not be shown on a second kind of CPU (BENCHMARKS.md).
oneDNN and TensorFlow read them once, when TensorFlow loads: pin() runs from charrnn/__init__.py, so
importing any part of charrnn before TensorFlow is enough (every stage, the CLI, `charrnn serve`,
the MLflow model, the tests, bench/).

A value the user set is kept (say, to try AVX-512's speed), but it breaks the promise of README
"Reproducibility"; describe() records what was in effect as run tags.
"""
from __future__ import annotations

import os
import platform

PINS = {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# the /proc/cpuinfo flags that decide which kernels oneDNN and TensorFlow pick
FLAGS = ("sse4_1", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def pin() -> None:
    for name, value in PINS.items():
        os.environ.setdefault(name, value)


def pinned() -> bool:
    """Whether this process runs the promised kernels: both pins in effect, on a CPU with AVX2."""
    return all(os.environ.get(k) == v for k, v in PINS.items()) and "avx2" in cpu_flags()


def cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def describe() -> dict[str, str]:
    """The CPU, its core count and the pins in effect, as run tags (never in a DVC-tracked output)."""
    flags = cpu_flags()
    return {
        "charrnn.cpu_model": _cpuinfo().get("model name", platform.processor() or "unknown"),
        "charrnn.cpu_arch": platform.machine(),
        "charrnn.cpu_flags": " ".join(f for f in FLAGS if f in flags) or "unknown",
        "charrnn.cpu_count": str(os.cpu_count() or 0),  # train.threads 0 means this many, and threads change sums
        "charrnn.cpu_pins": " ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in PINS),
        "charrnn.cpu_pinned": str(pinned()).lower(),
    }


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (Linux); {} elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in fields}
