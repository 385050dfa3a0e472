"""A model directory on disk, read and checked without TensorFlow: config.json (architecture and
the fingerprint of the vocabulary it was trained with), model.weights.h5 and vocab.json.

Everything is checked before anything is built: the config's fields against the rules of the
train.* params, the vocabulary against the config's fingerprint and size, and the config's
sizes against the shapes stored in the weights file. So a config asking for absurd sizes, a
truncated weights file or a stray vocabulary is one clear error, not an allocation failure.

A model with the adaptive softmax (charrnn.adaptive) also records its clusters (the ids of the
head, then of each tail cluster) and each tail cluster's projection size; a full-softmax config
leaves these keys out, so its config.json is what it was before they existed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

from charrnn.core import files
from charrnn.core.errors import CharrnnError
from charrnn.core.params import problem
from charrnn.data.vocab import VocabError, Vocabulary

CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
VOCAB = "vocab.json"


ADAPTIVE_FIELDS = ("softmax", "clusters", "tail_dims")  # left out of a full softmax's config.json


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
    softmax: str = "full"
    clusters: tuple[tuple[int, ...], ...] = ()  # adaptive: ids of the head, then of each tail cluster
    tail_dims: tuple[int, ...] = ()  # adaptive: each tail cluster's projection size

    @classmethod
    def from_params(cls, train, vocab: Vocabulary) -> "ModelConfig":
        adaptive = {}
        if train.softmax == "adaptive":
            from charrnn.nn.clusters import choose_clusters

            clusters, dims = choose_clusters(vocab.counts, train.units)
            adaptive = {"softmax": "adaptive", "clusters": clusters, "tail_dims": dims}
        return cls(vocab_size=vocab.size, embedding_dim=train.embedding_dim, units=train.units,
                   layers=train.layers, cell=train.cell, dropout=train.dropout,
                   vocab_fingerprint=vocab.fingerprint, **adaptive)

    def to_dict(self) -> dict:
        """What config.json holds: every field, less the adaptive softmax's for a full softmax."""
        raw = asdict(self)
        if self.softmax == "full":
            for name in ADAPTIVE_FIELDS:
                del raw[name]
        return raw

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
            if name in ("clusters", "tail_dims"):
                continue
            key = "train.units" if name == "vocab_size" else f"train.{name}"
            wrong = problem(key, value) if name != "vocab_fingerprint" else (
                None if isinstance(value, str) else f"must be a string, got {value!r}")
            if wrong:
                raise ModelError(f"{where}: '{name}' {wrong}")
        clusters, dims = raw.get("clusters", []), raw.get("tail_dims", [])
        wrong = _adaptive_problem(raw.get("softmax", "full"), raw["vocab_size"], clusters, dims)
        if wrong:
            raise ModelError(f"{where}: {wrong}")
        return cls(**{**raw, "clusters": tuple(tuple(c) for c in clusters), "tail_dims": tuple(dims)})

    def weight_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of every weight of a model built from this config."""
        gates = 3 if self.cell == "gru" else 4
        shapes = [(self.vocab_size, self.embedding_dim)]
        for layer in range(self.layers):
            inputs = self.embedding_dim if layer == 0 else self.units
            bias = (2, gates * self.units) if self.cell == "gru" else (gates * self.units,)
            shapes += [(inputs, gates * self.units), (self.units, gates * self.units), bias]
        if self.softmax == "full":
            return shapes + [(self.units, self.vocab_size), (self.vocab_size,)]
        head = len(self.clusters[0]) + len(self.tail_dims)
        shapes += [(self.units, head), (head,)]
        for dim, ids in zip(self.tail_dims, self.clusters[1:]):
            shapes += [(self.units, dim), (dim, len(ids)), (len(ids),)]
        return shapes


def _adaptive_problem(softmax: str, vocab_size: int, clusters, dims) -> str | None:
    """What is wrong with a config's clusters and tail_dims, if anything."""
    def ints(xs):
        return isinstance(xs, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in xs)

    if not isinstance(clusters, list) or not all(ints(c) for c in clusters):
        return f"'clusters' must be a list of lists of ids, got {clusters!r:.80}"
    if not ints(dims) or not all(d > 0 for d in dims):
        return f"'tail_dims' must be a list of positive integers, got {dims!r:.80}"
    if softmax == "full":
        return None if not clusters and not dims else "'clusters' and 'tail_dims' are for softmax 'adaptive' only"
    if not clusters or not clusters[0] or len(dims) != len(clusters) - 1 or not all(clusters[1:]):
        return (f"'clusters' must be a non-empty head and one non-empty list per entry of 'tail_dims' "
                f"({len(dims)}), got {len(clusters)} lists")
    if sorted(i for c in clusters for i in c) != list(range(vocab_size)):
        return f"'clusters' must hold every id from 0 to {vocab_size - 1} exactly once"
    return None


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
        raw = files.read_json(path / CONFIG)
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

    stored, broken = [], []

    def visit(name, item):
        if isinstance(item, h5py.Dataset):
            stored.append(tuple(item.shape))
            if item.dtype.kind == "f" and not _all_finite(item):
                broken.append(name)

    try:
        with h5py.File(weights, "r") as f:
            f.visititems(visit)
    except FileNotFoundError:
        raise ModelError(f"{weights} is missing: the model directory is incomplete; run `dvc repro train`") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # h5py's errors for truncated or foreign files
        raise ModelError(f"{weights} is not a readable weights file ({e}); run `dvc repro train`") from None
    if broken:
        raise ModelError(f"{weights} holds NaN or infinite values (in {', '.join(broken[:3])}"
                         f"{', ...' if len(broken) > 3 else ''}): the file is damaged or was edited; "
                         "restore it or retrain with `dvc repro train`")
    if sorted(stored) != sorted(config.weight_shapes()):
        raise ModelError(f"{weights.parent / CONFIG} does not match {weights.name}: the config ({_describe(config)}) "
                         f"needs weights of shapes {sorted(config.weight_shapes())}, the file holds {sorted(stored)}")


def _all_finite(dataset, rows: int = 1 << 16) -> bool:
    """Every value of an h5py dataset is finite, read a block of rows at a time (bounded memory)."""
    import numpy as np

    if dataset.ndim == 0:
        return bool(np.isfinite(dataset[()]))
    return all(np.isfinite(dataset[i:i + rows]).all() for i in range(0, dataset.shape[0], rows))


def _describe(config: ModelConfig) -> str:
    raw = config.to_dict()
    if "clusters" in raw:
        raw["clusters"] = f"{len(config.clusters)} of sizes {[len(c) for c in config.clusters]}"
    return ", ".join(f"{k}={v}" for k, v in raw.items() if k != "vocab_fingerprint")
