"""Windows of seq_length + 1 ids, written to sharded TFRecords (charrnn.data.reader reads them).

The corpus is split as charrnn.data.split says, each part into its own shards. Windows step by
seq_length, so consecutive windows share one id and every character but the first is a target
exactly once. A record holds a run of consecutive windows as the ids they cover, each id once:
r windows are r * seq_length + 1 raw ids (uint8 when the vocabulary has at most 256 ids, uint16
up to 65,536, int32 beyond), about RECORD_IDS of them, so the records take about one byte per
character of an English text, no more than the text itself; the reader cuts them into windows
again. A shard holds the windows it held when each window was a record of 2-byte ids (the
format before, FORMAT 1): the same windows in the same shards, read in the same order.
Writing needs no TensorFlow (see tfrecord.py): the stage streams the corpus in chunks, in
bounded memory.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from charrnn.core import files
from charrnn.core.errors import CharrnnError
from charrnn.data import tfrecord
from charrnn.data.split import Split
from charrnn.data.vocab import Vocabulary

META = "meta.json"
FORMAT = 2  # meta.json's "format": records of runs of windows; FORMAT 1 (no "format" key) held one window each
RECORD_IDS = 1 << 16  # about this many ids per record: framing (16 bytes a record) costs ~0.03%
REBUILD = "run `dvc repro make_tfrecords`"
DTYPES = ("|u1", "<u2", "<i4")  # the ids' types, as numpy writes them (id_dtype)


class RecordsError(CharrnnError, ValueError):
    pass


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest integer that holds every id: uint8, uint16 or int32 (little-endian)."""
    if vocab_size <= 1 << 8:
        return np.dtype("u1")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<i4")


