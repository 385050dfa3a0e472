"""The held-out text: where the corpus splits into training and validation text, and the prompts
drawn from the held-out part. Without TensorFlow.

The corpus is split contiguously: the first (1 - val_fraction) of its characters train, the tail
validates, so no validation window overlaps a training one (a random split of overlapping windows
would leak). Every stage that needs the split (make_tfrecords, evaluate_perplexity, sample) takes
it from here, counting the corpus once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from charrnn.core.errors import CharrnnError
from charrnn.data.vocab import Vocabulary, read_chunks


class SplitError(CharrnnError, ValueError):
    pass


def split_point(n_chars: int, val_fraction: float) -> int:
    """Index of the first validation character."""
    return int(round(n_chars * (1.0 - val_fraction)))


def count_chars(path: str | Path) -> int:
    return sum(len(chunk) for chunk in read_chunks(path))


def iter_text(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[str]:
    """The corpus's characters [start, stop), chunk by chunk."""
    pos = 0
    for chunk in read_chunks(path):
        lo, hi = pos, pos + len(chunk)
        pos = hi
        if hi <= start:
            continue
        if stop is not None and lo >= stop:
            break
        yield chunk[max(start - lo, 0):len(chunk) if stop is None else min(stop - lo, len(chunk))]


@dataclass(frozen=True)
class TextSpan:
    """Characters [start, stop) of a corpus file, re-readable: each iteration streams them anew."""
    path: Path
    start: int = 0
    stop: int | None = None

    def __iter__(self) -> Iterator[str]:
        return iter_text(self.path, self.start, self.stop)

    def ids(self, vocab: Vocabulary) -> Iterator[np.ndarray]:
        """The span's ids, chunk by chunk."""
        for text in self:
            yield vocab.encode(text)


@dataclass(frozen=True)
class Split:
    """A corpus file cut at `at`: characters [0, at) train, [at, chars) are held out."""
    corpus: Path
    chars: int
    at: int

    @classmethod
    def of(cls, corpus: str | Path, val_fraction: float) -> "Split":
        n = count_chars(corpus)
        return cls(Path(corpus), n, split_point(n, val_fraction))

    @property
    def train(self) -> TextSpan:
        return TextSpan(self.corpus, 0, self.at)

    @property
    def held_out(self) -> TextSpan:
        return TextSpan(self.corpus, self.at, None)

    def check_long_enough(self, seq_length: int, val_fraction: float) -> None:
        """Both parts hold at least one window of seq_length + 1 characters."""
        need = seq_length + 1
        if self.at < need or self.chars - self.at < need:
            raise SplitError(
                f"the corpus has {self.chars:,} characters; with seq_length={seq_length} and "
                f"val_fraction={val_fraction} it needs at least {minimum_chars(seq_length, val_fraction):,} "
                f"(one training and one validation window of {need} characters each)")

    def prompts(self, count: int = 3, max_chars: int = 40) -> list[str]:
        """`count` prompts from the held-out text, whatever the corpus's language: at evenly
        spaced places, the first line after that place that holds something, up to `max_chars`.
        A SplitError when there is none (a held-out text of blank lines)."""
        prompts = []
        for i in range(count):
            start = self.at + (self.chars - self.at) * i // count
            window = "".join(iter_text(self.corpus, start, start + 4096))
            if "\n" in window:  # from the next line on: a prompt starts where a line does
                window = window[window.find("\n") + 1:]
            line = next((line for line in window.split("\n") if line.strip()), "")
            if line:
                prompts.append(line[:max_chars])
        if not prompts:
            raise SplitError(
                f"the held-out text (characters {self.at:,} to {self.chars:,} of {self.corpus}) has no usable line "
                "to draw a sample prompt from: near each place looked at it is blank lines only; set "
                "sample.prompts (e.g. `dvc exp run -S 'sample.prompts=[\"ROMEO:\"]'`), or change data.val_fraction "
                "or the corpus so that its last part holds text")
        return prompts


def minimum_chars(seq_length: int, val_fraction: float) -> int:
    """The fewest characters whose split leaves a window of seq_length + 1 on both sides."""
    need = seq_length + 1

    def enough(n: int) -> bool:  # both parts only grow with n
        return split_point(n, val_fraction) >= need and n - split_point(n, val_fraction) >= need

    n = max(math.ceil(need / (1 - val_fraction)), math.ceil(need / val_fraction))  # within a few of the answer
    while enough(n - 1):
        n -= 1
    while not enough(n):
        n += 1
    return n
