"""Typed, validated parameters: the only reader of params.yaml, and the one home of defaults.

params.yaml is read the way DVC reads it (ruamel.yaml, YAML 1.2: `1e-3` is a number, `yes` is a
string), so the stages and DVC always agree on what a value is. Every key must be in the file
(`dvc exp run -S` needs it there too); the defaults below are the documented ones, and
tests/test_params.py proves that params.yaml equals them. Every problem in a file is collected
and reported at once, one line each, with a "did you mean" for misspelt keys. The same rules
check the `charrnn` command's options (`problem()`). Nothing here imports TensorFlow.
"""
from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

from charrnn.core.errors import CharrnnError

# Limits, each documented in the README ("Parameters").
SEED_MAX = 2**31 - 1  # TensorFlow's and Keras's seeds are 32-bit
TEMPERATURE_RANGE = (1e-6, 100.0)  # below 1e-6 sampling is greedy anyway; float32 keeps the range exact
MAX_SEQ_LENGTH = 100_000
MAX_LAYERS = 64
MAX_EPOCHS = 1_000
MAX_THREADS = 1_024
MAX_NUM_CHARS = 1_000_000  # sample.num_chars and `charrnn generate` (whose --max-chars raises it)
MAX_PROMPTS = 1_024
# Every float param reaches TensorFlow as a float32, which rounds a smaller magnitude to zero (or,
# below this, to a denormal that the CPU flushes to zero) and a larger one to infinity.
FLOAT32_TINY = 1.1754944e-38
FLOAT32_MAX = 3.4028234e38
MLFLOW_NAME_MAX = 256  # MLflow's SQL stores hold experiment and registered-model names in VARCHAR(256)
MODEL_NAME_FORBIDDEN = "/:@'\"`"  # MLflow refuses / and :, a models:/ URI splits at @, its search filters at quotes
MODEL_URI = r"models:/([^/@]+)(?:@([^/]+)|/([0-9]+))"  # models:/<name>@<alias> or models:/<name>/<version>
# The train.* params that are the network's shape: a fine-tuned model takes them from its parent.
ARCHITECTURE = ("cell", "layers", "embedding_dim", "units", "softmax")


class ParamsError(CharrnnError, ValueError):
    """A params file that cannot be used; the message lists every problem, one per line."""

    def __init__(self, problems: list[str], path: str | Path = "params.yaml"):
        self.problems = problems
        if len(problems) == 1:
            super().__init__(f"{path}: {problems[0]}")
        else:
            lines = "\n".join(f"  - {p}" for p in problems)
            super().__init__(f"{path}: {len(problems)} problems:\n{lines}")


def _mlflow_name(v: str, forbidden: str = "") -> bool:
    return (v == v.strip() != "" and len(v) <= MLFLOW_NAME_MAX and v.isprintable()
            and not any(c in v for c in forbidden))


def _model_name(v: str) -> bool:
    """MLflow's registered-model rule (utils/validation.py: no / or :, not a path that normalises
    differently: '.', '..x') and the project's: a models:/name@alias URI and a search filter can name it."""
    return _mlflow_name(v, MODEL_NAME_FORBIDDEN) and v != "." and not v.startswith("..")


def _init_from(v: str) -> bool:
    """"" (from scratch), a registered-model URI, or a path (checked when it is read)."""
    if v == "":
        return True
    if v != v.strip() or not v.isprintable():
        return False
    return not v.startswith("models:") or re.fullmatch(MODEL_URI, v) is not None


def _is_text_codec(name: str) -> bool:
    try:
        return codecs.lookup(name)._is_text_encoding  # False for base64, rot13, zlib, ...
    except LookupError:
        return False


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


class Bounds(NamedTuple):
    """A numeric rule's range, for those who state it elsewhere (the HTTP API's schema)."""
    lo: float
    hi: float
    lo_open: bool = False  # lo itself excluded


def _between(lo, hi, what: str = "a number", lo_open: bool = False):
    test = (lambda v: lo < v <= hi) if lo_open else (lambda v: lo <= v <= hi)
    above = f"> {_number(lo)} and <= {_number(hi)}" if lo_open else f"{what} from {_number(lo)} to {_number(hi)}"
    return (test, f"must be {above}", Bounds(lo, hi, lo_open))


