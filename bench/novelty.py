"""copy_metrics (charrnn.novelty) on tiny shakespeare and on a generated corpus of --gb GB: seconds,
MB/s, peak memory and passes over the corpus, for samples that copy it and samples that do not.

    .venv/bin/python bench/novelty.py [--gb 1.0] [--corpus data/raw/corpus.txt ...]

Each measurement runs in its own process (this script with --measure), so its peak resident memory
(os.wait4's ru_maxrss) is its own: Python, NumPy and copy_metrics, not the corpus writer. The
samples are 3 x 500 characters: "copied" are slices of the corpus, "novel" are generated text of
the same character frequencies (what a model that learnt only those would write).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ALPHABET, TINY, TINY_CHARS, generated_text, load, now

from charrnn.data import split
from charrnn.sampling import novelty

SAMPLES, SAMPLE_CHARS = 3, 500
PIECE_CHARS = 8 << 20  # the generated corpus is written this much at a time


class CountedPasses:
    """Chunks that count how many times a pass over them starts reading."""

    def __init__(self, chunks):
        self.chunks, self.passes = chunks, 0

    def __iter__(self):
        self.passes += 1
        yield from self.chunks


def measure(corpus: Path, stop: int) -> None:
    """The child: copy_metrics of the samples on stdin against the first `stop` characters of `corpus`."""
    samples = json.loads(sys.stdin.read())
    chunks = CountedPasses(split.TextSpan(corpus, 0, stop))
    start = time.perf_counter()
    metrics = novelty.copy_metrics(chunks, samples)
    print(json.dumps({"seconds": time.perf_counter() - start, "passes": chunks.passes, "metrics": metrics}))


def run_child(corpus: Path, stop: int, samples: list[str]) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--measure", str(corpus), str(stop)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(json.dumps(samples).encode())
    proc.stdin.close()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # not communicate(): it would reap the child first
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"the measurement of {corpus} failed")
    return {**json.loads(out), "peak_rss": usage.ru_maxrss * 1024}  # ru_maxrss is in KiB on Linux


def novel_samples() -> list[str]:
    # generated_text starts with the whole alphabet, as every piece of the generated corpus does
    return [generated_text(len(ALPHABET) + SAMPLE_CHARS, seed=10_000 + i)[len(ALPHABET):] for i in range(SAMPLES)]


def copied_samples(text: str, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [text[s:s + SAMPLE_CHARS] for s in rng.integers(len(text) - SAMPLE_CHARS, size=SAMPLES)]


def write_generated(path: Path, n_chars: int) -> list[str]:
    """n_chars of generated text, PIECE_CHARS at a time (different seeds); returns copied samples
    from its first, middle and last pieces."""
    pieces = range(0, n_chars, PIECE_CHARS)
    chosen = {pieces[0], pieces[len(pieces) // 2], pieces[-1]}
    samples = []
    with open(path, "w", encoding="utf-8", newline="") as f:
        for at in pieces:
            piece = generated_text(min(PIECE_CHARS, n_chars - at), seed=at)
            f.write(piece)
            if at in chosen:
                samples += copied_samples(piece, seed=at)[:1]
    return (samples * SAMPLES)[:SAMPLES]


def rows_for(name: str, corpus: Path, stop: int, copied: list[str]) -> list[dict]:
    mb = corpus.stat().st_size / 1e6
    return [{"corpus": name, "samples": kind, "chars": stop, "mb": mb, **run_child(corpus, stop, samples)}
            for kind, samples in (("copied", copied), ("novel", novel_samples()))]


def table(rows: list[dict]) -> str:
    head = ["corpus", "samples", "characters", "seconds", "MB/s", "MB/s per pass", "peak RSS (MiB)",
            "passes", "copied_frac_20", "longest_copied"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m = r["metrics"]
        lines.append(f"| {r['corpus']} | {r['samples']} | {r['chars']:,} | {r['seconds']:.1f} | "
                     f"{r['mb'] / r['seconds']:.1f} | {r['mb'] * r['passes'] / r['seconds']:.1f} | "
                     f"{r['peak_rss'] / 2**20:.0f} | {r['passes']} | {m['copied_frac_20']:.3f} | "
                     f"{m['longest_copied']} |")
    return "\n".join(lines)


def main(gb: float, corpora: list[Path]) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="charrnn-bench-novelty-"))
    try:
        if TINY.exists():
            tiny, name = TINY, "tiny shakespeare"
        else:
            tiny, name = scratch / "tiny.txt", "generated, tiny shakespeare's size"
            tiny.write_text(generated_text(TINY_CHARS), encoding="utf-8")
        text = tiny.read_text(encoding="utf-8")
        rows = rows_for(name, tiny, len(text), copied_samples(text, seed=0))
        for corpus in corpora:  # e.g. the default corpus, data/raw/corpus.txt after `make run`
            text = corpus.read_text(encoding="utf-8")
            rows += rows_for(str(corpus), corpus, len(text), copied_samples(text, seed=0))

        n_chars = int(gb * 1e9)
        big = scratch / "generated.txt"
        copied = write_generated(big, n_chars)
        rows += rows_for(f"generated, {gb:g} GB", big, n_chars, copied)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"copy_metrics (ngram=20, also=(50,)), {SAMPLES} samples of {SAMPLE_CHARS} characters; {now()}, "
          f"{os.cpu_count()} logical cores, load average {load()} at the end\n")
    print(table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the generated corpus in GB (1e9 characters)")
    parser.add_argument("--corpus", type=Path, action="append", default=[],
                        help="also measure on this UTF-8 text file (repeatable), e.g. data/raw/corpus.txt")
    parser.add_argument("--measure", nargs=2, metavar=("CORPUS", "STOP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(Path(args.measure[0]), int(args.measure[1]))
    else:
        main(args.gb, args.corpus)
