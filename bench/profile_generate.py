"""Generation's ceiling, tutorial configuration: charrnn's 64-prompt sampling loop against a
while loop that does nothing but the same per-character matmuls ([64, 1024] x [1024, 3072] and
the [1024, 66] logits), alternating, so the share of time the sampling loop spends beyond the
matmuls is visible:

    .venv/bin/python bench/profile_generate.py [--prompts 64] [--rounds 3]
"""
from __future__ import annotations

import argparse

import common  # first: quiets TensorFlow before anything imports it


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--chars", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    import tensorflow as tf

    from charrnn.data.vocab import Vocabulary, count_chars
    from charrnn.nn import network, training
    from charrnn.sampling import generation
    from charrnn.sampling.settings import SamplingSettings

    training.configure(42, 0)
    vocab = Vocabulary.from_counts(count_chars([common.generated_text(10_000)]))
    model = network.build(network.ModelConfig(vocab_size=vocab.size, embedding_dim=256, units=1024))
    gen = generation.Generator(model, vocab)
    prompts = [f"AB{i}:" for i in range(a.prompts)]
    recurrent, logits = model.rnns[0].cell.recurrent_kernel.value, model.dense.kernel.value

    @tf.function
    def matmuls_only(h):
        def body(t, h):
            return t + 1, tf.tanh(tf.matmul(h, recurrent)[:, :1024]) + 0 * tf.reduce_sum(tf.matmul(h, logits))
        return tf.while_loop(lambda t, h: t < a.chars, body, (0, h))[1]

    h = tf.random.normal((a.prompts, 1024))
    gen.generate_text(prompts, SamplingSettings(50, 1.0, seed=1))
    matmuls_only(h)
    print(f"load {common.load()}; {common.machine()}")
    for _ in range(a.rounds):
        with common.Timer() as g:
            gen.generate_text(prompts, SamplingSettings(a.chars, 1.0, seed=1))
        with common.Timer() as m:
            matmuls_only(h)
        n = a.prompts * a.chars
        print(f"{a.prompts} prompts: sampling loop {n / g.seconds:,.0f} chars/s; matmuls alone {n / m.seconds:,.0f} "
              f"chars/s; the loop at {m.seconds / g.seconds:.0%} of the matmul-only speed; load {common.load()}")


if __name__ == "__main__":
    main()
