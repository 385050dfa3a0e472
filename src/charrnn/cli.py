"""`charrnn ...`: use a trained model outside DVC.

    charrnn generate --model data/model --prompt "ROMEO:" --num-chars 500 --temperature 0.8
    charrnn evaluate --model data/model --text some.txt
    charrnn info --model data/model
    charrnn outputs
    charrnn runs
    charrnn promote <experiment name | run id | version> --alias champion
    charrnn serve --model models:/charrnn@champion        (charrnn.serve: HTTP API and a playground page)

Every option is checked by the rules of the params of the same name (charrnn.params), and every
problem ends as one `error:` line and exit status 1 (charrnn.stage). TensorFlow is imported only
by the commands that need it, so `--help` is instant.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from charrnn.core import paths
from charrnn.core.errors import CharrnnError
from charrnn.core.params import MAX_NUM_CHARS, Params, problem


class UsageError(CharrnnError):
    pass


def check(option: str, key: str, value) -> None:
    """`value` for the command-line `option` must pass the rule of the param `key`."""
    wrong = problem(key, value)
    if wrong:
        raise UsageError(f"{option} {wrong}")


def cmd_generate(args) -> None:
    from charrnn.sampling.settings import SamplingSettings, check_prompts

    if args.max_chars < 1:
        raise UsageError(f"--max-chars must be at least 1, got {args.max_chars}")
    check("--threads", "train.threads", args.threads)
    settings = SamplingSettings.parse({name: getattr(args, name) for name in SamplingSettings.names()},
                                      max_chars=args.max_chars)
    from charrnn.sampling.generation import configure_threads  # TensorFlow loads here

    configure_threads(args.threads)
    engine, vocab = _engine(args.model)
    for warning in check_prompts(vocab, args.prompt):
        print(f"warning: {warning}", file=sys.stderr)
    pieces = engine.stream(args.prompt, settings, vocab, max_chars=args.max_chars)
    write_streams(args.prompt, pieces, sys.stdout)


def _engine(model: str):
    """(generation engine, vocabulary) of a model directory or, as `charrnn serve` resolves it, of a
    registered model (models:/name@alias, models:/name/version) in this project's store."""
    if model.startswith("models:/"):
        from charrnn.serve import served

        loaded = served.load(model)
        return loaded.engine, loaded.vocab
    from charrnn.nn import network
    from charrnn.sampling import generation

    keras_model, vocab = network.load(model)
    return generation.Engine(generation.Generator(keras_model, vocab)), vocab


def write_streams(prompts: list[str], pieces, out) -> None:
    """Each prompt and its text, blank-line separated, written as it is generated: the first row
    goes straight out, the others wait in temporary files (memory stays bounded at any length)."""
    with tempfile.TemporaryDirectory() as tmp:
        spools = [open(Path(tmp) / f"{i}.txt", "w+", encoding="utf-8") for i in range(1, len(prompts))]
        out.write(prompts[0])
        for spool, prompt in zip(spools, prompts[1:]):
            spool.write(prompt)
        for chunk in pieces:
            out.write(chunk[0])
            out.flush()
            for spool, text in zip(spools, chunk[1:]):
                spool.write(text)
        for spool in spools:
            out.write("\n\n")
            spool.seek(0)
            while block := spool.read(1 << 20):
                out.write(block)
            spool.close()
        out.write("\n")
        out.flush()


def cmd_evaluate(args) -> None:
    check("--seq-length", "seq_length", args.seq_length)
    check("--batch-size", "evaluate.batch_size", args.batch_size)
    check("--encoding", "data.encoding", args.encoding)
    check("--threads", "train.threads", args.threads)
    from charrnn.data import corpus
    from charrnn.nn import evaluation, network, pools

    pools.fix(args.threads)  # as the evaluate_perplexity stage: a product's sums depend on them

    text = corpus.normalize(corpus.decode(Path(args.text).read_bytes(), args.encoding))
    model, vocab = network.load(args.model)
    ids = vocab.encode(text)
    unk = unknown_fraction(ids, args)
    result = evaluation.held_out_loss(model, ids, args.batch_size, args.seq_length)
    print(json.dumps({**result, "unk_fraction": unk}, indent=2))


