"""The held-out text: where the corpus splits into training and validation text, and the prompts
drawn from the held-out part. Without TensorFlow.

The corpus is split contiguously: the first (1 - val_fraction) of its characters train, the tail
validates, so no validation window overlaps a training one (a random split of overlapping windows
would leak). A corpus of many documents (a folder, a glob, an archive: data/raw/documents.json,
written by download, says where each one is) is split so in each document: the held-out text is
the tails of all of them, so a folder of novels is evaluated on every novel, not only the last.
Every stage that needs the split (make_tfrecords, evaluate_perplexity, sample) takes it from here,
counting the corpus once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from charrnn.core import files, paths
from charrnn.core.errors import CharrnnError
from charrnn.data.vocab import Vocabulary, read_chunks, read_utf8

INDEX_BYTES = 1 << 24  # the character index of a corpus (CharIndex) marks every 16 MiB


class SplitError(CharrnnError, ValueError):
    pass


def split_point(n_chars: int, val_fraction: float) -> int:
    """Index of the first validation character."""
    return int(round(n_chars * (1.0 - val_fraction)))


def count_chars(path: str | Path) -> int:
    return CharIndex.of(path).chars


@dataclass(frozen=True)
class CharIndex:
    """Characters of a UTF-8 file, counted from its bytes without decoding them (a character is
    a byte that is not a continuation byte, 0b10xxxxxx), and how many precede every
    INDEX_BYTES-th byte: a character's byte offset is then found by reading one block."""
    path: Path
    chars: int
    marks: tuple[int, ...]  # characters before byte k * INDEX_BYTES

    @classmethod
    def of(cls, path: str | Path) -> "CharIndex":
        marks, chars = [], 0
        with open(path, "rb") as f:
            while block := f.read(INDEX_BYTES):
                marks.append(chars)
                chars += len(block) if block.isascii() else _leads(block).sum()
        return cls(Path(path), int(chars), tuple(int(m) for m in marks))

    def byte_offset(self, char: int) -> int:
        """Where character `char` (0 <= char <= chars) starts in the file."""
        return self.byte_offsets([char])[0]

    def byte_offsets(self, chars: Iterable[int]) -> list[int]:
        """byte_offset of each of `chars`, reading each block that holds one of them once (a
        corpus of 100,000 documents is cut at 200,000 places)."""
        chars = list(chars)
        found = {}
        blocks = {}
        for char in sorted(set(chars)):
            if char >= self.chars:
                found[char] = self.path.stat().st_size
                continue
            blocks.setdefault(int(np.searchsorted(self.marks, char, side="right")) - 1, []).append(char)
        with open(self.path, "rb") as f:
            for k, wanted in blocks.items():
                f.seek(k * INDEX_BYTES)
                block = f.read(INDEX_BYTES)
                skips = np.array(wanted) - self.marks[k]
                starts = skips if block.isascii() else np.flatnonzero(_leads(block))[skips]
                found.update(zip(wanted, (k * INDEX_BYTES + starts).tolist()))
        return [found[char] for char in chars]


def _leads(block: bytes) -> np.ndarray:
    """Whether each byte starts a character (is not a UTF-8 continuation byte)."""
    return (np.frombuffer(block, dtype=np.uint8) & 0xC0) != 0x80


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

    def ids(self, vocab: Vocabulary, dtype=np.int32, index: "CharIndex | None" = None) -> Iterator[np.ndarray]:
        """The span's ids, chunk by chunk, read as UTF-8 bytes from where the span starts
        (`index` of the corpus, when the caller has it, saves counting it again)."""
        index = index or CharIndex.of(self.path)
        start, stop = index.byte_offsets([self.start, index.chars if self.stop is None else self.stop])
        for chunk in read_utf8(self.path, start, stop):
            yield vocab.encode_utf8(chunk, dtype)


@dataclass(frozen=True)
class TextSpans:
    """Several spans [start, stop) of a corpus file, read one after the other, re-readable."""
    path: Path
    ranges: tuple[tuple[int, int], ...]

    def __iter__(self) -> Iterator[str]:
        return (text for start, stop in self.ranges for text in iter_text(self.path, start, stop))

    def ids(self, vocab: Vocabulary, dtype=np.int32, index: "CharIndex | None" = None) -> Iterator[np.ndarray]:
        index = index or CharIndex.of(self.path)
        offsets = index.byte_offsets(c for r in self.ranges for c in r)
        for start, stop in zip(offsets[0::2], offsets[1::2]):
            for chunk in read_utf8(self.path, start, stop):
                yield vocab.encode_utf8(chunk, dtype)


