"""charrnn against the tutorial's approach (bench/reference.py), same machine, same run.

    make bench          # tutorial configuration (GRU 1024) and a small one (GRU 256), 200 MB data row
    make bench-quick    # the small configuration only, fewer steps and characters: a few minutes

Each row times the reference and charrnn alternately (training: step by step; generation and
evaluation: call by call), in this one process, on the same text, so both see the same machine
load; the figure is the median.
Prints a Markdown table (pasted into BENCHMARKS.md) with the load average before and after.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import common  # first: quiets TensorFlow before anything imports it
import numpy as np

TRAINING_POOLS = ("both sides under training's thread pools (this run also times training or evaluation); "
                  "generating processes run one inter-op thread: `--only generate` measures that")
CONFIGS = {"tutorial": dict(embedding_dim=256, units=1024), "small": dict(embedding_dim=256, units=256)}
SEQ, BATCH = 100, 64


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {common.load()}] {msg}", file=sys.stderr, flush=True)


def bench_training(name, text, workdir, steps):

    import reference

    from charrnn.core.params import TrainParams
    from charrnn.data import reader, records
    from charrnn.data.vocab import Vocabulary, count_chars
    from charrnn.nn import training

    cfg = CONFIGS[name]
    ids_from_chars, _ = reference.lookups(text)
    ref_ds = reference.dataset(text, ids_from_chars, SEQ, BATCH, seed=1).repeat()
    ref = reference.build(len(ids_from_chars.get_vocabulary()), cfg["embedding_dim"], cfg["units"])

    vocab = Vocabulary.from_counts(count_chars([text]))
    rec = Path(workdir) / "records"
    if not rec.exists():
        (Path(workdir) / "corpus.txt").write_text(text, encoding="utf-8", newline="")
        records.write_records(Path(workdir) / "corpus.txt", vocab, rec, SEQ, val_fraction=0.1)
    params = TrainParams(embedding_dim=cfg["embedding_dim"], units=cfg["units"], batch_size=BATCH,
                         learning_rate=0.001, schedule="constant", warmup_steps=0,
                         clipnorm=0.0)  # the tutorial's plain Adam 0.001, for both (no warm-up, no clipping)
    ours = training.build_model(params, vocab)
    assert vocab.size == len(ids_from_chars.get_vocabulary())
    ours.set_weights(ref.get_weights())  # same layers in the same order: the same starting point
    our_ds = reader.dataset(rec, "train", BATCH, shuffle_seed=1).repeat()

    # Step by step, alternating: each side draws its next batch from its own input pipeline and
    # takes one optimizer step (the same compiled train function model.fit runs); alternating
    # every step spreads any load from other processes evenly over both sides.
    sides = {"reference": (ref, iter(ref_ds)), "charrnn": (ours, iter(our_ds))}
    times = {k: [] for k in sides}
    losses = {k: [] for k in sides}
    for who, (model, it) in sides.items():  # warm-up: trace and compile
        x, y = next(it)
        model.train_on_batch(x, y)
    for step in range(steps):
        for who, (model, it) in (sides.items() if step % 2 == 0 else reversed(sides.items())):
            with common.Timer() as t:
                x, y = next(it)
                loss = model.train_on_batch(x, y)
            times[who].append(t.seconds)
            losses[who].append(float(loss))
        if (step + 1) % max(1, steps // 4) == 0:
            log(f"train {name} step {step + 1}/{steps}: median reference {np.median(times['reference']):.3f} s/step, "
                f"charrnn {np.median(times['charrnn']):.3f} s/step (fused GRU: {ours.use_fused(True)})")
    ref_cps = BATCH * SEQ / common.median(times["reference"])
    our_cps = BATCH * SEQ / common.median(times["charrnn"])
    last = max(1, steps // 4)
    loss_ref = float(np.mean(losses["reference"][-last:]))
    loss_ours = float(np.mean(losses["charrnn"][-last:]))
    return [{
        "row": f"train {name} (GRU {cfg['units']}, b{BATCH}, seq {SEQ})", "reference": ref_cps, "ours": our_cps,
        "unit": "chars/s", "ratio": our_cps / ref_cps, "target": ">= 1.5x" if name == "tutorial" else "",
        "met": (our_cps / ref_cps >= 1.5) if name == "tutorial" else None,
        "note": (f"median of {steps} steps each, alternating step by step; "
                 f"mean loss of the last {last} steps: reference {loss_ref:.3f}, charrnn {loss_ours:.3f} "
                 f"(same initial weights, each on its own shuffled batches)"),
    }], ours, vocab, our_cps


def check_sides(ours, ours_saved, ref, prompts, num_chars):
    """What is timed is real generation: the SavedModel's text is the library's for the same seed,
    one answer per prompt; the tutorial's loop (its own sampler) gives num_chars per prompt."""
    for n in (1, 64):
        library, exported = ours(prompts[n]), [t.decode() for t in ours_saved(prompts[n]).numpy()]
        if exported != library or len(library) != n or any(len(t) != len(p) + num_chars
                                                           for t, p in zip(library, prompts[n])):
            raise AssertionError(f"the sides disagree on {n} prompt(s): library {library[:1]!r}, "
                                 f"SavedModel {exported[:1]!r}")
    theirs = ref(prompts[5])
    if [len(t) for t in theirs] != [len(p) + num_chars for p in prompts[5]]:
        raise AssertionError(f"the tutorial's loop gave texts of lengths {[len(t) for t in theirs]}")