def _number(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _one_of(*choices: str):
    return (lambda v: v in choices, "must be " + " or ".join(repr(c) for c in choices))


_RULES = {
    "positive": (lambda v: v > 0, "must be > 0"),
    "non_negative": (lambda v: v >= 0, "must be >= 0"),
    "fraction_open": (lambda v: 0 < v < 1, "must be strictly between 0 and 1"),
    "fraction_half_open": (lambda v: 0 <= v < 1, "must be >= 0 and < 1"),
    "probability": _between(0, 1, lo_open=True),
    "seed": _between(0, SEED_MAX, "an integer"),
    "temperature": _between(*TEMPERATURE_RANGE),
    "seq_length": _between(1, MAX_SEQ_LENGTH, "an integer"),
    "layers": _between(1, MAX_LAYERS, "an integer"),
    "epochs": _between(1, MAX_EPOCHS, "an integer"),
    "threads": _between(0, MAX_THREADS, "an integer"),
    "num_chars": _between(1, MAX_NUM_CHARS, "an integer"),
    "top_k": _between(0, SEED_MAX, "an integer"),
    "ngram": _between(1, 1_000, "an integer"),
    "cell": _one_of("gru", "lstm"),
    "schedule": _one_of("constant", "cosine"),
    "distribute": _one_of("auto", "mirrored", "multi_worker"),
    "rnn_impl": _one_of("auto", "keras", "fused"),
    "softmax": _one_of("full", "adaptive"),
    "sha256": (
        lambda v: v is None or (len(v) == 64 and all(c in "0123456789abcdef" for c in v.lower())),
        "must be 64 hex digits (a sha256) or null",
    ),
    "experiment_name": (_mlflow_name, f"must be an MLflow experiment name: 1 to {MLFLOW_NAME_MAX} printable "
                                      "characters, no blank at either end"),
    "model_name": (_model_name, f"must be a registered-model name MLflow accepts and a models:/ URI can address: 1 to "
                                f"{MLFLOW_NAME_MAX} printable characters, none of {' '.join(MODEL_NAME_FORBIDDEN)}, "
                                "no blank at either end, not starting with '..'"),
    "init_from": (_init_from, "must be \"\" (train from scratch), a model directory, or models:/<name>@<alias> or "
                              "models:/<name>/<version>"),
    "nonempty": (lambda v: len(v) > 0 and (not isinstance(v, str) or v.strip() != ""), "must not be empty"),
    "separator": (_encodable, "must be a string of valid Unicode (\"\" for none)"),
    "text_codec": (_is_text_codec, "must name a text encoding Python knows, such as utf-8, gb18030, latin-1"),
    "prompts": (lambda v: len(v) <= MAX_PROMPTS and all(p and _encodable(p) for p in v),
                f"must be a list of at most {MAX_PROMPTS} non-empty strings of valid Unicode ([] draws "
                "prompts from the held-out text)"),
    "temperatures": (lambda v: all(TEMPERATURE_RANGE[0] <= t <= TEMPERATURE_RANGE[1] for t in v),
                     f"must hold temperatures from {_number(TEMPERATURE_RANGE[0])} to {_number(TEMPERATURE_RANGE[1])}"),
}


def _rule(name: str) -> dict:
    """Field metadata: a rule checked after the type (see _RULES)."""
    return {"rule": name}


@dataclass(frozen=True)
class DataParams:
    source: str = field(default="shakespeare", metadata=_rule("nonempty"))  # preset, https:// URL, env:NAME, file, folder, glob, archive
    sha256: str | None = field(default=None, metadata=_rule("sha256"))
    encoding: str = field(default="utf-8", metadata=_rule("text_codec"))
    strip_gutenberg: bool = False
    separator: str = field(default="\n", metadata=_rule("separator"))  # between the documents of a folder/archive
    val_fraction: float = field(default=0.1, metadata=_rule("fraction_open"))
    shard_mb: int = field(default=64, metadata=_rule("positive"))


@dataclass(frozen=True)
class VocabParams:
    min_count: int = field(default=1, metadata=_rule("positive"))
    max_size: int = field(default=0, metadata=_rule("non_negative"))  # 0: no limit


@dataclass(frozen=True)
class TrainParams:
    cell: str = field(default="gru", metadata=_rule("cell"))
    layers: int = field(default=1, metadata=_rule("layers"))
    embedding_dim: int = field(default=128, metadata=_rule("positive"))
    units: int = field(default=512, metadata=_rule("positive"))
    dropout: float = field(default=0.0, metadata=_rule("fraction_half_open"))
    batch_size: int = field(default=64, metadata=_rule("positive"))
    epochs: int = field(default=3, metadata=_rule("epochs"))
    learning_rate: float = field(default=0.002, metadata=_rule("positive"))
    seed: int = field(default=42, metadata=_rule("seed"))
    threads: int = field(default=0, metadata=_rule("threads"))  # 0: all cores
    distribute: str = field(default="auto", metadata=_rule("distribute"))  # see charrnn.distribute
    # the recipe (see charrnn.recipe)
    schedule: str = field(default="cosine", metadata=_rule("schedule"))
    warmup_steps: int = field(default=200, metadata=_rule("non_negative"))
    clipnorm: float = field(default=1.0, metadata=_rule("non_negative"))  # 0: no clipping
    weight_decay: float = field(default=0.0, metadata=_rule("non_negative"))
    patience: int = field(default=0, metadata=_rule("non_negative"))  # 0: no early stopping
    restore_best: bool = True
    random_offset: bool = True  # each epoch's windows start at a fresh seeded offset
    rnn_impl: str = field(default="auto", metadata=_rule("rnn_impl"))  # auto: fused GRU on CPU, Keras (cuDNN) on GPU
    mixed_precision: bool = False  # mixed_float16 on a GPU; ignored on a CPU
    softmax: str = field(default="full", metadata=_rule("softmax"))  # adaptive: frequency clusters, for large vocabularies
    init_from: str = field(default="", metadata=_rule("init_from"))  # "": from scratch; else the parent model to fine-tune


@dataclass(frozen=True)
class SampleParams:
    temperature: float = field(default=0.8, metadata=_rule("temperature"))
    num_chars: int = field(default=500, metadata=_rule("num_chars"))
    prompts: list[str] = field(default_factory=list, metadata=_rule("prompts"))  # []: from the held-out text
    seed: int = field(default=7, metadata=_rule("seed"))
    top_k: int = field(default=0, metadata=_rule("top_k"))  # 0: off
    top_p: float = field(default=1.0, metadata=_rule("probability"))  # 1.0: off
    temperature_grid: list[float] = field(default_factory=lambda: [0.5, 0.8, 1.0], metadata=_rule("temperatures"))
    copy_ngram: int = field(default=20, metadata=_rule("ngram"))  # n of the copy metric (metrics/samples.json)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = field(default=64, metadata=_rule("positive"))  # parallel text streams


@dataclass(frozen=True)
class TrackingParams:
    enabled: bool = True
    experiment: str = field(default="charrnn", metadata=_rule("experiment_name"))
    registered_model: str = field(default="charrnn", metadata=_rule("model_name"))  # MLflow Model Registry name


@dataclass(frozen=True)
class Params:
    seq_length: int = field(default=100, metadata=_rule("seq_length"))
    data: DataParams = field(default_factory=DataParams)
    vocab: VocabParams = field(default_factory=VocabParams)
    train: TrainParams = field(default_factory=TrainParams)
    sample: SampleParams = field(default_factory=SampleParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> "Params":
        """Read a params file as DVC does; every key must be present."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ParamsError(["file not found (run from the project root, or pass the path)"], path) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ParamsError([f"cannot be read: {e}"], path) from None
        return cls.from_dict(parse_yaml(text, path), path, complete=True)

    @classmethod
    def from_dict(cls, raw, path: str | Path = "params.yaml", complete: bool = False) -> "Params":
        """Params from a mapping; keys left out take their defaults unless `complete`."""
        problems: list[str] = []
        params = _build(cls, raw, "", problems, complete)
        if problems:
            raise ParamsError(problems, path)
        return params

    def flat(self) -> dict[str, object]:
        """{'train.units': 512, ...}: the form MLflow and DVC show."""
        return flatten(self)


def parse_yaml(text: str, path: str | Path = "params.yaml"):
    """YAML as DVC parses params files: ruamel.yaml's safe loader (YAML 1.2)."""
    from ruamel.yaml import YAML

    try:
        return YAML(typ="safe").load(text)
    except Exception as e:  # ruamel's YAMLError and the odd ValueError from a constructor
        raise ParamsError([f"not valid YAML: {' '.join(str(e).split())}"], path) from None


def with_changes(text: str, changes: dict, path: str | Path = "params.yaml") -> str:
    """A params file's text with `changes` (a nested mapping, as in params.yaml) merged in, read
    and written as DVC does (ruamel.yaml, YAML 1.2), comments and order kept."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    try:
        data = yaml.load(text)
    except Exception as e:  # noqa: BLE001 - ruamel's YAMLError and the odd ValueError
        raise ParamsError([f"not valid YAML: {' '.join(str(e).split())}"], path) from None

    def merge(into, new):
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(data, changes)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def flatten(obj, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def explicit(train: TrainParams, name: str) -> bool:
    """Whether the train param `name` was set to something else than its default (every key is in
    params.yaml, so a default value is what "not set" looks like)."""
    return getattr(train, name) != getattr(TrainParams(), name)


def problem(key: str, value) -> str | None:
    """Why `value` cannot be the param `key` ('sample.temperature'), or None if it can: the
    rules of params.yaml, for the command line's options."""
    cls, name = Params, key
    while "." in name:
        section, name = name.split(".", 1)
        cls = typing.get_type_hints(cls)[section]
    f = {f.name: f for f in fields(cls)}[name]
    ok, value = _type_ok(value, typing.get_type_hints(cls)[name])
    if not ok:
        return f"must be {_type_name(typing.get_type_hints(cls)[name])}, got {value!r}"
    return _rule_problem(f, value)


def _precision_problem(value) -> str | None:
    """Why a float cannot be the float32 the graph computes with, if it cannot."""
    if isinstance(value, float) and value != 0 and not FLOAT32_TINY <= abs(value) <= FLOAT32_MAX:
        return (f"must be 0 or of a size a 32-bit float holds ({FLOAT32_TINY:.2g} to {FLOAT32_MAX:.2g}), "
                f"got {value!r}")
    return None


def _rule_problem(f: dataclasses.Field, value) -> str | None:
    """Why `value` breaks the field's rule, else why the graph's float32 cannot hold it, if so."""
    rule = f.metadata.get("rule")
    if rule is not None:
        test, message = _RULES[rule][:2]
        if not test(value):
            return f"{message}, got {value!r}"
    for item in value if isinstance(value, list) else [value]:
        if wrong := _precision_problem(item):
            return wrong
    return None


def bounds(key: str) -> Bounds:
    """The range the rule of a numeric param ('sample.top_p') allows."""
    cls, name = Params, key
    while "." in name:
        section, name = name.split(".", 1)
        cls = typing.get_type_hints(cls)[section]
    return _RULES[{f.name: f for f in fields(cls)}[name].metadata["rule"]][2]


def _type_ok(value, annotation) -> tuple[bool, object]:
    """Check (and gently coerce int -> float) a YAML value against a field annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return True, None
        annotation = next(a for a in args if a is not type(None))
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            return False, value
        checked = [_type_ok(v, item) for v in value]
        return all(ok for ok, _ in checked), [v for _, v in checked]
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        try:
            value = float(value)
        except OverflowError:  # an int beyond float's range
            return False, value
        return math.isfinite(value), value
    if annotation is int and isinstance(value, bool):
        return False, value
    return isinstance(value, annotation), value


def _type_name(annotation) -> str:
    names = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}
    if typing.get_origin(annotation) is list:
        return f"a list of {_type_name(typing.get_args(annotation)[0]).removeprefix('a ').removeprefix('an ')}s"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) if a is not type(None) else "null" for a in typing.get_args(annotation))
    return names.get(annotation, str(annotation))


def _build(cls, raw, prefix: str, problems: list[str], complete: bool):
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.') or 'the file'} must be a mapping of keys to values, got {raw!r}")
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
            if complete and dataclasses.is_dataclass(hints[name]):
                problems.append(f"missing section '{prefix}{name}' (every key must be in the file)")
            elif complete:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                problems.append(f"missing key '{prefix}{name}' (every key must be in the file; "
                                f"the default is {_yaml_text(default)})")
            continue
        value, annotation = raw[name], hints[name]
        if dataclasses.is_dataclass(annotation):
            values[name] = _build(annotation, value, f"{prefix}{name}.", problems, complete)
            continue
        ok, value = _type_ok(value, annotation)
        if not ok:
            problems.append(f"'{prefix}{name}' must be {_type_name(annotation)}, got {raw[name]!r}")
            continue
        wrong = _rule_problem(f, value)
        if wrong:
            problems.append(f"'{prefix}{name}' {wrong}")
            continue
        values[name] = value
    return cls(**values)


def _yaml_text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)
