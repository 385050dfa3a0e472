"""The model and recipe of `train`, on a GPU machine that has no TensorFlow: Keras 3 on JAX.

The lent GPU machines here carry JAX but no TensorFlow and cannot install it, so the DVC
pipeline itself cannot run there. This script trains the pipeline's own model class
(charrnn.model.CharRNN) with its own optimizer and schedule (charrnn.recipe) on a corpus split as
make_tfrecords splits it (contiguous, the tail held out), with windows cut at a seeded fresh offset
each epoch and the best epoch kept, then reports the held-out loss the way evaluate_perplexity
computes it (contiguous rows, RNN state carried from window to window).

    KERAS_BACKEND=jax PYTHONPATH=src python bench/gpu_recipe.py --corpus tinyshakespeare.txt \
        --cell lstm --layers 2 --units 1024 --embedding-dim 256 --dropout 0.3 --epochs 40
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from charrnn import model as model_lib  # noqa: E402
from charrnn import recipe  # noqa: E402
from charrnn.params import TrainParams  # noqa: E402
from charrnn.vocab import Vocabulary, count_chars  # noqa: E402


def windows(ids: np.ndarray, seq_length: int, offset: int) -> np.ndarray:
    n = (len(ids) - 1 - offset) // seq_length
    starts = offset + seq_length * np.arange(n)
    return ids[starts[:, None] + np.arange(seq_length + 1)]


def held_out(model, ids: np.ndarray, rows: int, seq_length: int, config) -> float:
    n = len(ids) - 1
    width = (n // rows) // seq_length * seq_length
    x = ids[: rows * width].reshape(rows, width)
    y = ids[1 : rows * width + 1].reshape(rows, width)
    per_layer = 1 if config.cell == "gru" else 2
    states = [[keras.ops.zeros((rows, config.units)) for _ in range(per_layer)] for _ in range(config.layers)]
    total = 0.0
    for start in range(0, width, seq_length):
        logits, states = model(x[:, start : start + seq_length], states, return_state=True)
        nll = keras.ops.sparse_categorical_crossentropy(y[:, start : start + seq_length], logits, from_logits=True)
        total += float(keras.ops.sum(nll))
    return total / (rows * width)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--seq-length", type=int, default=100)
    p.add_argument("--time-budget", type=float, default=0, help="stop after this many seconds of training")
    p.add_argument("--random-offset", action=argparse.BooleanOptionalAction, default=True,
                   help="cut each epoch's windows at a fresh seeded offset (train.random_offset)")
    for f in ("cell", "layers", "embedding_dim", "units", "dropout", "batch_size", "epochs", "learning_rate",
              "seed", "schedule", "warmup_steps", "clipnorm", "weight_decay", "patience"):
        default = getattr(TrainParams(), f)
        p.add_argument("--" + f.replace("_", "-"), type=type(default), default=default)
    args = p.parse_args()
    params = TrainParams(**{f: getattr(args, f) for f in vars(args) if f in TrainParams.__dataclass_fields__})

    text = open(args.corpus, encoding="utf-8").read()
    vocab = Vocabulary.from_counts(count_chars([text]))
    ids = vocab.encode(text).astype(np.int32)
    split = int(len(ids) * (1 - args.val_fraction))
    train_ids, val_ids = ids[:split], ids[split:]

    keras.utils.set_random_seed(params.seed)
    config = model_lib.ModelConfig.from_params(params, vocab)
    model = model_lib.build(config)
    steps = (len(train_ids) - 1 - args.seq_length) // args.seq_length // params.batch_size
    model.compile(optimizer=recipe.optimizer(params, total_steps=steps * params.epochs),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    val_w = windows(val_ids, args.seq_length, 0)
    best, best_epoch, best_weights, rows, started = math.inf, 0, None, [], time.perf_counter()
    for epoch in range(params.epochs):
        rng = np.random.default_rng([params.seed, epoch])
        w = windows(train_ids, args.seq_length, int(rng.integers(args.seq_length)) if args.random_offset else 0)
        w = w[rng.permutation(len(w))][: steps * params.batch_size]
        t = time.perf_counter()
        h = model.fit(w[:, :-1], w[:, 1:], batch_size=params.batch_size, epochs=1, shuffle=False, verbose=0,
                      validation_data=(val_w[:, :-1], val_w[:, 1:]), validation_batch_size=256)
        seconds = time.perf_counter() - t
        loss, val = h.history["loss"][0], h.history["val_loss"][0]
        rows.append({"epoch": epoch + 1, "loss": loss, "val_loss": val, "seconds": seconds,
                     "ms_per_step": 1000 * seconds / steps})
        print(json.dumps(rows[-1]), flush=True)
        if val < best:
            best, best_epoch, best_weights = val, epoch + 1, model.get_weights()
        elif params.patience and epoch + 1 - best_epoch >= params.patience:
            break
        if args.time_budget and time.perf_counter() - started > args.time_budget:
            break
    model.set_weights(best_weights)
    loss = held_out(model, val_ids, 64, args.seq_length, config)
    print(json.dumps({"params": vars(args), "best_epoch": best_epoch, "epochs_run": len(rows),
                      "train_seconds": time.perf_counter() - started, "held_out_loss": loss,
                      "held_out_bpc": loss / math.log(2), "held_out_chars": len(val_ids) - 1,
                      "backend": keras.backend.backend()}), flush=True)


if __name__ == "__main__":
    main()
