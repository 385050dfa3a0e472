"""What a call costs: the generator stepping 64 rows a few characters per call, as `charrnn serve`
does when crowded (an eighth of its chunk: 12 characters), against many characters per call:

    .venv/bin/python bench/step_calls.py [--rows 64] [--chars 300] [--calls 12,300] [--rounds 3]

The library alone (Generator.stream in this process, no HTTP); default-size model (GRU 512,
embedding 128, 65 characters), random weights. Each round times every call size once, after a
warm-up; chars/s is rows x chars over the time.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import common  # first: quiets TensorFlow before anything imports it
from serve import default_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--chars", type=int, default=300)
    ap.add_argument("--calls", default="12,300", help="characters per call, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    from charrnn.nn import network
    from charrnn.sampling import generation

    generation.configure_threads()
    load_before = common.load()
    sizes = [int(c) for c in a.calls.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        generator = generation.Generator(*network.load(default_model(Path(tmp))))
    rates = {size: [] for size in sizes}
    for size in sizes:
        chars_per_s(generator, a.rows, a.chars, size)  # traces the graphs
    for _ in range(a.rounds):
        for size in sizes:
            rates[size].append(chars_per_s(generator, a.rows, a.chars, size))
    print(f"### Generator, {a.rows} rows x {a.chars} characters, by characters per call ({common.now()})\n")
    for size, values in rates.items():
        print(f"- {size} characters per call: " + ", ".join(f"{v:,.0f}" for v in values) + " chars/s")
    print(f"\nmachine: {common.machine()}; load average {load_before} before, {common.load()} after")
    print("command: .venv/bin/python bench/step_calls.py " + " ".join(sys.argv[1:]))


def chars_per_s(generator, rows: int, chars: int, per_call: int) -> float:
    from charrnn.sampling.settings import SamplingSettings

    settings = SamplingSettings(chars, 0.8, top_k=0, top_p=1.0, seed=0)
    started = time.perf_counter()
    for _ in generator.stream(["ROMEO:"] * rows, settings, chunk=per_call):
        pass
    return rows * chars / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
