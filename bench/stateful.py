"""Does stateful training (truncated back-propagation through time) help? Measured, same process.

Two trainings of the pipeline's own model and recipe (charrnn.training.build_model, the
params.yaml defaults unless overridden) for the same number of optimizer steps:
- windows: what `train` does. Windows of seq_length + 1 characters at a fresh seeded offset each
  epoch, shuffled, every window starting from a zero state.
- stateful: the training text cut into batch_size contiguous streams (at a fresh seeded offset
  each epoch); batch k holds the k-th window of every stream, and the RNN state reached at the
  end of batch k is where batch k + 1 starts (no gradient flows back across windows: truncated
  BPTT, the tutorial's `stateful=True`); the state resets to zero each epoch.
Both are judged the way evaluate_perplexity judges: held-out loss over the last 10% of the text,
state carried from window to window, with the best epoch's weights.

    .venv/bin/python bench/stateful.py                  # tiny shakespeare, 12 epochs each, ~25 min
    .venv/bin/python bench/stateful.py --epochs 2
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import time

import keras  # noqa: E402
import numpy as np
import tensorflow as tf  # noqa: E402
from common import REPO, corpus_text, load, machine, now

from charrnn.core.params import Params, TrainParams  # noqa: E402
from charrnn.data.split import split_point  # noqa: E402
from charrnn.data.vocab import Vocabulary, count_chars  # noqa: E402
from charrnn.nn import evaluation, training


def window_batches(ids, seq_length, batch_size, steps, rng):
    """Shuffled windows at a random offset, as `train` reads them: [steps] of (x, y) [B, T]."""
    offset = int(rng.integers(seq_length))
    n = (len(ids) - 1 - offset) // seq_length
    starts = offset + seq_length * rng.permutation(n)[: steps * batch_size]
    w = ids[starts[:, None] + np.arange(seq_length + 1)]
    for k in range(steps):
        b = w[k * batch_size:(k + 1) * batch_size]
        yield b[:, :-1], b[:, 1:]


def stream_batches(ids, seq_length, batch_size, steps, rng):
    """batch_size contiguous streams at a random offset: batch k is the k-th window of each."""
    offset = int(rng.integers(seq_length))
    width = (len(ids) - 1 - offset) // batch_size // seq_length * seq_length
    x = ids[offset:offset + batch_size * width].reshape(batch_size, width)
    y = ids[offset + 1:offset + 1 + batch_size * width].reshape(batch_size, width)
    for k in range(min(steps, width // seq_length)):
        cols = slice(k * seq_length, (k + 1) * seq_length)
        yield x[:, cols], y[:, cols]


def run(mode: str, params: TrainParams, vocab, train_ids, val_ids, seq_length: int, eval_batch: int) -> dict:
    training.configure(params.seed, params.threads)
    steps = (len(train_ids) - 1 - seq_length) // seq_length // params.batch_size
    model = training.build_model(params, vocab, total_steps=steps * params.epochs)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y, states):
        with tf.GradientTape() as tape:
            logits, new_states = model(x, states, return_state=True, training=True)
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, tf.nest.map_structure(tf.stop_gradient, new_states)

    batches = {"windows": window_batches, "stateful": stream_batches}[mode]
    zeros = model.initial_states(params.batch_size)
    best, best_epoch, seconds = math.inf, 0, 0.0
    for epoch in range(params.epochs):
        rng = np.random.default_rng([params.seed, epoch])
        states, losses, start = zeros, [], time.perf_counter()
        for x, y in batches(train_ids, seq_length, params.batch_size, steps, rng):
            loss, carried = step(tf.constant(x), tf.constant(y), states)
            states = carried if mode == "stateful" else zeros
            losses.append(float(loss))
        seconds += time.perf_counter() - start
        held = evaluation.held_out_loss(model, val_ids, eval_batch, seq_length)["loss"]
        print(f"{mode} epoch {epoch + 1}: train {np.mean(losses):.4f}, held-out {held:.4f} "
              f"({len(losses)} steps, {seconds:.0f} s so far)", flush=True)
        if held < best:
            best, best_epoch = held, epoch + 1
    return {"mode": mode, "loss": best, "bpc": best / math.log(2), "best_epoch": best_epoch,
            "epochs": params.epochs, "steps": steps, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--units", type=int, help="default: params.yaml's train.units")
    args = parser.parse_args()
    defaults = Params.load(REPO / "params.yaml")
    params = dataclasses.replace(defaults.train, epochs=args.epochs, units=args.units or defaults.train.units)
    seq_length = defaults.seq_length
    text, source = corpus_text()
    vocab = Vocabulary.from_counts(count_chars([text]))
    ids = vocab.encode(text).astype(np.int32)
    split = split_point(len(ids), defaults.data.val_fraction)
    train_ids, val_ids = ids[:split], ids[split:]
    print(f"# Stateful training (TBPTT) against windows\n\n{machine()}; {now()}; load before: {load()}\n"
          f"{source}; GRU-{params.units}, embedding {params.embedding_dim}, batch {params.batch_size}, "
          f"seq {seq_length}, {params.epochs} epochs, {params.schedule} schedule, "
          f"warm-up {params.warmup_steps}, clipnorm {params.clipnorm}\n", flush=True)
    results = [run(mode, params, vocab, train_ids, val_ids, seq_length, defaults.evaluate.batch_size)
               for mode in ("windows", "stateful")]
    ref = results[0]
    print("\n| training | held-out nats | bits/char | best epoch | training time | change vs windows |")
    print("|---|---|---|---|---|---|")
    for r in results:
        change = "" if r is ref else f"{r['loss'] - ref['loss']:+.4f} nats"
        print(f"| {r['mode']} | {r['loss']:.4f} | {r['bpc']:.4f} | {r['best_epoch']} of {r['epochs']} | "
              f"{r['seconds']:.0f} s ({r['steps']} steps/epoch) | {change} |")


if __name__ == "__main__":
    main()
