"""DVC stage sample: model -> data/samples/*.txt and the exported generator (data/generator/)."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)
import sys

from charrnn import files, paths, tracking
from charrnn.params import Params
from charrnn.stage import run_stage


def main() -> None:
    params = Params.load(paths.PARAMS)
    s = params.sample
    from charrnn import generation
    from charrnn import model as model_lib

    vocab = model_lib.load_vocab(paths.MODEL)
    model = model_lib.load(paths.MODEL, vocab)
    for prompt, unknown in zip(s.prompts, generation.unknown_chars(vocab, s.prompts)):
        if unknown:
            print(f"warning: prompt {prompt!r} has characters outside the vocabulary, read as [UNK]: "
                  f"{''.join(unknown)!r}", file=sys.stderr)
    generator = generation.Generator(model, vocab)
    texts = generator.generate_text(s.prompts, s.num_chars, s.temperature, s.seed)
    with files.atomic_path(paths.SAMPLES) as tmp:
        tmp.mkdir()
        for i, text in enumerate(texts):
            (tmp / f"sample-{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    generation.export(generator, paths.GENERATOR)
    with tracking.model_run(params, tracking.find_root(), files.sha256_tree(paths.MODEL), stage="sample") as run:
        run.log_artifacts(paths.SAMPLES, "samples")
        run.log_metrics({"sample_chars": sum(len(t) for t in texts)})
    print(f"{len(texts)} sample(s) of {s.num_chars} characters at temperature {s.temperature} -> {paths.SAMPLES}/; "
          f"generator -> {paths.GENERATOR}/")
    print(texts[0][:300])


if __name__ == "__main__":
    run_stage(main)
