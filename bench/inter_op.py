"""One prompt, GRU 1024: the tutorial's loop and charrnn's generator under one inter-op thread
(what `generation.configure_threads` gives every generating process) and under as many as cores
(TensorFlow's default, and training's), each setting in fresh processes, alternating:

    .venv/bin/python bench/inter_op.py [--pairs 3] [--rounds 10] [--chars 500]

In each process both sides run alternately, round by round, so they share the machine's load;
the figure is charrnn's chars/s over the reference's, per round (quartiles). Random weights:
generation's speed does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import common  # first: quiets TensorFlow before anything imports it
import numpy as np


def measure(rounds: int, chars: int) -> dict:
    """In this process (pools already sized): chars/s of both sides per round."""
    import reference
    import tensorflow as tf

    from charrnn.data.vocab import Vocabulary, count_chars
    from charrnn.nn import network
    from charrnn.sampling import generation
    from charrnn.sampling.settings import SamplingSettings

    text = common.corpus_text()[0][:200_000]
    vocab = Vocabulary.from_counts(count_chars([text]))
    model = network.build(network.ModelConfig(vocab_size=vocab.size, embedding_dim=256, units=1024))
    ids_from_chars, chars_from_ids = reference.lookups(text)
    ref_model = reference.MyModel(vocab.size, 256, 1024)
    ref_model(tf.zeros((1, 1), tf.int64))
    ref_model.set_weights(model.get_weights())
    one_step = reference.OneStep(ref_model, chars_from_ids, ids_from_chars, temperature=1.0)
    gen = generation.Generator(model, vocab)
    settings = SamplingSettings(chars, temperature=1.0, seed=7)
    reference.generate(one_step, ["ROMEO:"], 20)
    gen.generate_text(["ROMEO:"], settings)
    out = {"reference": [], "charrnn": []}
    for _ in range(rounds):
        with common.Timer() as t:
            reference.generate(one_step, ["ROMEO:"], chars)
        out["reference"].append(chars / t.seconds)
        with common.Timer() as t:
            gen.generate_text(["ROMEO:"], settings)
        out["charrnn"].append(chars / t.seconds)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=3, help="fresh processes per setting, alternating")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--chars", type=int, default=500)
    ap.add_argument("--child", choices=["one", "cores"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        from charrnn.nn import pools

        pools.fix(0, inter_op=1 if a.child == "one" else 0)
        print(json.dumps(measure(a.rounds, a.chars)))
        return
    print(f"## one prompt, inter-op threads: {common.now()}\n\n- machine: {common.machine()}\n"
          f"- command: `.venv/bin/python bench/inter_op.py {' '.join(sys.argv[1:])}`\n")
    print("| process | inter-op threads | reference chars/s (median) | charrnn chars/s (median) "
          "| charrnn / reference per round: 25% / median / 75% | load after |")
    print("|---|---|---|---|---|---|")
    for i in range(a.pairs):
        for setting in ("cores", "one"):
            run = subprocess.run([sys.executable, __file__, "--child", setting, "--rounds", str(a.rounds),
                                  "--chars", str(a.chars)], capture_output=True, text=True, check=True)
            got = json.loads(run.stdout.splitlines()[-1])
            ratios = np.array(got["charrnn"]) / np.array(got["reference"])
            threads = "1" if setting == "one" else str(os.cpu_count())
            print(f"| {i + 1} | {threads} | {np.median(got['reference']):,.0f} | {np.median(got['charrnn']):,.0f} | "
                  f"{np.percentile(ratios, 25):.2f} / {np.median(ratios):.2f} / {np.percentile(ratios, 75):.2f} | "
                  f"{common.load()} |", flush=True)


if __name__ == "__main__":
    main()