UNK_WARN, UNK_REFUSE = 0.05, 0.5  # fractions of a text outside the model's vocabulary


def unknown_fraction(ids, args) -> float:
    """How much of the text is [UNK] to the model: a loss over characters the model never saw
    measures nothing, so past UNK_REFUSE it is an error (a wrong --encoding, another language)."""
    from charrnn.data.vocab import UNK, UNK_ID

    fraction = float((ids == UNK_ID).mean()) if len(ids) else 0.0
    said = (f"{fraction:.1%} of {args.text}'s characters (read as {args.encoding}) are not in the vocabulary of "
            f"{args.model} and count as {UNK}")
    if fraction > UNK_REFUSE:
        raise UsageError(f"{said}: the loss would measure nothing; check --encoding, or evaluate a model trained "
                         "on text like this one")
    if fraction > UNK_WARN:
        print(f"warning: {said}; the loss says little about those", file=sys.stderr)
    return fraction


def cmd_info(args) -> None:
    from charrnn.nn import modeldir

    saved = modeldir.read(args.model)
    config = {k: v for k, v in saved.config.__dict__.items()}
    print(json.dumps({**config, "vocabulary_chars": len(saved.vocab.chars)}, indent=2, ensure_ascii=False))


def cmd_outputs(args) -> None:
    """Where `dvc repro` put things, with the headline numbers."""
    from charrnn.core import metricfiles

    lines = []
    for label, path in [("corpus", paths.CORPUS), ("vocabulary", paths.VOCAB), ("model", paths.MODEL),
                        ("generator (SavedModel)", paths.GENERATOR), ("samples", paths.SAMPLES),
                        ("metrics", paths.METRICS)]:
        lines.append(f"  {label:<24}{path}{'/' if path.is_dir() else ''}{'' if path.exists() else '  (missing)'}")
    print("outputs:\n" + "\n".join(lines))
    held_out = metricfiles.read_metrics(paths.HELD_OUT)
    if held_out is not None:
        print(f"held-out loss {_number(held_out, 'loss', paths.HELD_OUT):.4f} nats/char, perplexity "
              f"{_number(held_out, 'perplexity', paths.HELD_OUT):.3f}, {_number(held_out, 'bpc', paths.HELD_OUT):.4f} bits/char")
    copying = metricfiles.read_metrics(paths.SAMPLE_METRICS)
    if copying is not None and "copy_ngram" in copying:
        about = metricfiles.read_metrics(paths.SAMPLING) or {}
        n, unmeasured = copying["copy_ngram"], about.get("unmeasured") or {}
        copied = (f"{_number(copying, f'copied_frac_{n}', paths.SAMPLE_METRICS):.1%} of {n}-grams occur in the "
                  "training text" if f"copied_frac_{n}" not in unmeasured
                  else f"copying not measured ({unmeasured[f'copied_frac_{n}']})")
        longest = f": {about['longest_copied_text']!r}" if about.get("longest_copied_text") else ""
        print(f"samples: {copied}; longest copied span {copying.get('longest_copied')} characters{longest}")
    for sample in sorted(paths.SAMPLES.glob("sample-*.txt"))[:1]:
        print(f"\n{sample}:\n{sample.read_text(encoding='utf-8', errors='replace')[:400]}")


def _number(metrics: dict, key: str, path: Path) -> float:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{path}: '{key}' is {value!r}, not a number; run `dvc repro` to remake it")
    return value


def cmd_runs(args) -> None:
    from charrnn import tracking

    root = paths.project_root()
    runs = tracking.search_runs(root, args.experiment)
    frame = tracking.runs_table(runs, args.corpus)
    if frame.empty:
        print(f"no runs of a corpus {args.corpus!r}" if args.corpus else "no runs yet: run `dvc repro` or `dvc exp run`")
        return
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(frame.to_string(index=False))
    for link in tracking.ui_links(root, runs):  # on stderr: stdout stays a table
        print(f"in the MLflow UI (`make ui` for a local store): {link}", file=sys.stderr)


