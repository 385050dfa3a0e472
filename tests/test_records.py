import json

import numpy as np
import pytest

from charrnn.data import reader, records, split
from charrnn.data.vocab import Vocabulary, count_chars


def corpus(tmp_path, text):
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8", newline="")
    return path, Vocabulary.from_counts(count_chars([text]))


def test_windows_step_by_seq_length_and_cover_every_target():
    ids = np.arange(23, dtype=np.int32)
    blocks = list(records.iter_windows([ids[:5], ids[5:11], ids[11:]], seq_length=4))
    windows = np.concatenate(blocks)
    assert windows.shape == (5, 5)
    assert windows[:, 0].tolist() == [0, 4, 8, 12, 16]
    targets = windows[:, 1:].ravel()
    assert targets.tolist() == list(range(1, 21))  # each once, in order; the 2-id tail is dropped


def test_iter_ids_respects_split(tmp_path):
    path, vocab = corpus(tmp_path, "abcdefghij" * 3)
    head = np.concatenate(list(split.TextSpan(path, 0, 12).ids(vocab)))
    tail = np.concatenate(list(split.TextSpan(path, 12).ids(vocab)))
    assert vocab.decode(head) + vocab.decode(tail) == "abcdefghij" * 3
    assert len(head) == 12


def test_write_and_read_records(tmp_path):
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(1000))
    path, vocab = corpus(tmp_path, text)
    meta = records.write_records(path, vocab, tmp_path / "rec", seq_length=9, val_fraction=0.2, shard_mb=1)
    assert meta.split == 800 and meta.corpus_chars == 1000
    assert meta.train_windows == (800 - 1) // 9 and meta.val_windows == (200 - 1) // 9
    assert meta.dtype == "|u1" and meta.format == records.FORMAT  # 27 ids: one byte each
    train = np.stack([w.numpy() for w in reader.read_windows(tmp_path / "rec", "train")])
    val = np.stack([w.numpy() for w in reader.read_windows(tmp_path / "rec", "val")])
    assert vocab.decode(train[0]) == text[:10]
    assert vocab.decode(val[0]) == text[800:810]  # validation starts exactly at the split
    assert vocab.decode(train[-1]).endswith(text[(meta.train_windows * 9)]) and train.max() < 800
    assert records.records_metrics(meta)["val_chars"] == 200
    assert not list(tmp_path.glob(".rec*"))  # no temporary left behind


def test_dataset_batches_and_seeded_shuffle(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(5000))
    path, vocab = corpus(tmp_path, text)
    records.write_records(path, vocab, tmp_path / "rec", seq_length=20, val_fraction=0.1)

    def first_batch(seed):
        x, y = next(iter(reader.dataset(tmp_path / "rec", "train", 8, shuffle_seed=seed)))
        return x.numpy(), y.numpy()

    x, y = first_batch(1)
    assert x.shape == (8, 20) and y.shape == (8, 20)
    assert np.array_equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    assert np.array_equal(first_batch(1)[0], x)
    assert not np.array_equal(first_batch(2)[0], x)


def test_large_vocabulary_uses_int32(tmp_path):
    chars = "".join(chr(0x4E00 + i) for i in range(20000)) + "".join(chr(0x20000 + i) for i in range(50000))
    path, vocab = corpus(tmp_path, chars * 2)
    assert vocab.size > 1 << 16
    meta = records.write_records(path, vocab, tmp_path / "rec", seq_length=100, val_fraction=0.5)
    assert meta.dtype == "<i4"
    window = next(iter(reader.read_windows(tmp_path / "rec", "val"))).numpy()
    assert vocab.decode(window) == (chars * 2)[meta.split:meta.split + 101]


def test_too_short_corpus_says_how_long_it_must_be(tmp_path):
    path, vocab = corpus(tmp_path, "x" * 150)
    with pytest.raises(split.SplitError, match=r"has 150 characters.*needs at least 1,005"):
        records.write_records(path, vocab, tmp_path / "rec", seq_length=100, val_fraction=0.1)
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize("seq_length,val_fraction", [(100, 0.1), (50, 0.1), (50, 0.5), (7, 0.33), (1, 0.9), (20, 0.05)])
def test_the_minimum_it_names_is_the_one_it_checks(tmp_path, seq_length, val_fraction):
    """One rule, one number: the length the error names trains, one character less does not."""
    least = split.minimum_chars(seq_length, val_fraction)
    for n, ok in ((least, True), (least - 1, False)):
        path = tmp_path / f"{n}.txt"
        path.write_text("x" * n, encoding="utf-8")
        cut = split.Split.of(path, val_fraction)
        if ok:
            cut.check_long_enough(seq_length, val_fraction)
        else:
            with pytest.raises(split.SplitError, match=f"needs at least {least:,}"):
                cut.check_long_enough(seq_length, val_fraction)


