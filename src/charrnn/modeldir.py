"""A model directory on disk, read and checked without TensorFlow: config.json (architecture and
the fingerprint of the vocabulary it was trained with), model.weights.h5 and vocab.json.

Everything is checked before anything is built: the config's fields against the rules of the
train.* params, the vocabulary against the config's fingerprint and size, and the config's
sizes against the shapes stored in the weights file. So a config asking for absurd sizes, a
truncated weights file or a stray vocabulary is one clear error, not an allocation failure.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

from charrnn.errors import CharrnnError
from charrnn.params import problem
from charrnn.vocab import VocabError, Vocabulary

CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
VOCAB = "vocab.json"


class ModelError(CharrnnError, ValueError):
    pass


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    embedding_dim: int
    units: int
    layers: int = 1
    cell: str = "gru"
    dropout: float = 0.0
    vocab_fingerprint: str = ""

    @classmethod
    def from_params(cls, train, vocab: Vocabulary) -> "ModelConfig":
        return cls(vocab_size=vocab.size, embedding_dim=train.embedding_dim, units=train.units,
                   layers=train.layers, cell=train.cell, dropout=train.dropout,
                   vocab_fingerprint=vocab.fingerprint)

    @classmethod
    def from_dict(cls, raw, where: str = CONFIG) -> "ModelConfig":
        """A config from JSON, every field checked as the train.* param of the same name is."""
        if not isinstance(raw, dict):
            raise ModelError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown, missing = set(raw) - known, {"vocab_size", "embedding_dim", "units"} - set(raw)
        if unknown or missing:
            raise ModelError(f"{where}: not a charrnn model config (unknown keys {sorted(unknown)}, "
                             f"missing keys {sorted(missing)})")
        for name, value in raw.items():
            key = "train.units" if name == "vocab_size" else f"train.{name}"
            wrong = problem(key, value) if name != "vocab_fingerprint" else (
                None if isinstance(value, str) else f"must be a string, got {value!r}")
            if wrong:
                raise ModelError(f"{where}: '{name}' {wrong}")
        return cls(**raw)

    def weight_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of every weight of a model built from this config."""
        gates = 3 if self.cell == "gru" else 4
        shapes = [(self.vocab_size, self.embedding_dim)]
        for layer in range(self.layers):
            inputs = self.embedding_dim if layer == 0 else self.units
            bias = (2, gates * self.units) if self.cell == "gru" else (gates * self.units,)
            shapes += [(inputs, gates * self.units), (self.units, gates * self.units), bias]
        return shapes + [(self.units, self.vocab_size), (self.vocab_size,)]


class ModelDir(NamedTuple):
    path: Path
    config: ModelConfig
    vocab: Vocabulary


def read(path: str | Path) -> ModelDir:
    """A model directory's config and vocabulary, checked against each other and against the
    weights file's shapes."""
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is a file, not a model directory"
        raise ModelError(f"{path} {what}: give the directory a trained model was saved to "
                         "(the pipeline's is data/model; `dvc repro train` makes it)")
    if not (path / CONFIG).is_file():
        raise ModelError(f"{path}: no trained model here (expected {CONFIG}, {WEIGHTS} and {VOCAB}; "
                         "run `dvc repro train`)")
    try:
        raw = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"{path / CONFIG}: not valid JSON ({e})") from None
    config = ModelConfig.from_dict(raw, str(path / CONFIG))
    if not (path / VOCAB).is_file():
        raise ModelError(f"{path / VOCAB} is missing: the model directory is incomplete; run `dvc repro train`")
    try:
        vocab = Vocabulary.load(path / VOCAB)
    except VocabError as e:
        raise ModelError(str(e)) from None
    if config.vocab_fingerprint != vocab.fingerprint or config.vocab_size != vocab.size:
        raise ModelError(
            f"{path / VOCAB} is not the vocabulary {path} was trained with (fingerprint "
            f"{vocab.fingerprint[:12]}, {vocab.size} ids; the model's: {config.vocab_fingerprint[:12]}, "
            f"{config.vocab_size} ids): restore the model's own vocab.json, or retrain with `dvc repro`"
        )
    check_weights(path / WEIGHTS, config)
    return ModelDir(path, config, vocab)


def check_weights(weights: Path, config: ModelConfig) -> None:
    """The weights file holds exactly the weights the config describes (shapes compared as a
    multiset, so layer naming does not matter)."""
    import h5py

    try:
        with h5py.File(weights, "r") as f:
            stored = []
            f.visititems(lambda name, item: stored.append(tuple(item.shape)) if isinstance(item, h5py.Dataset) else None)
    except FileNotFoundError:
        raise ModelError(f"{weights} is missing: the model directory is incomplete; run `dvc repro train`") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # h5py's errors for truncated or foreign files
        raise ModelError(f"{weights} is not a readable weights file ({e}); run `dvc repro train`") from None
    if sorted(stored) != sorted(config.weight_shapes()):
        raise ModelError(f"{weights.parent / CONFIG} does not match {weights.name}: the config ({_describe(config)}) "
                         f"needs weights of shapes {sorted(config.weight_shapes())}, the file holds {sorted(stored)}")


def _describe(config: ModelConfig) -> str:
    return ", ".join(f"{k}={v}" for k, v in asdict(config).items() if k != "vocab_fingerprint")
