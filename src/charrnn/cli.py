"""`charrnn ...`: use a trained model outside DVC.

    charrnn generate --model data/model --prompt "ROMEO:" --num-chars 500 --temperature 0.8
    charrnn evaluate --model data/model --text some.txt
    charrnn info --model data/model
    charrnn outputs
    charrnn runs

TensorFlow is imported only by the commands that need it, so `--help` is instant.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from charrnn import paths


def cmd_generate(args) -> None:
    from charrnn import generation
    from charrnn import model as model_lib

    vocab = model_lib.load_vocab(args.model)
    model = model_lib.load(args.model, vocab)
    for prompt, unknown in zip(args.prompt, generation.unknown_chars(vocab, args.prompt)):
        if unknown:
            print(f"warning: {prompt!r}: characters outside the vocabulary, read as [UNK]: {''.join(unknown)!r}",
                  file=sys.stderr)
    texts = generation.generate(model, vocab, args.prompt, args.num_chars, args.temperature, args.seed)
    print("\n\n".join(texts))


def cmd_evaluate(args) -> None:
    import numpy as np

    from charrnn import corpus, evaluation
    from charrnn import model as model_lib

    vocab = model_lib.load_vocab(args.model)
    model = model_lib.load(args.model, vocab)
    text = corpus.normalize(corpus.decode(Path(args.text).read_bytes(), args.encoding))
    result = evaluation.held_out_loss(model, vocab.encode(text).astype(np.int32), args.batch_size, args.seq_length)
    print(json.dumps(result, indent=2))


def cmd_info(args) -> None:
    from charrnn import model as model_lib

    config = json.loads((Path(args.model) / model_lib.CONFIG).read_text(encoding="utf-8"))
    vocab = model_lib.load_vocab(args.model)
    print(json.dumps({**config, "vocabulary_chars": len(vocab.chars)}, indent=2, ensure_ascii=False))


def cmd_outputs(args) -> None:
    """Where `dvc repro` put things, with the headline numbers."""
    lines = []
    for label, path in [("corpus", paths.CORPUS), ("vocabulary", paths.VOCAB), ("model", paths.MODEL),
                        ("generator (SavedModel)", paths.GENERATOR), ("samples", paths.SAMPLES),
                        ("metrics", paths.METRICS)]:
        lines.append(f"  {label:<24}{path}{'/' if path.is_dir() else ''}{'' if path.exists() else '  (missing)'}")
    print("outputs:\n" + "\n".join(lines))
    held_out = paths.METRICS / "perplexity.json"
    if held_out.exists():
        m = json.loads(held_out.read_text())
        print(f"held-out loss {m['loss']:.4f} nats/char, perplexity {m['perplexity']:.3f}, {m['bpc']:.4f} bits/char")
    for sample in sorted(paths.SAMPLES.glob("*.txt"))[:1]:
        print(f"\n{sample}:\n{sample.read_text(encoding='utf-8')[:400]}")


def cmd_runs(args) -> None:
    from charrnn import tracking

    frame = tracking.runs_frame(tracking.find_root(), args.experiment)
    if frame.empty:
        print("no runs yet: run `dvc repro` or `dvc exp run`")
        return
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(frame.to_string(index=False))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="charrnn", description="Use a trained charrnn model outside DVC.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text after one or more prompts")
    g.add_argument("--model", default=str(paths.MODEL), help="model directory (default: %(default)s)")
    g.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for a batch")
    g.add_argument("--num-chars", type=int, default=500, help="characters to generate per prompt")
    g.add_argument("--temperature", type=float, default=0.8, help="> 0; lower is more conservative")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same text)")
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("evaluate", help="loss, perplexity and bits per character of a model on a text file")
    e.add_argument("--model", default=str(paths.MODEL))
    e.add_argument("--text", required=True, help="a text file")
    e.add_argument("--encoding", default="utf-8")
    e.add_argument("--seq-length", type=int, default=100)
    e.add_argument("--batch-size", type=int, default=64, help="parallel streams over the text")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="a model's architecture and vocabulary size")
    i.add_argument("--model", default=str(paths.MODEL))
    i.set_defaults(func=cmd_info)

    o = sub.add_parser("outputs", help="where the pipeline's outputs are, with the held-out metrics")
    o.set_defaults(func=cmd_outputs)

    r = sub.add_parser("runs", help="the MLflow runs of this project, as a table")
    r.add_argument("--experiment", default=None, help="only this MLflow experiment (default: all); best held-out bpc first")
    r.set_defaults(func=cmd_runs)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from charrnn.stage import run_stage

    run_stage(lambda: args.func(args))


if __name__ == "__main__":
    main()
