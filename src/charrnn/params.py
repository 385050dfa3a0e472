"""Typed, validated parameters: the only reader of params.yaml.

Every problem in a params file is collected and reported at once, one line each, with a
"did you mean" for misspelt keys. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml


class ParamsError(ValueError):
    """A params file that cannot be used; the message lists every problem, one per line."""

    def __init__(self, problems: list[str], path: str | Path = "params.yaml"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem(s):\n{lines}")


def _check(rule: str):
    """Field metadata: a range rule checked after types (see _RULES)."""
    return {"rule": rule}


_RULES = {
    "positive": (lambda v: v > 0, "must be > 0"),
    "non_negative": (lambda v: v >= 0, "must be >= 0"),
    "fraction_open": (lambda v: 0 < v < 1, "must be strictly between 0 and 1"),
    "fraction_half_open": (lambda v: 0 <= v < 1, "must be >= 0 and < 1"),
    "cell": (lambda v: v in ("gru", "lstm"), "must be 'gru' or 'lstm'"),
    "schedule": (lambda v: v in ("constant", "cosine"), "must be 'constant' or 'cosine'"),
    "distribute": (lambda v: v in ("auto", "mirrored", "multi_worker"), "must be 'auto', 'mirrored' or 'multi_worker'"),
    "sha256": (
        lambda v: v is None or (len(v) == 64 and all(c in "0123456789abcdef" for c in v.lower())),
        "must be 64 hex digits (a sha256) or null",
    ),
    "nonempty": (lambda v: len(v) > 0, "must not be empty"),
    "rnn_impl": (lambda v: v in ("auto", "keras", "fused"), "must be 'auto', 'keras' or 'fused'"),
}


@dataclass(frozen=True)
class DataParams:
    source: str = "shakespeare"  # a preset name, an https:// URL, or a local file path
    sha256: str | None = field(default=None, metadata=_check("sha256"))
    encoding: str = "utf-8"
    strip_gutenberg: bool = False
    val_fraction: float = field(default=0.1, metadata=_check("fraction_open"))
    shard_mb: int = field(default=64, metadata=_check("positive"))


@dataclass(frozen=True)
class VocabParams:
    min_count: int = field(default=1, metadata=_check("positive"))
    max_size: int = field(default=0, metadata=_check("non_negative"))  # 0: no limit


@dataclass(frozen=True)
class TrainParams:
    cell: str = field(default="gru", metadata=_check("cell"))
    layers: int = field(default=1, metadata=_check("positive"))
    embedding_dim: int = field(default=128, metadata=_check("positive"))
    units: int = field(default=512, metadata=_check("positive"))
    dropout: float = field(default=0.0, metadata=_check("fraction_half_open"))
    batch_size: int = field(default=64, metadata=_check("positive"))
    epochs: int = field(default=3, metadata=_check("positive"))
    learning_rate: float = field(default=0.002, metadata=_check("positive"))
    seed: int = 42
    threads: int = field(default=0, metadata=_check("non_negative"))  # 0: all cores
    distribute: str = field(default="auto", metadata=_check("distribute"))  # see charrnn.distribute
    # the recipe (see charrnn.recipe)
    schedule: str = field(default="constant", metadata=_check("schedule"))
    warmup_steps: int = field(default=0, metadata=_check("non_negative"))
    clipnorm: float = field(default=0.0, metadata=_check("non_negative"))  # 0: no clipping
    weight_decay: float = field(default=0.0, metadata=_check("non_negative"))
    patience: int = field(default=0, metadata=_check("non_negative"))  # 0: no early stopping
    restore_best: bool = True
    random_offset: bool = False  # each epoch's windows start at a fresh seeded offset
    rnn_impl: str = field(default="auto", metadata=_check("rnn_impl"))  # auto: fused GRU on CPU, Keras (cuDNN) on GPU
    mixed_precision: bool = False  # mixed_float16 on a GPU; ignored on a CPU


@dataclass(frozen=True)
class SampleParams:
    temperature: float = field(default=0.8, metadata=_check("positive"))
    num_chars: int = field(default=500, metadata=_check("positive"))
    prompts: list[str] = field(default_factory=lambda: ["ROMEO:"], metadata=_check("nonempty"))
    seed: int = 7


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = field(default=64, metadata=_check("positive"))  # parallel text streams


@dataclass(frozen=True)
class TrackingParams:
    enabled: bool = True
    experiment: str = "charrnn"


@dataclass(frozen=True)
class Params:
    seq_length: int = field(default=100, metadata=_check("positive"))
    data: DataParams = field(default_factory=DataParams)
    vocab: VocabParams = field(default_factory=VocabParams)
    train: TrainParams = field(default_factory=TrainParams)
    sample: SampleParams = field(default_factory=SampleParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> "Params":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ParamsError([f"file not found (run from the project root, or pass the path)"], path)
        except yaml.YAMLError as e:
            raise ParamsError([f"not valid YAML: {e}".replace("\n", " ")], path)
        return cls.from_dict(raw or {}, path)

    @classmethod
    def from_dict(cls, raw: dict, path: str | Path = "params.yaml") -> "Params":
        problems: list[str] = []
        params = _build(cls, raw, "", problems)
        if problems:
            raise ParamsError(problems, path)
        return params

    def flat(self) -> dict[str, object]:
        """{'train.units': 512, ...}: the form MLflow and DVC show."""
        out: dict[str, object] = {}

        def walk(obj, prefix):
            for f in fields(obj):
                value = getattr(obj, f.name)
                if dataclasses.is_dataclass(value):
                    walk(value, f"{prefix}{f.name}.")
                else:
                    out[f"{prefix}{f.name}"] = value

        walk(self, "")
        return out


def _type_ok(value, annotation) -> tuple[bool, object]:
    """Check (and gently coerce int -> float) a YAML value against a field annotation."""
    hints = {str: str, int: int, float: float, bool: bool}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return True, None
        annotation = next(a for a in args if a is not type(None))
        origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list) or not all(isinstance(v, item) for v in value):
            return False, value
        return True, list(value)
    expected = hints[annotation]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return True, float(value)
    if expected is int and isinstance(value, bool):
        return False, value
    return isinstance(value, expected), value


def _type_name(annotation) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls, raw, prefix: str, problems: list[str]):
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or 'the file'}: expected a mapping, got {raw!r}")
        return cls()
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known: {', '.join(known)})"
            problems.append(f"unknown key '{prefix}{key}'{hint}")
    values = {}
    for name, f in known.items():
        if name not in raw:
            continue
        value, annotation = raw[name], hints[name]
        if dataclasses.is_dataclass(annotation):
            values[name] = _build(annotation, value, f"{prefix}{name}.", problems)
            continue
        ok, value = _type_ok(value, annotation)
        if not ok:
            problems.append(f"'{prefix}{name}' must be {_type_name(annotation)}, got {raw[name]!r}")
            continue
        rule = f.metadata.get("rule")
        if rule:
            test, message = _RULES[rule]
            if not test(value):
                problems.append(f"'{prefix}{name}' {message}, got {value!r}")
                continue
        values[name] = value
    return cls(**values)