def read_documents(corpus: str | Path) -> list[dict]:
    """The documents of the corpus, from documents.json beside it (download writes it): name,
    bytes, sha256, start, stop; [] when there is no such file (a corpus written by hand, or
    before there were documents)."""
    path = Path(corpus).with_name(paths.DOCUMENTS.name)
    if not path.is_file():
        return []
    try:
        documents = files.read_json(path)["documents"]
        for d in documents:
            d["start"], d["stop"], d["bytes"] = int(d["start"]), int(d["stop"]), int(d["bytes"])
            d["name"], d["sha256"] = str(d["name"]), str(d["sha256"])
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise SplitError(f"{path} is not a charrnn documents file ({e!r}); run `dvc repro download`") from None
    return documents


def documents_of(corpus: Path, chars: int) -> list[tuple[int, int]]:
    """The documents' character ranges [start, stop) in the corpus. One document (the whole
    corpus) without a documents.json or with one document in it, whatever its range says: a
    corpus.txt written by hand over a downloaded one splits as it always did. Many documents
    that do not cover the corpus end to end are an error."""
    ranges = [(d["start"], d["stop"]) for d in read_documents(corpus)]
    if len(ranges) <= 1:
        return [(0, chars)]
    path = corpus.with_name(paths.DOCUMENTS.name)
    starts = [0] + [stop for _, stop in ranges[:-1]]
    if not ranges or [start for start, _ in ranges] != starts or ranges[-1][1] != chars:
        raise SplitError(f"{path} does not describe {corpus} ({chars:,} characters): its documents must cover it "
                         "end to end; run `dvc repro download`")
    return ranges


@dataclass(frozen=True)
class Split:
    """A corpus file cut at `at`: characters [0, at) train, [at, chars) are held out. With many
    documents, each (start, cut, stop) in `parts` is cut so, and `at` counts the training
    characters of all of them."""
    corpus: Path
    chars: int
    at: int
    parts: tuple[tuple[int, int, int], ...] = ()
    index: CharIndex | None = field(default=None, compare=False, repr=False)  # where the characters are

    @classmethod
    def of(cls, corpus: str | Path, val_fraction: float) -> "Split":
        index = CharIndex.of(corpus)
        n = index.chars
        ranges = documents_of(Path(corpus), n)
        if len(ranges) == 1:
            return cls(Path(corpus), n, split_point(n, val_fraction), index=index)
        parts = tuple((lo, lo + split_point(hi - lo, val_fraction), hi) for lo, hi in ranges)
        return cls(Path(corpus), n, sum(cut - lo for lo, cut, _ in parts), parts, index=index)

    @property
    def train(self) -> TextSpan | TextSpans:
        if not self.parts:
            return TextSpan(self.corpus, 0, self.at)
        return TextSpans(self.corpus, tuple((lo, cut) for lo, cut, _ in self.parts))

    @property
    def held_out(self) -> TextSpan | TextSpans:
        if not self.parts:
            return TextSpan(self.corpus, self.at, None)
        return TextSpans(self.corpus, tuple((cut, hi) for _, cut, hi in self.parts))

    def _held_out_places(self, count: int) -> Iterable[tuple[int, int]]:
        """`count` evenly spaced places in the held-out text, as (offset in the corpus, end of
        that document's held-out part)."""
        if not self.parts:
            return [(self.at + (self.chars - self.at) * i // count, self.chars) for i in range(count)]
        places, total = [], self.chars - self.at
        for i in range(count):
            left = total * i // count
            for _, cut, hi in self.parts:
                if left < hi - cut:
                    places.append((cut + left, hi))
                    break
                left -= hi - cut
        return places

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
        for start, end in self._held_out_places(count):
            window = "".join(iter_text(self.corpus, start, min(start + 4096, end)))
            if "\n" in window:  # from the next line on: a prompt starts where a line does
                window = window[window.find("\n") + 1:]
            line = next((line for line in window.split("\n") if line.strip()), "")
            if line:
                prompts.append(line[:max_chars])
        if not prompts:
            where = (f"characters {self.at:,} to {self.chars:,}" if not self.parts else
                     f"the last part of each of the {len(self.parts):,} documents")
            raise SplitError(
                f"the held-out text ({where} of {self.corpus}) has no usable line "
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
