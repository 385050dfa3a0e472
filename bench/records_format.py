"""The windows a records reader yields, and a tiny training's weights, as digests: run it with two
checkouts' code and compare (records format 1 against format 2: the same windows, the same order,
the same weights).

    PYTHONPATH=<old checkout>/src .venv/bin/python bench/records_format.py /tmp/old train > old.json
    PYTHONPATH=src .venv/bin/python bench/records_format.py /tmp/new train > new.json

Three corpora (ASCII in 2 training shards; a small vocabulary of 1- to 4-byte characters; 400 CJK
characters, uint16) are written as records by the code on PYTHONPATH, then read: read_windows
(train, val, offset 7), reader.dataset (shuffled, random offsets, 2 epochs; validation); with
`train`, a tiny training (GRU 32, 2 epochs) on the ASCII records. Keras prints its epochs before
the JSON.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from charrnn.core.quiet import quiet_tensorflow

quiet_tensorflow()

from charrnn.data import reader, records  # noqa: E402
from charrnn.data.vocab import Vocabulary, count_chars  # noqa: E402


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def corpora() -> dict[str, str]:
    rng = np.random.default_rng(0)
    return {
        "ascii": "".join(rng.choice(list("abcdefghij \n"), 1_100_000)),
        "utf8_small_vocab": "".join(rng.choice(list("aé€ 😀\nb"), 300_000)),
        "u16": "".join(rng.choice([chr(0x4E00 + i) for i in range(400)], 200_000)),
    }


def main(out: Path, train: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    texts = corpora()
    for name, text in texts.items():
        d = out / name
        d.mkdir(exist_ok=True)
        (d / "corpus.txt").write_text(text, encoding="utf-8")
        vocab = Vocabulary.from_counts(count_chars([text]))
        meta = records.write_records(d / "corpus.txt", vocab, d / "rec", seq_length=20, val_fraction=0.1, shard_mb=1)
        rec = str(d / "rec")
        r = {"shards": meta.train_shards, "windows": [meta.train_windows, meta.val_windows], "dtype": meta.dtype,
             "bytes": sum(p.stat().st_size for p in (d / "rec").iterdir() if p.suffix == ".tfrecord"),
             "text_bytes": (d / "corpus.txt").stat().st_size}
        r["read_train"] = digest(reader.read_windows(rec, "train").batch(4096).as_numpy_iterator())
        r["read_val"] = digest(reader.read_windows(rec, "val").batch(4096).as_numpy_iterator())
        r["read_off7"] = digest(reader.read_windows(rec, "train", 7).batch(4096).as_numpy_iterator())
        shuffled = reader.dataset(rec, "train", 64, shuffle_seed=3, epochs=2, random_offset=True)
        r["dataset_shuffled_offset"] = digest(x for xy in shuffled.as_numpy_iterator() for x in xy)
        r["dataset_val"] = digest(x for xy in reader.dataset(rec, "val", 64).as_numpy_iterator() for x in xy)
        results[name] = r
    if train:
        from charrnn.core.params import TrainParams
        from charrnn.nn import training

        vocab = Vocabulary.from_counts(count_chars([texts["ascii"]]))
        params = TrainParams(embedding_dim=8, units=32, epochs=2, batch_size=256, learning_rate=0.01, warmup_steps=10)
        training.configure(params.seed)
        result = training.train(params, str(out / "ascii" / "rec"), vocab)
        results["training"] = {"weights": digest(result.model.get_weights()),
                               "history": result.history.to_dict("list")}
    return results


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2:3] == ["train"]), indent=1))
