"""DVC stage sample: model -> data/samples/ (samples, the temperature grid), metrics/samples.json
(is the model copying its training text?) and the exported generator (data/generator/)."""
import _bootstrap  # noqa: F401  (project venv + this checkout's src; see stages/_bootstrap.py)
import sys

from charrnn import tracking
from charrnn.core import files, metricfiles, paths
from charrnn.core.params import Params
from charrnn.core.stage import run_stage
from charrnn.data.split import Split
from charrnn.sampling.settings import SamplingSettings, check_prompts


def main() -> None:
    params = Params.load(paths.PARAMS)
    s = params.sample
    from charrnn.nn import network
    from charrnn.sampling import generation, novelty

    generation.configure_threads(params.train.threads)
    model, vocab = network.load(paths.MODEL)
    split = Split.of(paths.CORPUS, params.data.val_fraction)
    prompts = s.prompts or split.prompts()
    for warning in check_prompts(vocab, prompts):
        print(f"warning: {warning}", file=sys.stderr)
    generator = generation.Generator(model, vocab)
    settings = SamplingSettings.from_params(s)
    texts = generator.generate_text(prompts, settings)
    grid = {t: generator.generate_text(prompts, settings.replace(temperature=t)) for t in s.temperature_grid}
    generated = [text[len(prompt):] for prompt, text in zip(prompts, texts)]
    copying = novelty.copy_metrics(split.train, generated, ngram=s.copy_ngram)
    model_hash = metricfiles.model_hash()
    with files.atomic_path(paths.SAMPLES) as tmp:
        tmp.mkdir()
        for i, text in enumerate(texts):
            (tmp / f"sample-{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
        (tmp / "temperatures.md").write_text(temperature_table(prompts, grid, s), encoding="utf-8")
    generation.export(generator, paths.GENERATOR)
    text = {k: copying.pop(k) for k in ("longest_copied_text", "unmeasured") if k in copying}
    metricfiles.write(paths.SAMPLE_METRICS, {**copying, "sample_chars": sum(len(g) for g in generated)},
                      paths.SAMPLING, model_hash, **text)
    with tracking.model_run(params, paths.project_root(), model_hash, stage="sample") as run:
        tracking.publish(run, params, model_hash)
    print(f"{len(texts)} sample(s) of {s.num_chars} characters at temperature {s.temperature} -> {paths.SAMPLES}/; "
          f"generator -> {paths.GENERATOR}/")
    copied = copying[f"copied_frac_{s.copy_ngram}"]
    for figure, why in text.get("unmeasured", {}).items():
        print(f"warning: {figure} is null: {why}", file=sys.stderr)
    print(f"copied from the training text: {'unmeasured' if copied is None else f'{copied:.1%}'} of "
          f"{s.copy_ngram}-grams, longest span {copying['longest_copied']} characters -> {paths.SAMPLE_METRICS}")
    print(texts[0][:300])


def temperature_table(prompts: list[str], grid: dict[float, list[str]], s) -> str:
    """The same prompts and seed at each temperature of sample.temperature_grid, side by side."""
    lines = [f"# Samples by temperature (seed {s.seed}, {s.num_chars} characters, top_k {s.top_k}, top_p {s.top_p})", ""]
    for i, prompt in enumerate(prompts):
        lines += [f"## Prompt {i}: {prompt!r}", ""]
        for temperature, texts in grid.items():
            lines += [f"### temperature {temperature}", "", "```text", texts[i], "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    run_stage(main)