def test_epoch_order_depends_only_on_seed_and_epoch(tmp_path):
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(5000))
    path, vocab = corpus(tmp_path, text)
    records.write_records(path, vocab, tmp_path / "rec", seq_length=20, val_fraction=0.1)
    per_epoch = reader.batches_per_epoch(tmp_path / "rec", "train", 8)
    assert per_epoch == -(-records.RecordsMeta.load(tmp_path / "rec").train_windows // 8)

    def epochs(**kwargs):
        xs = [x.numpy() for x, _ in reader.dataset(tmp_path / "rec", "train", 8, shuffle_seed=3, **kwargs)]
        return [np.concatenate(xs[i:i + per_epoch]) for i in range(0, len(xs), per_epoch)]

    full = epochs(epochs=3)
    assert len(full) == 3
    assert not np.array_equal(full[0], full[1])  # a fresh order each epoch ...
    assert sorted(map(bytes, full[0])) == sorted(map(bytes, full[1]))  # ... of the same windows
    resumed = epochs(epochs=3, first_epoch=2)  # as a run resumed after two epochs sees it
    assert len(resumed) == 1 and np.array_equal(resumed[0], full[2])


def test_several_shards_read_in_parallel_and_from_a_uri(tmp_path):
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefghij"), 1_300_000))
    path, vocab = corpus(tmp_path, text)
    meta = records.write_records(path, vocab, tmp_path / "rec", seq_length=20, val_fraction=0.1, shard_mb=1)
    assert len(meta.train_shards) >= 3

    def windows(rec, offset=None):
        batches = reader.read_windows(rec, "train", offset).batch(8192).as_numpy_iterator()
        return sorted(w.tobytes() for batch in batches for w in batch)

    in_order = windows(tmp_path / "rec")
    assert len(in_order) == meta.train_windows
    assert windows(f"file://{tmp_path}/rec") == in_order  # any tf.io.gfile location
    ids = vocab.encode(text).astype(np.int32)
    shifted = windows(tmp_path / "rec", offset=7)
    assert len(shifted) == reader.window_count(meta, "train", shifted=True) == meta.train_windows - len(meta.train_shards)
    assert set(shifted) <= {ids[s:s + 21].tobytes() for s in range(7, len(ids) - 20, 20)}


@pytest.mark.parametrize("size,dtype", [(2, "|u1"), (256, "|u1"), (257, "<u2"), (1 << 16, "<u2"), ((1 << 16) + 1, "<i4")])
def test_ids_take_the_narrowest_integer_that_holds_the_vocabulary(size, dtype):
    assert records.id_dtype(size).str == dtype


def test_a_vocabulary_over_256_ids_writes_uint16(tmp_path):
    chars = "".join(chr(0x4E00 + i) for i in range(300))
    path, vocab = corpus(tmp_path, chars * 20)
    meta = records.write_records(path, vocab, tmp_path / "rec", seq_length=10, val_fraction=0.5)
    assert vocab.size == 301 and meta.dtype == "<u2"
    window = next(iter(reader.read_windows(tmp_path / "rec", "val"))).numpy()
    assert vocab.decode(window) == (chars * 20)[meta.split:meta.split + 11]


def test_records_are_no_larger_than_the_text(tmp_path):
    """Each id once (uint8), a record of about RECORD_IDS ids: 16 bytes of framing and one id
    shared with the next record per 64 KiB. An ASCII text: within 0.1% of its size; a text of
    multi-byte characters: smaller than it."""
    rng = np.random.default_rng(1)
    for name, alphabet, bound in (("ascii", list("abcdefgh \n"), 1.001), ("accents", list("aéèêàç \n"), 1.0)):
        text = "".join(rng.choice(alphabet, 2_000_000))
        path, vocab = corpus(tmp_path, text)
        records.write_records(path, vocab, tmp_path / name, seq_length=100, val_fraction=0.1)
        size = sum(p.stat().st_size for p in (tmp_path / name).iterdir())  # meta.json included
        assert size / path.stat().st_size < bound, name


def test_every_shard_holds_the_windows_it_held_before_in_order(tmp_path):
    """Training reads the same windows in the same order as from records of one window each:
    shard k holds windows k * S .. (k + 1) * S - 1 (S from shard_mb as before), each as the
    corpus has it, and a record never spans two shards."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    text = "".join(rng.choice(list("abcdefghij"), 1_500_000))
    path, vocab = corpus(tmp_path, text)
    meta = records.write_records(path, vocab, tmp_path / "rec", seq_length=20, val_fraction=0.1, shard_mb=1)
    per_shard = -(-(1 << 20) // (21 * 2))  # FORMAT 1's rule: 1 MiB of 21 2-byte ids per shard
    assert len(meta.train_shards) == -(-meta.train_windows // per_shard) >= 2
    ids = vocab.encode(text[:meta.split])
    expected = np.stack([ids[i * 20:i * 20 + 21] for i in range(meta.train_windows)])
    for k, name in enumerate(meta.train_shards):
        shard = np.concatenate([
            np.frombuffer(r, np.uint8).astype(np.int32)[:-1].reshape(-1, 20)
            for r in tf.data.TFRecordDataset(str(tmp_path / "rec" / name)).as_numpy_iterator()])
        assert np.array_equal(shard, expected[k * per_shard:(k + 1) * per_shard, :20])
    interleaved = np.concatenate(list(reader.read_windows(tmp_path / "rec", "train").batch(1 << 16).as_numpy_iterator()))
    order = sorted(range(meta.train_windows), key=lambda i: (i % per_shard, i // per_shard))  # one from each in turn
    assert np.array_equal(interleaved, expected[order])


def test_records_of_the_old_format_are_refused_with_the_fix(tmp_path):
    old = {"seq_length": 100, "dtype": "<u2", "vocab_size": 66, "vocab_fingerprint": "x", "corpus_chars": 1000,
           "split": 900, "train_windows": 8, "val_windows": 0, "train_shards": ["train-00000.tfrecord"],
           "val_shards": []}
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / records.META).write_text(json.dumps(old))
    with pytest.raises(records.RecordsError, match=r"older charrnn.*`dvc repro make_tfrecords`") as e:
        reader.load_meta(tmp_path / "rec")
    assert "\n" not in str(e.value)
    newer = {**old, "format": 3, "windows_per_record": 655}
    (tmp_path / "rec" / records.META).write_text(json.dumps(newer))
    with pytest.raises(records.RecordsError, match=r"format 3.*reads format 2 only.*`dvc repro make_tfrecords`"):
        reader.load_meta(tmp_path / "rec")
    (tmp_path / "rec" / records.META).write_text(json.dumps({**newer, "format": 2, "dtype": "<f4"}))
    with pytest.raises(records.RecordsError, match=r"ids of type '<f4'.*`dvc repro make_tfrecords`"):
        reader.load_meta(tmp_path / "rec")


def test_records_do_not_depend_on_how_the_corpus_is_chunked(tmp_path, monkeypatch):
    """Records span the chunks the corpus is read in, and stop at shards' ends: the same bytes
    for chunks of 7 bytes, 1,000 bytes or 8 MiB, the shards in order holding the corpus's
    windows (three documents, each split)."""
    import tensorflow as tf

    from charrnn.data import vocab as vocab_module

    rng = np.random.default_rng(3)
    docs = ["".join(rng.choice(list("abcé狐 \n"), n)) + "\n" for n in (30_000, 17_001, 25_000)]
    text = "\n".join(docs)
    path, vocab = corpus(tmp_path, text)
    bounds = [0, len(docs[0]), len(docs[0]) + 1 + len(docs[1]), len(text)]  # a document's range holds the separator
    (tmp_path / "documents.json").write_text(json.dumps({"format": 1, "kind": "directory", "source": "x", "documents": [
        {"name": f"{i}.txt", "bytes": 1, "sha256": "x", "start": bounds[i], "stop": bounds[i + 1]} for i in range(3)]}))
    monkeypatch.setattr(records, "RECORD_IDS", 64)  # 3 windows of 20 a record
    monkeypatch.setattr(records, "windows_per_shard", lambda *args: 50)  # 16 records and one of 2 windows a shard
    written = {}
    for chunk in (7, 1000, None):
        monkeypatch.setattr(vocab_module, "CHUNK_BYTES", chunk or 8 << 20)
        meta = records.write_records(path, vocab, tmp_path / f"rec{chunk}", seq_length=20, val_fraction=0.1)
        written[chunk] = {p.name: p.read_bytes() for p in sorted((tmp_path / f"rec{chunk}").iterdir())}
    assert written[7] == written[1000] == written[None]
    assert meta.windows_per_record == 3 and len(meta.train_shards) == -(-meta.train_windows // 50) > 10
    cut = split.Split.of(path, 0.1)
    assert len(cut.parts) == 3
    for part, name in ((cut.train, "train"), (cut.held_out, "val")):
        ids = vocab.encode("".join(part))
        expected = np.stack([ids[i * 20:i * 20 + 21] for i in range((len(ids) - 1) // 20)])
        shards = [[np.frombuffer(r, np.uint8) for r in tf.data.TFRecordDataset(str(tmp_path / "recNone" / n))
                   .as_numpy_iterator()] for n in getattr(meta, f"{name}_shards")]
        full = shards[:-1] if name == "train" else []  # a full shard: 50 windows, 16 records of 3 and one of 2
        assert all([len(r) for r in shard] == [61] * 16 + [41] for shard in full)
        got = np.stack([r[j * 20:j * 20 + 21] for shard in shards for r in shard for j in range((len(r) - 1) // 20)])
        assert np.array_equal(got, expected)
