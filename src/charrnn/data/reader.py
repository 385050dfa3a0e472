"""The tf.data reader of the records that charrnn.data.records writes: one split's windows,
shards interleaved deterministically, and the shuffled (inputs, targets) batches of an epoch that
depend only on (seed, epoch). Records may be read from any location tf.io.gfile reads
(README "Running as a team" says which work)."""
from __future__ import annotations

import functools
import random
from pathlib import Path

import tensorflow as tf

from charrnn.data.records import META, RecordsError, RecordsMeta


def load_meta(records_dir: str | Path) -> RecordsMeta:
    """meta.json of a records directory, local or at a location TensorFlow's file systems read."""
    if "://" not in str(records_dir):
        return RecordsMeta.load(records_dir)
    path = _join(records_dir, META)
    if not tf.io.gfile.exists(path):
        raise RecordsError(f"{path} not found (run `dvc repro make_tfrecords`)")
    return RecordsMeta.from_json(tf.io.gfile.GFile(path, "r").read(), path)


def read_windows(records_dir: str | Path, split: str, offset: int | None = None):
    """The tf.data stream of int32 windows of one split ("train" or "val").

    Shards are read in parallel and interleaved in a fixed order (deterministic). With `offset`,
    each shard's windows start that many characters later (shifted_windows: one window fewer
    per shard). `records_dir` may be any location tf.io.gfile reads: a local path, or gs:// (built into
    TensorFlow, not tested here); TensorFlow 2.21 has no s3:// (README "Running as a team").
    """
    meta = load_meta(records_dir)
    paths = [_join(records_dir, n) for n in getattr(meta, f"{split}_shards")]
    dtype = {"|u1": tf.uint8, "<u2": tf.uint16, "<i4": tf.int32}[meta.dtype]
    seq = meta.seq_length

    def windows(record):
        """A record's run of r * seq_length + 1 ids -> its r windows of seq_length + 1."""
        ids = tf.cast(tf.io.decode_raw(record, dtype, little_endian=True), tf.int32)
        return tf.concat([tf.reshape(ids[:-1], [-1, seq]), tf.reshape(ids[seq::seq], [-1, 1])], axis=1)

    def shard(path):
        ds = tf.data.TFRecordDataset(path).map(windows).unbatch()
        return ds if offset is None else shifted_windows(ds, offset)

    if len(paths) == 1:
        return shard(paths[0])
    return tf.data.Dataset.from_tensor_slices(paths).interleave(
        shard, cycle_length=min(len(paths), 8), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _join(directory: str | Path, name: str) -> str:
    return f"{str(directory).rstrip('/')}/{name}" if "://" in str(directory) else str(Path(directory) / name)


def window_count(meta: RecordsMeta, split: str, shifted: bool) -> int:
    return getattr(meta, f"{split}_windows") - (len(getattr(meta, f"{split}_shards")) if shifted else 0)


def batches_per_epoch(records_dir: str | Path, split: str, batch_size: int, random_offset: bool = False) -> int:
    return -(-window_count(load_meta(records_dir), split, random_offset) // batch_size)


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
    meta = load_meta(records_dir)
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
    pairs = tf.data.Dataset.zip(windows, windows.skip(1))
    return pairs.map(lambda a, b: tf.concat([a[offset:], b[1:offset + 1]], axis=0),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
