"""Windows of seq_length + 1 ids, written to sharded TFRecords, and the tf.data reader.

The corpus is split contiguously: the first (1 - val_fraction) of its characters train, the tail
validates, so no validation window overlaps a training one. Windows step by seq_length, so
consecutive windows share one id and every character but the first is a target exactly once.
Each record is one window as raw little-endian integers (uint16 when the vocabulary fits).
Writing needs no TensorFlow (see tfrecord.py): the stage streams the corpus in chunks, a block of
windows at a time, in bounded memory.
"""
from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from charrnn.core import files
from charrnn.core.errors import CharrnnError
from charrnn.data import tfrecord
from charrnn.data.vocab import Vocabulary, read_chunks

META = "meta.json"


class RecordsError(CharrnnError, ValueError):
    pass


def split_point(n_chars: int, val_fraction: float) -> int:
    """Index of the first validation character."""
    return int(round(n_chars * (1.0 - val_fraction)))


def count_corpus_chars(path: str | Path) -> int:
    return sum(len(chunk) for chunk in read_chunks(path))


def check_long_enough(n_chars: int, val_fraction: float, seq_length: int) -> None:
    split = split_point(n_chars, val_fraction)
    need = seq_length + 1
    if split < need or n_chars - split < need:
        # smallest n with both parts >= need
        must = max(int(np.ceil(need / (1 - val_fraction))), int(np.ceil(need / val_fraction))) + 1
        raise RecordsError(
            f"the corpus has {n_chars:,} characters; with seq_length={seq_length} and "
            f"val_fraction={val_fraction} it needs at least {must:,} (one training and one "
            f"validation window of {need} characters each)"
        )


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


