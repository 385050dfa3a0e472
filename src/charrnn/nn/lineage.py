"""Fine-tuning's parent model (train.init_from), without TensorFlow or MLflow: what build_vocab
records of it in data/parent.json, and the architecture a fine-tuned model takes from it.

data/parent.json is the parent as build_vocab resolved it: the init_from it was given, the
parent's content hash, and for a registered model the version the alias or number named then.
`train` depends on this file (DVC), fetches exactly that version or directory again and checks
its hash, so the model it fine-tunes is the one whose vocabulary build_vocab extended. Training
from scratch records {"init_from": ""}, the same bytes on every run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from charrnn.core import files
from charrnn.core.errors import CharrnnError
from charrnn.core.params import ARCHITECTURE, TrainParams, explicit
from charrnn.nn.modeldir import ModelConfig


class ParentError(CharrnnError, ValueError):
    pass


@dataclass(frozen=True)
class Parent:
    init_from: str  # the param as given: a directory or a models:/ URI
    model_hash: str  # sha256 of the parent's model directory (charrnn.core.files.sha256_tree)
    registered_model: str | None = None  # for a models:/ URI: the registered model and the version it named
    version: str | None = None

    @property
    def pinned(self) -> str:
        """Where exactly this parent is: its directory, or models:/<name>/<version>."""
        return f"models:/{self.registered_model}/{self.version}" if self.version else self.init_from

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def metrics(self) -> dict:
        """What metrics/train.json says of the parent: numbers only (its text is data/parent.json)."""
        return {"parent_version": int(self.version)} if self.version else {}


def record(parent: Parent | None) -> dict:
    """What data/parent.json holds."""
    return parent.to_dict() if parent else {"init_from": ""}


def read_record(path: Path, init_from: str) -> Parent | None:
    """The parent build_vocab recorded for this init_from (None: from scratch)."""
    try:
        raw = files.read_json(path)
    except FileNotFoundError:
        raise ParentError(f"{path} is missing: run `dvc repro build_vocab`") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ParentError(f"{path} is not readable ({e}): run `dvc repro build_vocab`") from None
    if not isinstance(raw, dict) or raw.get("init_from") != init_from:
        raise ParentError(f"{path} was written for another train.init_from than {init_from!r}: "
                          "run `dvc repro build_vocab`")
    if init_from == "":
        return None
    try:
        return Parent(**raw)
    except TypeError:
        raise ParentError(f"{path} is not a parent record: run `dvc repro build_vocab`") from None


def check_same(recorded: Parent, found_hash: str) -> None:
    """The parent fetched again is the one build_vocab recorded."""
    if found_hash != recorded.model_hash:
        raise ParentError(f"{recorded.pinned} is not the model build_vocab extended the vocabulary from (its hash is "
                          f"{found_hash[:12]}, data/parent.json says {recorded.model_hash[:12]}): run "
                          "`dvc repro -f -s build_vocab`, then `dvc repro`")


def train_params(train: TrainParams, parent: ModelConfig) -> TrainParams:
    """The train params with the parent's architecture; a size set to something else than both
    its default and the parent's is an error naming both values."""
    if parent.softmax != "full":
        raise ParentError("train.init_from: fine-tuning a model with train.softmax 'adaptive' is not supported "
                          "(its clusters cannot take new characters yet); fine-tune a full-softmax model")
    conflicts = [f"train.{name} is {getattr(train, name)!r} but the parent's is {getattr(parent, name)!r}"
                 for name in ARCHITECTURE if explicit(train, name) and getattr(train, name) != getattr(parent, name)]
    if conflicts:
        raise ParentError(f"train.init_from: {'; '.join(conflicts)}: a fine-tuned model keeps its parent's "
                          "architecture (set these back to their defaults, or to the parent's values)")
    return dataclasses.replace(train, **{name: getattr(parent, name) for name in ARCHITECTURE})
