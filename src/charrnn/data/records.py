"""Windows of seq_length + 1 ids, written to sharded TFRecords (charrnn.data.reader reads them).

The corpus is split as charrnn.data.split says, each part into its own shards. Windows step by
seq_length, so consecutive windows share one id and every character but the first is a target
exactly once. Each record is one window as raw little-endian integers (uint16 when the vocabulary
fits). Writing needs no TensorFlow (see tfrecord.py): the stage streams the corpus in chunks, a
block of windows at a time, in bounded memory.
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


class RecordsError(CharrnnError, ValueError):
    pass


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


@dataclass(frozen=True)
class RecordsMeta:
    seq_length: int
    dtype: str
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
        if not isinstance(raw, dict) or sorted(raw) != sorted(names):
            raise RecordsError(f"{where}: not a charrnn records description (expected an object with the keys "
                               f"{names}); run `dvc repro make_tfrecords`")
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
    dtype = np.dtype("<u2") if vocab.size <= 1 << 16 else np.dtype("<i4")
    shard_bytes = shard_mb << 20
    with files.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        counts = {}
        shards = {}
        for name, span in {"train": split.train, "val": split.held_out}.items():
            writer = tfrecord.ShardWriter(tmp, name, shard_bytes)
            ids = span.ids(vocab)
            if progress is not None:
                ids = progress(ids, name)
            for block in iter_windows(ids, seq_length):
                writer.write_rows(block.astype(dtype))
            writer.close()
            counts[name], shards[name] = writer.count, writer.names
        meta = RecordsMeta(
            seq_length=seq_length, dtype=dtype.str, vocab_size=vocab.size,
            vocab_fingerprint=vocab.fingerprint, corpus_chars=split.chars, split=split.at,
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
