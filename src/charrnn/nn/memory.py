"""Memory a configuration needs, checked before anything is allocated.

A size that can only end in an allocation failure (`train.units: 1000000000`) is refused at once
with the param to blame and the memory it would take, instead of minutes later as a
ResourceExhaustedError. The estimates are lower bounds in float32 (the weights, the optimizer's
state and gradients, and the activations of one batch), compared with the machine's physical
memory. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
import os

from charrnn.core.errors import CharrnnError
from charrnn.core.params import Params

FLOAT = 4


class ResourceError(CharrnnError):
    pass


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # not on this platform: no check
        return 1 << 62


def weights(vocab_size: int, embedding_dim: int, units: int, layers: int, cell: str) -> int:
    gates = 3 if cell == "gru" else 4
    rnn = sum(((embedding_dim if i == 0 else units) + units + 2) * gates * units for i in range(layers))
    return vocab_size * embedding_dim + rnn + (units + 1) * vocab_size


def training_bytes(sizes: dict) -> int:
    """Weights with gradients and Adam's two moments, and one batch's activations."""
    gates = 3 if sizes["train.cell"] == "gru" else 4
    w = weights(sizes["vocab_size"], sizes["train.embedding_dim"], sizes["train.units"], sizes["train.layers"],
                sizes["train.cell"])
    per_position = (sizes["train.embedding_dim"] + sizes["train.layers"] * sizes["train.units"] * (2 * gates + 2)
                    + 3 * sizes["vocab_size"])
    return FLOAT * (4 * w + sizes["train.batch_size"] * sizes["seq_length"] * per_position)


def check_training(params: Params, vocab_size: int) -> None:
    t = params.train
    sizes = {"vocab_size": vocab_size, "seq_length": params.seq_length, "train.cell": t.cell,
             "train.embedding_dim": t.embedding_dim, "train.units": t.units, "train.layers": t.layers,
             "train.batch_size": t.batch_size}
    _check(training_bytes, sizes, "to train")


def evaluation_bytes(sizes: dict) -> int:
    gates = 3 if sizes["cell"] == "gru" else 4
    w = weights(sizes["vocab_size"], sizes["embedding_dim"], sizes["units"], sizes["layers"], sizes["cell"])
    per_position = sizes["embedding_dim"] + sizes["layers"] * sizes["units"] * (gates + 1) + 2 * sizes["vocab_size"]
    return FLOAT * (w + sizes["evaluate.batch_size"] * sizes["seq_length"] * per_position)


def check_evaluation(config, rows: int, seq_length: int) -> None:
    """`rows` parallel streams of `seq_length` characters through a model of this ModelConfig."""
    sizes = {**dataclasses.asdict(config), "evaluate.batch_size": rows, "seq_length": seq_length}
    _check(evaluation_bytes, sizes, "to evaluate", blame=("evaluate.batch_size", "seq_length"))


def _check(estimate, sizes: dict, what: str, blame: tuple[str, ...] | None = None) -> None:
    need, have = estimate(sizes), physical_memory()
    if need <= have:
        return
    defaults = Params().flat()
    candidates = [k for k in (blame or sizes) if k in defaults and isinstance(sizes[k], int)]
    culprit = max(candidates, key=lambda k: need - estimate({**sizes, k: defaults[k]}), default=None)
    named = f"{culprit}={sizes[culprit]:,}" if culprit else "this configuration"
    raise ResourceError(f"{named} would need about {_size(need)} of memory {what}; this machine has "
                        f"{_size(have)}: lower {culprit or 'the sizes'}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
