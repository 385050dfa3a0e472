"""tfrecord.py writes the bytes tf.io.TFRecordWriter writes, without importing TensorFlow."""
import collections
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from charrnn.data import reader, records, tfrecord
from charrnn.data.vocab import Vocabulary, count_chars


@pytest.mark.parametrize("length", [1, 3, 4, 7, 202, 404, 513, 4099, 65_601])  # long rows: segment by segment
def test_same_bytes_as_tensorflow(tmp_path, length):
    rows = np.random.default_rng(length).integers(0, 256, (40, length), dtype=np.uint8)
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
        for r in rows:
            w.write(r.tobytes())
    assert tfrecord.encode(rows) == (tmp_path / "tf.tfrecord").read_bytes()


def test_crc32c_known_value():
    assert int(tfrecord.crc32c(np.frombuffer(b"123456789", np.uint8)[None])[0]) == 0xE3069283


def test_shards_split_as_before_and_read_back(tmp_path):
    # 1 MiB shards of 2 * 10-byte windows: a new shard once a shard holds >= 1 MiB of data
    text = "".join(chr(97 + i % 26) for i in range(700_000))
    path = tmp_path / "c.txt"
    path.write_text(text)
    vocab = Vocabulary.from_counts(count_chars([text]))
    meta = records.write_records(path, vocab, tmp_path / "rec", seq_length=9, val_fraction=0.1, shard_mb=1)
    per_shard = -(-(1 << 20) // 20)
    assert len(meta.train_shards) == -(-meta.train_windows // per_shard) > 1
    windows = np.stack([w.numpy() for w in reader.read_windows(tmp_path / "rec", "train")])  # shards interleaved
    expected = collections.Counter(text[i * 9:i * 9 + 10] for i in range(meta.train_windows))
    assert collections.Counter(vocab.decode(w) for w in windows) == expected


def test_data_stages_do_not_import_tensorflow():
    code = ("import sys; import charrnn.data.records, charrnn.data.vocab, charrnn.data.tfrecord; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