def bench_generation(name, text, model, vocab, num_chars, rounds, pools_note=""):
    import reference
    import tensorflow as tf

    from charrnn.sampling import generation
    from charrnn.sampling.settings import SamplingSettings

    ids_from_chars, chars_from_ids = reference.lookups(text)
    ref_model = reference.MyModel(vocab.size, CONFIGS[name]["embedding_dim"], CONFIGS[name]["units"])
    ref_model(tf.zeros((1, 1), tf.int64))
    ref_model.set_weights(model.get_weights())
    one_step = reference.OneStep(ref_model, chars_from_ids, ids_from_chars, temperature=1.0)
    gen = generation.Generator(model, vocab)
    with tempfile.TemporaryDirectory() as d:
        generation.export(gen, Path(d) / "g")
        saved = tf.saved_model.load(str(Path(d) / "g"))

        settings = SamplingSettings(num_chars, temperature=1.0, top_k=0, top_p=1.0, seed=7)  # top_k, top_p: off

        def ours(prompts):
            return gen.generate_text(prompts, settings)

        def ours_saved(prompts):
            return saved.generate(tf.constant(prompts), tf.constant(num_chars), tf.constant(1.0), tf.constant(0),
                                  tf.constant(1.0), tf.constant(7, tf.int64))

        def ref(prompts):
            return reference.generate(one_step, prompts, num_chars)

        prompts = {n: [f"ROMEO{i}:" for i in range(n)] for n in (1, 5, 64)}
        for f, n in ((ref, 1), (ref, 5), (ours, 1), (ours, 64), (ours_saved, 1), (ours_saved, 64)):
            f(prompts[n][:1] if f is ref else prompts[n])  # warm-up: trace and compile
        check_sides(ours, ours_saved, ref, prompts, num_chars)
        times = {k: [] for k in ("ref1", "ref5", "ours1", "saved1", "ours64", "saved64")}
        for r in range(rounds):
            for key, f, n in (("ref1", ref, 1), ("ours1", ours, 1), ("saved1", ours_saved, 1), ("ref5", ref, 5),
                              ("ours64", ours, 64), ("saved64", ours_saved, 64)):
                with common.Timer() as t:
                    f(prompts[n])
                times[key].append(n * num_chars / t.seconds)
            log(f"generate {name} round {r + 1}/{rounds}: " + ", ".join(f"{k} {np.median(v):,.0f}" for k, v in times.items()))
    m = {k: common.median(v) for k, v in times.items()}
    tut = name == "tutorial"
    return [
        {"row": f"generate {name}, 1 prompt, {num_chars} chars", "reference": m["ref1"], "ours": m["ours1"],
         "unit": "chars/s", "ratio": m["ours1"] / m["ref1"], "target": ">= 4x" if tut else "",
         "met": m["ours1"] / m["ref1"] >= 4 if tut else None, "note": pools_note},
        {"row": f"generate {name}, 1 prompt, exported SavedModel", "reference": m["ref1"], "ours": m["saved1"],
         "unit": "chars/s", "ratio": m["saved1"] / m["ref1"], "target": ">= 4x" if tut else "",
         "met": m["saved1"] / m["ref1"] >= 4 if tut else None},
        {"row": f"generate {name}, 64 prompts (reference: 5 prompts)", "reference": m["ref5"], "ours": m["ours64"],
         "unit": "chars/s total", "ratio": m["ours64"] / m["ref5"], "target": ">= 20,000/s" if tut else "",
         "met": m["ours64"] >= 20000 if tut else None},
        {"row": f"generate {name}, 64 prompts, exported SavedModel", "reference": m["ref5"], "ours": m["saved64"],
         "unit": "chars/s total", "ratio": m["saved64"] / m["ref5"], "target": ">= 20,000/s" if tut else "",
         "met": m["saved64"] >= 20000 if tut else None},
    ]


