"""The same CPU kernels on every x86-64 CPU with AVX2, chosen before TensorFlow loads.

TensorFlow's CPU results depend on the CPU in two ways, both measured (tests/test_isa.py):
- It turns its oneDNN custom ops (matmul, softmax, ...) on by itself only on CPUs with AVX-512
  VNNI/BF16 or AMX, and they sum in another order than the Eigen ops other CPUs run.
  TF_ENABLE_ONEDNN_OPTS=0: the Eigen ops everywhere.
- Eigen's matrix products still hand their inner kernel to oneDNN's sgemm, whose JIT kernels
  differ by instruction set and by CPU: SSE4.1, AVX and AVX2 give other model bytes, and so did an
  AMD EPYC and an Intel Xeon both limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, the pin before this
  one). TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL=false: Eigen's own kernel, compiled into the
  wheel, the same code on every CPU; the bytes then no longer change with the instruction set
  oneDNN is limited to (SSE4.1, AVX2, AVX-512 with AMX: one model). ONEDNN_MAX_CPU_ISA=AVX2 stays
  for whatever else still reaches oneDNN.
TensorFlow and oneDNN read them once, when TensorFlow loads: pin() runs from charrnn/__init__.py,
so importing any part of charrnn before TensorFlow is enough (every stage, the CLI, `charrnn
serve`, the MLflow model, the tests, bench/).

A value the user set is kept (say, to try AVX-512's speed), but it breaks the promise of README
"Reproducibility"; describe() records what was in effect as run tags.
"""
from __future__ import annotations

import os
import platform

PINS = {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2", "TENSORFLOW_USE_CUSTOM_CONTRACTION_KERNEL": "false"}
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