def iter_ids(path: str | Path, vocab: Vocabulary, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Ids of corpus characters [start, stop), chunk by chunk."""
    for text in iter_text(path, start, stop):
        yield vocab.encode(text)


def held_out_prompts(path: str | Path, val_fraction: float, count: int = 3, max_chars: int = 40) -> list[str]:
    """`count` prompts from the held-out text, whatever the corpus's language: at evenly spaced
    places, the first line after that place that holds something, up to `max_chars` of it."""
    n = count_corpus_chars(path)
    split = split_point(n, val_fraction)
    prompts = []
    for i in range(count):
        start = split + (n - split) * i // count
        window = "".join(iter_text(path, start, start + 4096))
        if "\n" in window:  # from the next line on: a prompt starts where a line does
            window = window[window.find("\n") + 1:]
        line = next((line for line in window.split("\n") if line.strip()), "")
        if line:
            prompts.append(line[:max_chars])
    return prompts


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
    def load(cls, records_dir: str | Path) -> "RecordsMeta":
        path = _join(records_dir, META)
        try:
            if "://" in path:  # a remote location: TensorFlow's file system layer reads it
                import tensorflow as tf

                if not tf.io.gfile.exists(path):
                    raise FileNotFoundError(path)
                text = tf.io.gfile.GFile(path, "r").read()
            else:
                text = Path(path).read_text(encoding="utf-8")
            return cls(**json.loads(text))
        except FileNotFoundError:
            raise RecordsError(f"{path} not found (run `dvc repro make_tfrecords`)") from None


def write_records(corpus: str | Path, vocab: Vocabulary, out_dir: str | Path, seq_length: int,
                  val_fraction: float, shard_mb: int = 64, progress=None) -> RecordsMeta:
    """Encode the corpus, cut it into windows and write train/val shards atomically into out_dir."""
    n_chars = count_corpus_chars(corpus)
    check_long_enough(n_chars, val_fraction, seq_length)
    split = split_point(n_chars, val_fraction)
    dtype = np.dtype("<u2") if vocab.size <= 1 << 16 else np.dtype("<i4")
    shard_bytes = shard_mb << 20
    with files.atomic_path(out_dir) as tmp:
        tmp.mkdir()
        counts = {}
        shards = {}
        for name, (start, stop) in {"train": (0, split), "val": (split, None)}.items():
            writer = tfrecord.ShardWriter(tmp, name, shard_bytes)
            ids = iter_ids(corpus, vocab, start, stop)
            if progress is not None:
                ids = progress(ids, name)
            for block in iter_windows(ids, seq_length):
                writer.write_rows(block.astype(dtype))
            writer.close()
            counts[name], shards[name] = writer.count, writer.names
        meta = RecordsMeta(
            seq_length=seq_length, dtype=dtype.str, vocab_size=vocab.size,
            vocab_fingerprint=vocab.fingerprint, corpus_chars=n_chars, split=split,
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


def read_windows(records_dir: str | Path, split: str, offset: int | None = None):
    """The tf.data stream of int32 windows of one split ("train" or "val").

    Shards are read in parallel and interleaved in a fixed order (deterministic). With `offset`,
    each shard's windows start that many characters later (shifted_windows: one window fewer
    per shard). `records_dir` may be any location tf.io.gfile reads (gs://, s3://, ...).
    """
    import tensorflow as tf

    meta = RecordsMeta.load(records_dir)
    paths = [_join(records_dir, n) for n in getattr(meta, f"{split}_shards")]
    dtype = tf.uint16 if meta.dtype == "<u2" else tf.int32

    def shard(path):
        ds = tf.data.TFRecordDataset(path).map(
            lambda r: tf.cast(tf.io.decode_raw(r, dtype, little_endian=True), tf.int32))
        return ds if offset is None else shifted_windows(ds, offset)

    if len(paths) == 1:
        return shard(paths[0])
    return tf.data.Dataset.from_tensor_slices(paths).interleave(
        shard, cycle_length=min(len(paths), 8), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _join(directory: str | Path, name: str) -> str:
    return f"{str(directory).rstrip('/')}/{name}" if "://" in str(directory) else str(Path(directory) / name)


def window_count(meta: "RecordsMeta", split: str, shifted: bool) -> int:
    return getattr(meta, f"{split}_windows") - (len(getattr(meta, f"{split}_shards")) if shifted else 0)


def batches_per_epoch(records_dir: str | Path, split: str, batch_size: int, random_offset: bool = False) -> int:
    return -(-window_count(RecordsMeta.load(records_dir), split, random_offset) // batch_size)


def dataset(records_dir: str | Path, split: str, batch_size: int, shuffle_seed: int | None = None,
            epochs: int = 1, first_epoch: int = 0, random_offset: bool = False):
    """(inputs, targets) batches.

    Without shuffle_seed: one epoch in file order (iterate it again for the next epoch).
    With shuffle_seed: epochs first_epoch .. epochs-1 back to back, each of batches_per_epoch()
    batches in an order that depends only on (shuffle_seed, epoch). Not on how many epochs this
    process has iterated (a resumed run sees the same batches), and not on how tf.distribute
    rewrites the pipeline (a reshuffle_each_iteration shuffle is re-seeded by that rewrite).
    With random_offset too, each epoch's windows start `epoch_offset(...)` characters later than
    the stored ones: the same text, cut at other places (one window fewer per epoch).
    """
    import tensorflow as tf

    meta = RecordsMeta.load(records_dir)
    shifted = random_offset and shuffle_seed is not None
    n = window_count(meta, split, shifted)

    def epoch_batches(epoch):
        offset = epoch_offset(shuffle_seed, epoch, meta.seq_length) if shifted else None
        ds = read_windows(records_dir, split, offset).apply(tf.data.experimental.assert_cardinality(n))
        if shuffle_seed is None:
            return ds.batch(batch_size)
        seed = (shuffle_seed * 1_000_003 + epoch) % (1 << 31)
        return ds.shuffle(min(n, 1 << 17), seed=seed, reshuffle_each_iteration=False).batch(batch_size)

    if shuffle_seed is None:
        ds = epoch_batches(0)
    else:  # one pipeline per epoch, each with a constant seed (a tensor seed breaks shuffle())
        ds = functools.reduce(tf.data.Dataset.concatenate, map(epoch_batches, range(first_epoch, epochs)))
    ds = ds.map(lambda w: (w[:, :-1], w[:, 1:]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_offset(seed: int, epoch: int, seq_length: int) -> int:
    """The seeded offset of an epoch's windows, in [0, seq_length)."""
    return random.Random(f"{seed}/{epoch}").randrange(seq_length)


def shifted_windows(windows, offset: int):
    """Windows starting `offset` characters into the stored ones. Stored windows overlap by one
    character (window i ends where i+1 starts), so a pair of neighbours holds every shifted one."""
    import tensorflow as tf

    pairs = tf.data.Dataset.zip(windows, windows.skip(1))
    return pairs.map(lambda a, b: tf.concat([a[offset:], b[1:offset + 1]], axis=0),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