def windows_per_record(seq_length: int) -> int:
    return max(1, RECORD_IDS // seq_length)


def windows_per_shard(shard_mb: int, seq_length: int, vocab_size: int) -> int:
    """Windows in a full shard: as many as FORMAT 1 put in one (a new shard once a shard held
    shard_mb MiB of windows of 2-byte ids, 4-byte beyond 65,536), so a shard holds the same
    windows as it did then and training reads them in the same order (tf.data interleaves the
    shards)."""
    width = 2 if vocab_size <= 1 << 16 else 4
    return -(-(shard_mb << 20) // ((seq_length + 1) * width))


def iter_windows(id_chunks: Iterable[np.ndarray], seq_length: int) -> Iterator[np.ndarray]:
    """Blocks of windows [k, seq_length + 1], stepping by seq_length, over a chunked id stream."""
    carry = np.zeros(0, dtype=np.int32)
    for chunk in id_chunks:
        buf = np.concatenate([carry, chunk])
        k = (len(buf) - 1) // seq_length
        if k > 0:
            idx = np.arange(k)[:, None] * seq_length + np.arange(seq_length + 1)[None, :]
            yield buf[idx]
        carry = buf[k * seq_length:]


class _PartWriter:
    """One part's (train's or val's) ids -> records of up to `per_record` windows, never across
    a shard's end, into shards of `per_shard` windows."""

    def __init__(self, writer: tfrecord.ShardWriter, seq_length: int, per_shard: int, per_record: int,
                 dtype: np.dtype):
        self.writer, self.seq, self.per_shard, self.per_record = writer, seq_length, per_shard, per_record
        self.buf = np.zeros(0, dtype=dtype)
        self.base = 0  # index (in the part's ids) of buf[0]
        self.next = 0  # the next window to write

    def feed(self, ids: np.ndarray) -> None:
        self.buf = np.concatenate([self.buf, ids.astype(self.buf.dtype, copy=False)])
        self._emit(final=False)

    def finish(self) -> int:
        """Write what is left; the part's number of windows."""
        self._emit(final=True)
        return self.next

    def _emit(self, final: bool) -> None:
        seq, size = self.seq, self.per_record
        ready = max((self.base + len(self.buf) - 1) // seq, self.next)  # windows whose ids are all here
        w = self.next
        while w < ready:
            shard_end = (w // self.per_shard + 1) * self.per_shard
            end = min(shard_end, ready)
            full, rest = divmod(end - w, size)
            if full:
                self._write(w, full, size)
                w += full * size
            if rest and (end == shard_end or final):
                self._write(w, 1, rest)
                w += rest
            elif rest:
                break
        self.next = w
        self.buf, self.base = self.buf[w * seq - self.base:], w * seq

    def _write(self, first: int, count: int, windows: int) -> None:
        """`count` records of `windows` windows each, from window `first` on."""
        span = windows * self.seq
        ids = self.buf[first * self.seq - self.base:][:count * span + 1]
        raw = ids.view(np.uint8)  # little-endian ids, as raw bytes
        width = ids.itemsize
        rows = np.lib.stride_tricks.sliding_window_view(raw, (span + 1) * width)[::span * width]
        self.writer.write_rows(first // self.per_shard, rows)


@dataclass(frozen=True)
class RecordsMeta:
    format: int
    seq_length: int
    dtype: str
    windows_per_record: int
    vocab_size: int
    vocab_fingerprint: str
    corpus_chars: int
    split: int
    train_windows: int
    val_windows: int
    train_shards: list[str]
    val_shards: list[str]

    @classmethod
    def from_json(cls, text: str, where: str = META) -> "RecordsMeta":
        """meta.json's content; anything but an object with exactly the fields is a RecordsError."""
        try:
            raw = files.loads_json(text)
        except ValueError as e:
            raise RecordsError(f"{where}: not valid JSON ({e}); run `dvc repro make_tfrecords`") from None
        names = [f.name for f in fields(cls)]
        if isinstance(raw, dict) and "format" not in raw and "train_shards" in raw:
            raise RecordsError(f"{where}: records of an older charrnn (one window per record, format 1); this "
                               f"charrnn reads format {FORMAT} only: {REBUILD} to rebuild them")
        if isinstance(raw, dict) and raw.get("format") != FORMAT and "train_shards" in raw:
            raise RecordsError(f"{where}: records of format {raw.get('format')!r}; this charrnn reads format "
                               f"{FORMAT} only: {REBUILD} to rebuild them")
        if not isinstance(raw, dict) or sorted(raw) != sorted(names):
            raise RecordsError(f"{where}: not a charrnn records description (expected an object with the keys "
                               f"{names}); run `dvc repro make_tfrecords`")
        if raw["dtype"] not in DTYPES:
            raise RecordsError(f"{where}: ids of type {raw['dtype']!r}, not one of {list(DTYPES)}; {REBUILD}")
        return cls(**raw)

    @classmethod
    def load(cls, records_dir: str | Path) -> "RecordsMeta":
        path = Path(records_dir) / META
        try:
            return cls.from_json(path.read_text(encoding="utf-8"), str(path))
        except FileNotFoundError:
            raise RecordsError(f"{path} not found (run `dvc repro make_tfrecords`)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise RecordsError(f"{path} cannot be read ({e}); run `dvc repro make_tfrecords`") from None


def write_records(corpus: str | Path, vocab: Vocabulary, out_dir: str | Path, seq_length: int,
                  val_fraction: float, shard_mb: int = 64, progress=None) -> RecordsMeta:
    """Encode the corpus, cut it into windows and write train/val shards atomically into out_dir."""
    split = Split.of(corpus, val_fraction)
    split.check_long_enough(seq_length, val_fraction)
    dtype = id_dtype(vocab.size)
    per_shard, per_record = windows_per_shard(shard_mb, seq_length, vocab.size), windows_per_record(seq_length)
    with files.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        counts = {}
        shards = {}
        for name, span in {"train": split.train, "val": split.held_out}.items():
            writer = tfrecord.ShardWriter(tmp, name)
            part = _PartWriter(writer, seq_length, per_shard, per_record, dtype)
            ids = span.ids(vocab, dtype, split.index)
            if progress is not None:
                ids = progress(ids, name)
            for chunk in ids:
                part.feed(chunk)
            counts[name] = part.finish()
            writer.close()
            shards[name] = writer.names
        meta = RecordsMeta(
            format=FORMAT, seq_length=seq_length, dtype=dtype.str, windows_per_record=per_record,
            vocab_size=vocab.size, vocab_fingerprint=vocab.fingerprint, corpus_chars=split.chars, split=split.at,
            train_windows=counts["train"], val_windows=counts["val"],
            train_shards=shards["train"], val_shards=shards["val"],
        )
        files.write_json(tmp / META, meta.__dict__)
    return meta


def records_metrics(meta: RecordsMeta) -> dict:
    return {
        "corpus_chars": meta.corpus_chars,
        "train_chars": meta.split,
        "val_chars": meta.corpus_chars - meta.split,
        "train_windows": meta.train_windows,
        "val_windows": meta.val_windows,
        "seq_length": meta.seq_length,
        "shards": len(meta.train_shards) + len(meta.val_shards),
    }
