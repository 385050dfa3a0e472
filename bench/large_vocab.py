"""Large vocabularies at full speed: the adaptive softmax (train.softmax: adaptive) against the full
one, on a generated CJK-like corpus of 4,400+ characters, and against a 77-character corpus.

    .venv/bin/python bench/large_vocab.py                 # ~25 min on 2 cores
    .venv/bin/python bench/large_vocab.py --steps 10 --epochs 1 --chars 300000   # a smoke run

The pipeline's own model and training: records written by charrnn.records.write_records,
charrnn.training.build_model / training.train, GRU-512, embedding 128, batch 64, seq 100.

- Speed: the three configurations (77 characters full, 4k full, 4k adaptive) take one optimizer
  step each in turn, alternating the order, in this one process, so all see the same machine
  load; the figure is the median step time (as bench/run.py times training).
- Quality: 4k full and 4k adaptive each trained by training.train for the same epochs (same
  seed, params, batches), then charrnn.evaluation.evaluate_corpus on the held-out tail (10%):
  an exact, normalised distribution for both.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import common  # first: quiets TensorFlow before anything imports it
import numpy as np

SEQ, BATCH, VAL = 100, 64, 0.1
CJK_SYMBOLS = 4_430  # with the punctuation and newline: 4,4xx distinct characters, like a Chinese novel
PUNCTUATION = ["", "，", "。", "、", "！", "？", "：「", "」"]
EXTRA = "012456789[]#"  # with common.ALPHABET's 65 characters: 77 (the `shakespeare` preset's count)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {common.load()}] {msg}", file=sys.stderr, flush=True)


def cjk_text(n_chars: int, seed: int = 0) -> str:
    """Text over CJK_SYMBOLS ideographs with Zipfian character frequencies (the top 100 cover about
    42% of it, the top 1,000 86%, as in Chinese prose): words of 1-4 characters from a lexicon with
    Zipfian word frequencies, each word often followed by one of a few favourite successors, with
    Chinese punctuation and line breaks."""
    rng = np.random.default_rng(seed)
    chars = np.array([chr(0x4E00 + i) for i in rng.permutation(CJK_SYMBOLS)])
    p_char = 1.0 / (np.arange(CJK_SYMBOLS) + 20.0)
    p_char /= p_char.sum()
    lengths = rng.choice([2, 3, 4], size=20_000, p=[0.7, 0.22, 0.08])
    multi = ["".join(w) for w in np.split(chars[rng.choice(CJK_SYMBOLS, lengths.sum(), p=p_char)],
                                          np.cumsum(lengths)[:-1])]
    singles = list(chars[rng.choice(CJK_SYMBOLS, size=3_000, p=p_char, replace=False)])
    rare = [c for c in chars if c not in set(singles)]  # every symbol is a word somewhere
    lexicon = np.array(singles[:1_500] + multi + singles[1_500:] + rare, dtype=object)
    rng.shuffle(lexicon[:5_000])
    p_word = 1.0 / (np.arange(len(lexicon)) + 10.0)
    p_word /= p_word.sum()
    successors = rng.choice(len(lexicon), size=(len(lexicon), 4), p=p_word)
    n_words = int(n_chars / 1.6)
    fresh = rng.choice(len(lexicon), size=n_words, p=p_word)
    follows = rng.random(n_words) < 0.5
    pick = rng.integers(0, 4, n_words)
    punct = rng.choice(PUNCTUATION, size=n_words, p=[0.84, 0.07, 0.05, 0.015, 0.005, 0.005, 0.0075, 0.0075])
    newline = rng.random(n_words) < 0.2
    out, word = [], fresh[0]
    for i in range(n_words):
        word = successors[word, pick[i]] if follows[i] else fresh[i]
        out += [lexicon[word], punct[i], "\n" if punct[i] == "。" and newline[i] else ""]
    text = "".join(out)
    while len(text) < n_chars:
        text += text
    return text[:n_chars]


def latin_text(n_chars: int, seed: int = 0) -> str:
    """bench/common.py's English-like text over tiny Shakespeare's 65 characters, with EXTRA's 12
    sprinkled in: 77 characters."""
    text = np.array(list(common.generated_text(n_chars, seed)))
    rng = np.random.default_rng(seed)
    spots = rng.choice(n_chars, size=len(EXTRA) * 50, replace=False)
    text[spots] = np.repeat(list(EXTRA), 50)
    return "".join(text)


def prepare(workdir: Path, name: str, text: str):
    from charrnn.data import records
    from charrnn.data.vocab import Vocabulary, count_chars

    corpus = workdir / f"{name}.txt"
    corpus.write_text(text, encoding="utf-8", newline="")
    vocab = Vocabulary.from_counts(count_chars([text]))
    records.write_records(corpus, vocab, workdir / f"{name}-records", SEQ, val_fraction=VAL)
    return corpus, workdir / f"{name}-records", vocab


def params(softmax: str, epochs: int = 1):
    from charrnn.core.params import TrainParams

    return TrainParams(embedding_dim=128, units=512, batch_size=BATCH, epochs=epochs, softmax=softmax)


def bench_speed(configs: dict, steps: int) -> dict:
    """{name: median seconds per step}: one train_on_batch each in turn, order alternating."""
    from charrnn.data import reader
    from charrnn.nn import training

    sides = {}
    for name, (records_dir, vocab, softmax) in configs.items():
        model = training.build_model(params(softmax), vocab, total_steps=steps + 1)
        batches = iter(reader.dataset(records_dir, "train", BATCH, shuffle_seed=1).repeat())
        model.train_on_batch(*next(batches))  # warm-up: trace and compile
        sides[name] = (model, batches)
    times = {name: [] for name in sides}
    for step in range(steps):
        for name, (model, batches) in (sides.items() if step % 2 == 0 else reversed(sides.items())):
            x, y = next(batches)
            with common.Timer() as t:
                model.train_on_batch(x, y)
            times[name].append(t.seconds)
        if (step + 1) % max(1, steps // 4) == 0:
            log(f"speed step {step + 1}/{steps}: " + ", ".join(f"{k} {np.median(v):.3f} s" for k, v in times.items()))
    return {name: common.median(t) for name, t in times.items()}


def bench_quality(corpus: Path, records_dir: Path, vocab, softmax: str, epochs: int) -> dict:
    from charrnn.nn import evaluation, training

    p = params(softmax, epochs)
    training.configure(p.seed)
    with common.Timer() as t:
        result = training.train(p, str(records_dir), vocab)
    held = evaluation.evaluate_corpus(result.model, vocab, corpus, VAL, BATCH, SEQ)
    log(f"quality {softmax}: held-out {held['loss']:.4f} nats/char after {epochs} epoch(s), {t.seconds:.0f} s")
    return {"loss": held["loss"], "chars": held["chars"], "seconds": t.seconds, "val_loss": result.summary["val_loss"],
            "steps": epochs * -(-result.summary["train_chars_per_epoch"] // (BATCH * SEQ)), "config": result.model.config}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, default=2_000_000, help="characters of each corpus")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs of the quality comparison (train.epochs)")
    args = ap.parse_args(argv)
    load_before, started = common.load(), common.now()
    from charrnn.nn import training

    training.configure(seed=42, threads=0)  # the pipeline's thread settings
    with tempfile.TemporaryDirectory(prefix="charrnn-large-vocab-") as work:
        work = Path(work)
        latin = prepare(work, "latin", latin_text(args.chars))
        cjk = prepare(work, "cjk", cjk_text(args.chars))
        log(f"corpora: {latin[2].size - 1} and {cjk[2].size - 1} distinct characters, {args.chars:,} each")
        speed = bench_speed({"77 full": (latin[1], latin[2], "full"), "4k full": (cjk[1], cjk[2], "full"),
                             "4k adaptive": (cjk[1], cjk[2], "adaptive")}, args.steps)
        quality = {softmax: bench_quality(*cjk, softmax, args.epochs) for softmax in ("full", "adaptive")}
    cps = {name: BATCH * SEQ / seconds for name, seconds in speed.items()}
    config = quality["adaptive"]["config"]
    print(f"\n## bench/large_vocab.py: {started}\n")
    print(f"- command: `{' '.join(['.venv/bin/python bench/large_vocab.py', *(argv if argv is not None else sys.argv[1:])])}`")
    print(f"- machine: {common.machine()}; os.cpu_count() = {os.cpu_count()}")
    print(f"- load average (1/5/15 min) before: {load_before}; after: {common.load()}")
    print(f"- corpora: {args.chars:,} characters each; 77 characters (bench/common.py's generated text + "
          f"{EXTRA!r}) and {cjk[2].size - 1:,} (cjk_text: Zipfian CJK-like)")
    print(f"- model: GRU-512, embedding 128, batch {BATCH}, seq {SEQ}; fused CPU GRU; adaptive clusters of sizes "
          f"{[len(c) for c in config.clusters]} (head first), tail projections {list(config.tail_dims)}")
    print(f"- speed: median of {args.steps} steps per configuration, alternating step by step in one process")
    print(f"- quality: {args.epochs} epoch(s) = {quality['full']['steps']} steps each (training.train, the default "
          f"recipe), held-out loss over the last {quality['full']['chars']:,} characters (evaluation.evaluate_corpus)\n")
    gap = quality["adaptive"]["loss"] - quality["full"]["loss"]
    ratio = cps["77 full"] / cps["4k adaptive"]
    rows = [
        ("train 77 chars, full softmax", f"{cps['77 full']:,.0f} chars/s", "1.00x", "", ""),
        ("train 4k chars, full softmax", f"{cps['4k full']:,.0f} chars/s", f"{cps['77 full'] / cps['4k full']:.2f}x", "", ""),
        ("train 4k chars, adaptive softmax", f"{cps['4k adaptive']:,.0f} chars/s", f"{ratio:.2f}x", "within 1.5x",
         "yes" if ratio <= 1.5 else "**no**"),
        ("held-out loss 4k, full softmax", f"{quality['full']['loss']:.4f} nats/char", "", "", ""),
        ("held-out loss 4k, adaptive softmax", f"{quality['adaptive']['loss']:.4f} nats/char", f"{gap:+.4f} nats",
         "<= +0.02 nats", "yes" if gap <= 0.02 else "**no**"),
    ]
    print("| benchmark | measured | vs 77-char full (time per char) / vs 4k full | target | met |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\ntraining wall time of the quality runs: full {quality['full']['seconds']:.0f} s, adaptive "
          f"{quality['adaptive']['seconds']:.0f} s; last val_loss full {quality['full']['val_loss']:.4f}, adaptive "
          f"{quality['adaptive']['val_loss']:.4f}")


if __name__ == "__main__":
    main()
