"""Train and sample a tiny model from nothing in this process and print the hashes of its bytes.

    python -m tests.isa_probe            (from the repository root; run in a fresh process each time)

What tests/test_isa.py compares with tests/data/isa/<cpu>.json, and what bench/isa.py runs under
each CPU instruction set oneDNN can be limited to. A fresh process matters: oneDNN reads
ONEDNN_MAX_CPU_ISA once, and TensorFlow's thread pools are fixed at its first op.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from charrnn.core import isa
from charrnn.core.params import TrainParams
from charrnn.reprocheck import synthetic_corpus

TRAIN = TrainParams(embedding_dim=16, units=32, epochs=2, batch_size=16, learning_rate=0.01, warmup_steps=10,
                    threads=2, seed=3)
CORPUS_CHARS = 20_000


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def probe(folder: Path) -> dict:
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the promise is the CPU's
    from charrnn.data import records
    from charrnn.data.vocab import Vocabulary, count_chars
    from charrnn.nn import network, training
    from charrnn.sampling.generation import generate
    from charrnn.sampling.settings import SamplingSettings

    text = synthetic_corpus(CORPUS_CHARS)
    (folder / "corpus.txt").write_text(text, encoding="utf-8")
    vocab = Vocabulary.from_counts(count_chars([text]))
    records.write_records(folder / "corpus.txt", vocab, folder / "records", seq_length=32, val_fraction=0.1)
    training.configure(TRAIN.seed, TRAIN.threads)
    result = training.train(TRAIN, str(folder / "records"), vocab)
    network.save(result.model, vocab, folder / "model")
    texts = generate(result.model, vocab, ["ROMEO:", "JULIET:"], SamplingSettings(80, 0.8, 0, 1.0, 7))
    return {
        "model.weights.h5": sha256(folder / "model" / network.WEIGHTS),
        "history.csv": hashlib.sha256(result.history.to_csv(index=False).encode()).hexdigest(),
        "samples": hashlib.sha256(json.dumps(texts).encode()).hexdigest(),
    }


def software() -> dict[str, str]:
    from importlib.metadata import version

    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": version("keras"), "numpy": version("numpy"),
            "python": sys.version.split()[0]}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(sys.stderr):  # Keras's epoch lines
        hashes = probe(Path(folder))
    json.dump({"hashes": hashes, "machine": isa.describe(), "software": software()}, sys.stdout, indent=1,
              sort_keys=True)
    print()


if __name__ == "__main__":
    main()