def cmd_promote(args) -> None:
    from charrnn import tracking

    root = paths.project_root()
    if args.name is not None:
        check("--name", "tracking.registered_model", args.name)
    name = args.name or Params.load(root / paths.PARAMS).tracking.registered_model
    version = tracking.promote(root, name, args.target, args.alias)
    bpc = version.tags.get(tracking.HELD_OUT_BPC_TAG, "?")
    print(f"models:/{name}@{args.alias} -> version {version.version} (run {version.run_id}, held-out {bpc} bits/char)")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage problem reported as one `error:` line and exit status 1."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="charrnn", description="Use a trained charrnn model outside DVC.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    defaults = Params().sample

    g = sub.add_parser("generate", help="generate text after one or more prompts")
    g.add_argument("--model", default=str(paths.MODEL),
                   help="model directory, or models:/<name>@<alias> or models:/<name>/<version> (default: %(default)s)")
    g.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for a batch")
    g.add_argument("--num-chars", type=int, default=defaults.num_chars, help="characters to generate per prompt")
    g.add_argument("--temperature", type=float, default=defaults.temperature, help="> 0; lower is more conservative")
    g.add_argument("--top-k", type=int, default=defaults.top_k, help="sample among the k most likely only (0: off)")
    g.add_argument("--top-p", type=float, default=defaults.top_p,
                   help="sample from the smallest set holding this much probability (1.0: off)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same text; default: %(default)s)")
    g.add_argument("--max-chars", type=int, default=MAX_NUM_CHARS,
                   help="refuse --num-chars above this (default: %(default)s); raise it for longer texts")
    add_threads(g)
    g.set_defaults(func=cmd_generate)

    e = sub.add_parser("evaluate", help="loss, perplexity and bits per character of a model on a text file")
    e.add_argument("--model", default=str(paths.MODEL))
    e.add_argument("--text", required=True, help="a text file")
    e.add_argument("--encoding", default="utf-8")
    e.add_argument("--seq-length", type=int, default=Params().seq_length)
    e.add_argument("--batch-size", type=int, default=Params().evaluate.batch_size, help="parallel streams over the text")
    add_threads(e)
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="a model's architecture and vocabulary size")
    i.add_argument("--model", default=str(paths.MODEL))
    i.set_defaults(func=cmd_info)

    o = sub.add_parser("outputs", help="where the pipeline's outputs are, with the held-out metrics")
    o.set_defaults(func=cmd_outputs)

    r = sub.add_parser("runs", help="the MLflow runs of this project, as a table: by corpus, best held-out bpc first")
    r.add_argument("--experiment", default=None, help="only this MLflow experiment (default: all); best held-out bpc first")
    r.add_argument("--corpus", default=None,
                   help="only the runs of this corpus: its name (shakespeare) or the first digits of its hash")
    r.set_defaults(func=cmd_runs)

    m = sub.add_parser("promote", help="point a registered model alias (e.g. champion) at a trained model")
    m.add_argument("target", help="a DVC experiment name, an MLflow run id, or a version number")
    m.add_argument("--alias", default="champion", help="the alias to set (default: %(default)s)")
    m.add_argument("--name", default=None, help="registered model (default: tracking.registered_model in params.yaml)")
    m.set_defaults(func=cmd_promote)

    from charrnn.serve import server

    server.add_parser(sub)
    return p


def add_threads(command: argparse.ArgumentParser) -> None:
    command.add_argument("--threads", type=int, default=Params().train.threads,
                         help="TensorFlow threads (0: all cores); the pipeline's train.threads gives its exact bits")


def main(argv: list[str] | None = None) -> None:
    from charrnn.core.stage import run_stage

    run_stage(lambda: _dispatch(argv), interrupted_message="interrupted ({how})")


def _dispatch(argv: list[str] | None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
