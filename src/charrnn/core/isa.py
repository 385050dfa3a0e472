"""The CPU kernels TensorFlow may use, pinned before it loads, so that every x86-64 CPU with AVX2
trains the same bytes (measured on an AMD EPYC with AVX2 only, an AMD EPYC with AVX-512 and an
Intel Xeon with AVX-512 and AMX; see README "Reproducibility" for what is and is not promised).

TensorFlow's CPU results depend on the CPU in three ways, all measured (tests/isa_probe.py):
- It turns its oneDNN custom ops (matmul, softmax, ...) on by itself only on CPUs with AVX-512
  VNNI/BF16 or AMX, and they sum in another order than the Eigen ops other CPUs run.
  TF_ENABLE_ONEDNN_OPTS=0: the Eigen ops everywhere.
- Eigen's matrix products call oneDNN's sgemm, whose JIT kernels differ by instruction set
  (SSE4.1, AVX, AVX2 and AVX-512 each give other model bytes).
- With AVX2 as the best instruction set it may use, oneDNN's sgemm (in the thread-pool build
  TensorFlow ships) chooses how many threads share a product from the CPU's L2 cache size, and
  so how its sums are split: an AMD EPYC (1 MiB L2) and an Intel Xeon (2 MiB) trained other
  bytes, both limited to AVX2. Limited to SSE4.1 it takes no cache size into account.
ONEDNN_MAX_CPU_ISA=SSE41 avoids both of the last two: the same kernels and the same threading on
every CPU. The price is speed: SSE4.1's 4-wide products instead of AVX2's 8-wide FMA
(bench/isa.py; README "Speed"). A user who wants the speed sets ONEDNN_MAX_CPU_ISA (or
TF_ENABLE_ONEDNN_OPTS) themselves: the value is kept, the promise no longer holds, and
describe() records what was in effect as run tags.

oneDNN and TensorFlow read both once, when TensorFlow loads: pin() runs from charrnn/__init__.py,
so importing any part of charrnn before TensorFlow is enough (every stage, the CLI, `charrnn
serve`, the MLflow model, the tests, bench/).
"""
from __future__ import annotations

import os
import platform

PINS = {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "SSE41"}
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
