"""Memory a configuration needs, checked before anything is allocated.

A size that can only end in an allocation failure (`train.units: 1000000000`) is refused at once
with the param to blame and the memory it would take, instead of minutes later as a
ResourceExhaustedError. The estimates are lower bounds in float32 (the weights, the optimizer's
state and gradients, and the activations of one batch), compared with the machine's physical
memory. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import math
import os

from charrnn.core.errors import CharrnnError
from charrnn.core.params import Params, TrainParams
from charrnn.nn.modeldir import ModelConfig

FLOAT = 4


class ResourceError(CharrnnError):
    pass


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # not on this platform: no check
        return 1 << 62


def weights(config: ModelConfig) -> int:
    """Parameters of a model built from this config: the shapes it declares (charrnn.nn.modeldir)."""
    return sum(math.prod(shape) for shape in config.weight_shapes())


def output_width(config: ModelConfig) -> int:
    """Scores per position in training: the vocabulary, or with the adaptive softmax the head and
    the largest tail cluster (only the target's cluster is computed)."""
    if config.softmax == "full":
        return config.vocab_size
    return len(config.clusters[0]) + len(config.tail_dims) + max((len(c) for c in config.clusters[1:]), default=0)


def _training_config(sizes: dict, vocab) -> ModelConfig:
    train = TrainParams(cell=sizes["train.cell"], embedding_dim=sizes["train.embedding_dim"], units=sizes["train.units"],
                        layers=sizes["train.layers"], softmax=sizes["train.softmax"])
    return ModelConfig.from_params(train, vocab)


def training_bytes(sizes: dict, vocab) -> int:
    """Weights with gradients and Adam's two moments, and one batch's activations."""
    config = _training_config(sizes, vocab)
    gates = 3 if config.cell == "gru" else 4
    per_position = config.embedding_dim + config.layers * config.units * (2 * gates + 2) + 3 * output_width(config)
    return FLOAT * (4 * weights(config) + sizes["train.batch_size"] * sizes["seq_length"] * per_position)


def check_training(params: Params, vocab) -> None:
    """Training with these params on this Vocabulary fits in this machine's memory."""
    t = params.train
    sizes = {"seq_length": params.seq_length, "train.cell": t.cell, "train.embedding_dim": t.embedding_dim,
             "train.units": t.units, "train.layers": t.layers, "train.batch_size": t.batch_size,
             "train.softmax": t.softmax}
    _check(lambda s: training_bytes(s, vocab), sizes, "to train")


def evaluation_bytes(config: ModelConfig, rows: int, seq_length: int) -> int:
    gates = 3 if config.cell == "gru" else 4
    per_position = config.embedding_dim + config.layers * config.units * (gates + 1) + 2 * config.vocab_size
    return FLOAT * (weights(config) + rows * seq_length * per_position)


def check_evaluation(config: ModelConfig, rows: int, seq_length: int) -> None:
    """`rows` parallel streams of `seq_length` characters through a model of this ModelConfig."""
    sizes = {"evaluate.batch_size": rows, "seq_length": seq_length}
    _check(lambda s: evaluation_bytes(config, s["evaluate.batch_size"], s["seq_length"]), sizes, "to evaluate")


def _check(estimate, sizes: dict, what: str) -> None:
    """Refuse sizes whose estimate exceeds the machine, naming the one whose default would save most."""
    need, have = estimate(sizes), physical_memory()
    if need <= have:
        return
    defaults = Params().flat()
    candidates = [k for k in sizes if k in defaults and isinstance(sizes[k], int) and not isinstance(sizes[k], bool)]
    culprit = max(candidates, key=lambda k: need - estimate({**sizes, k: defaults[k]}), default=None)
    named = f"{culprit}={sizes[culprit]:,}" if culprit else "this configuration"
    raise ResourceError(f"{named} would need about {_size(need)} of memory {what}; this machine has "
                        f"{_size(have)}: lower {culprit or 'the sizes'}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