def bench_evaluation(name, text, model, vocab, train_cps, rounds):
    from charrnn.data.split import split_point
    from charrnn.nn import evaluation

    tail = text[split_point(len(text), 0.1):]
    ids = vocab.encode(tail)
    evaluation.held_out_loss(model, ids[: 64 * SEQ * 2], 64, SEQ)  # warm-up: trace
    speeds = []
    for _ in range(rounds):
        with common.Timer() as t:
            evaluation.held_out_loss(model, ids, 64, SEQ)
        speeds.append((len(ids) - 1) / t.seconds)
    cps = common.median(speeds)
    tut = name == "tutorial"
    return [{"row": f"evaluate {name}: held-out loss ({len(ids):,} chars) vs charrnn training", "reference": train_cps,
             "ours": cps, "unit": "chars/s", "ratio": cps / train_cps, "target": ">= 2.5x" if tut else "",
             "met": cps / train_cps >= 2.5 if tut else None}]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small configuration only, fewer steps (a few minutes)")
    ap.add_argument("--only", default="data,train,generate,evaluate", help="comma-separated sections")
    ap.add_argument("--configs", default=None, help="comma-separated: tutorial,small")
    ap.add_argument("--data-mb", type=int, default=None)
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    configs = (args.configs or ("small" if args.quick else "tutorial,small")).split(",")
    steps = 12 if args.quick else 24
    num_chars, gen_rounds = (300, 3) if args.quick else (1000, 5)
    data_mb = args.data_mb or (50 if args.quick else 200)

    text, source = common.corpus_text()
    load_before = common.load()
    started = common.now()
    rows = []
    if "data" in only:  # first, while this process is small: a child's peak RSS counts its parent's at fork
        import data_stages

        log(f"data stages on {data_mb} MB of generated text")
        rows += data_stages.bench(data_mb)
    from charrnn.nn import training
    from charrnn.sampling import generation

    training.configure(seed=42, threads=0)  # the pipeline's thread settings, for both sides
    generating_only = not only & {"train", "evaluate"}  # its model trains only to have weights
    if generating_only:
        generation.configure_threads()  # as `charrnn generate`, `charrnn serve` and the sample stage do
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as work:
        for name in configs:
            model = vocab = None
            if only & {"train", "generate", "evaluate"}:
                log(f"train {name}")
                train_rows, model, vocab, train_cps = bench_training(name, text, work, steps)
                rows += train_rows if "train" in only else []
            if "generate" in only:
                rows += bench_generation(name, text, model, vocab, num_chars, gen_rounds,
                                         "" if generating_only else TRAINING_POOLS)
            if "evaluate" in only:
                rows += bench_evaluation(name, text, model, vocab, train_cps, 3)
    print(f"\n## {'bench --quick' if args.quick else 'bench'}: {started}\n")
    print(f"- command: `{' '.join(['python bench/run.py', *(argv if argv is not None else sys.argv[1:])])}`")
    print(f"- machine: {common.machine()}")
    print(f"- load average (1/5/15 min) before: {load_before}; after: {common.load()}")
    print(f"- text: {source}")
    if "tutorial" not in configs:
        print("- the targets are judged on the tutorial configuration, which this run does not measure")
    print()
    print(common.table(rows))
    notes = [f"- {r['row']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
