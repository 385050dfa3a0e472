"""The test kit: the tiny models, vocabularies and generators the unit tests build, in one place.

Every builder is seeded, so the same call gives the same weights in any test."""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from charrnn.core.params import TrainParams
from charrnn.data.vocab import Vocabulary
from charrnn.sampling.settings import SamplingSettings
from tests.conftest import unavailable

# 14 ids ([UNK] and 13 characters): enough for "ROMEO:" and a few words
VOCAB = Vocabulary(tuple(sorted(set("\n :ABEMORabcde"))), (1,) * 14)
# 32 ids: the serving tests' prompts and the playground's
SERVE_VOCAB = Vocabulary(tuple(sorted(set("\n :ABCEIJLMORTUabcdefghilmnorstu"))), (1,) * 32)
# 60 CJK characters with Zipfian counts: with 16 units, an adaptive softmax of a head and three tails
CJK_CHARS = tuple(chr(0x4E00 + i) for i in range(57)) + ("\n", "。", "，")
CJK_VOCAB = Vocabulary(tuple(sorted(CJK_CHARS)), tuple(int(5000 / (1 + (i * 7) % 60)) for i in range(60)))
PROMPTS = ["ROMEO:", "a", "Abba"]


def settings(num_chars: int = 20, temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0,
             seed: int = 0) -> SamplingSettings:
    """SamplingSettings with the tests' usual small num_chars."""
    return SamplingSettings(num_chars, temperature, top_k, top_p, seed)


def tiny_model(vocab: Vocabulary = VOCAB, cell: str = "gru", layers: int = 1, units: int = 16, seed: int = 0,
               embedding_dim: int = 8, rnn_impl: str = "auto"):
    import keras

    from charrnn.nn import network
    from charrnn.nn.modeldir import ModelConfig

    keras.utils.set_random_seed(seed)
    return network.build(ModelConfig(vocab_size=vocab.size, embedding_dim=embedding_dim, units=units, layers=layers,
                                     cell=cell, vocab_fingerprint=vocab.fingerprint), rnn_impl=rnn_impl)


def adaptive_model(rnn_impl: str = "auto", layers: int = 1, units: int = 16, seed: int = 0, cell: str = "gru"):
    import keras

    from charrnn.nn import network
    from charrnn.nn.modeldir import ModelConfig

    keras.utils.set_random_seed(seed)
    config = ModelConfig.from_params(TrainParams(embedding_dim=8, units=units, layers=layers, cell=cell,
                                                 softmax="adaptive"), CJK_VOCAB)
    return network.build(config, rnn_impl=rnn_impl)


def saved_model(path: Path, vocab: Vocabulary = VOCAB, **kw) -> Path:
    """A tiny model saved as a model directory at `path`."""
    from charrnn.nn import network

    network.save(tiny_model(vocab, **kw), vocab, path)
    return path


def generator(vocab: Vocabulary = VOCAB, **kw):
    from charrnn.sampling.generation import Generator

    return Generator(tiny_model(vocab, **kw), vocab)


def exported(path: Path, vocab: Vocabulary = VOCAB, **kw):
    """A tiny model's generator exported as a SavedModel at `path`; the Generator."""
    from charrnn.sampling.generation import export

    made = generator(vocab, **kw)
    export(made, path)
    return made


def kill_at(monkeypatch, epoch: int, batch: int):
    """Make training die in `epoch` (1-based) at `batch`, as a Ctrl-C would."""
    from charrnn.nn import training

    def on_train_batch_end(self, b, logs=None):
        if self.epoch + 1 == epoch and b + 1 == batch:
            raise KeyboardInterrupt

    monkeypatch.setattr(training.StopOnNaN, "on_train_batch_end", on_train_batch_end)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small file system (tmpfs of `size`, e.g. "64k") mounted at the new directory `path`: for
    full and read-only disks. Needs root (CI has it); unmounted lazily, since MLflow's engines may
    still hold a file open."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)
