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
    assert meta.dtype == "<u2"
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
