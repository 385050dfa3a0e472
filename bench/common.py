"""Shared by the benchmarks: the text, the machine, timing and the table.

Every benchmark imports this module first. charrnn is imported the one way the project has:
installed (editable) in the venv by `make install`; run benchmarks with `.venv/bin/python bench/<name>.py`.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from charrnn.core.quiet import quiet_tensorflow

quiet_tensorflow()  # before anything imports TensorFlow
os.environ.setdefault("CHARRNN_TRACKING", "0")

REPO = Path(__file__).resolve().parent.parent
TINY = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
TINY_CHARS = 1_115_394
# tiny shakespeare's 65 characters, and roughly its letter frequencies, for the stand-in text
ALPHABET = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def generated_text(n_chars: int, seed: int = 0) -> str:
    """Text of n_chars over ALPHABET: word-like runs of lower-case letters, some capitals,
    punctuation and newlines, so its character statistics resemble English prose."""
    rng = np.random.default_rng(seed)
    weights = np.ones(len(ALPHABET))
    for i, c in enumerate(ALPHABET):
        if c.islower():
            weights[i] = 30
        elif c.isupper():
            weights[i] = 3
    weights[ALPHABET.index(" ")] = 150
    weights[ALPHABET.index("\n")] = 30
    weights[ALPHABET.index("e")] = 80
    weights /= weights.sum()
    codes = np.frombuffer(ALPHABET.encode("ascii"), np.uint8)
    out = codes[rng.choice(len(ALPHABET), size=n_chars, p=weights)]
    out[: len(ALPHABET)] = codes  # every character occurs
    return out.tobytes().decode("ascii")


def corpus_text() -> tuple[str, str]:
    """(text, where it came from): tiny shakespeare when present, else generated text like it."""
    if TINY.exists():
        return TINY.read_text(encoding="utf-8"), str(TINY)
    return generated_text(TINY_CHARS), f"generated ({TINY_CHARS:,} characters over tiny shakespeare's 65)"


def machine() -> str:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = ", ".join(f for f in ("avx2", "avx512f", "fma") if f" {f}" in text)
    except OSError:
        pass
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{model}, {os.cpu_count()} logical cores ({flags}), "
            f"{'GPU: ' + str(len(gpus)) if gpus else 'no GPU'}, TensorFlow {tf.__version__}")


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def median(xs) -> float:
    return statistics.median(xs)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def table(rows: list[dict]) -> str:
    """Markdown table of rows with keys: row, reference, ours, unit, ratio, target, met."""
    head = ["benchmark", "reference", "charrnn", "unit", "ratio", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ref = "" if r.get("reference") is None else f"{r['reference']:,.0f}" if r["reference"] >= 100 else f"{r['reference']:.3g}"
        ours = f"{r['ours']:,.0f}" if r["ours"] >= 100 else f"{r['ours']:.3g}"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        met = {True: "yes", False: "**no**", None: ""}[r.get("met")]
        lines.append(f"| {r['row']} | {ref} | {ours} | {r['unit']} | {ratio} | {r.get('target', '')} | {met} |")
    return "\n".join(lines)
