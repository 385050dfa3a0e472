"""What `charrnn serve` serves: a trained model (a model directory, or a registered MLflow Model)
loaded with the graphs generation runs, its sampling defaults, and its card: corpus, vocabulary,
architecture, held-out loss and bits per character, and the MLflow run and registered version it
came from. The tracking store is only read, never written, and never needed: without one the
card says less. The card names no path of the serving machine: a model directory is named
relative to its project (or by its own name), a local corpus by its file name."""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from charrnn.core import files, paths
from charrnn.core.errors import CharrnnError
from charrnn.core.redact import redact
from charrnn.core.stage import remove_on_exit
from charrnn.sampling.settings import SamplingSettings, SettingsError

log = logging.getLogger("charrnn.serve")
PROMPT_CORPUS_MAX_BYTES = 1 << 30  # past this, finding the held-out prompt (a read of the corpus) would slow the start


@dataclass
class Served:
    """What the service runs: `engine` runs the generator's graphs (charrnn.sampling.generation:
    a Generator in this process, or the exported SavedModel of a registered model)."""

    name: str
    engine: Any  # charrnn.sampling.generation.Engine
    vocab: Any  # charrnn.data.vocab.Vocabulary
    defaults: SamplingSettings
    card: dict


def load(model: str, root: Path | None = None) -> Served:
    """A model directory, or a registered model (models:/name@alias, models:/name/version,
    resolved in the project at `root`, default: the one holding the working directory)."""
    if model.startswith("models:/"):
        served = _load_registered(model, root or paths.project_root())
    else:
        served = _load_directory(Path(model))
    served.engine.warm_up(served.vocab)
    return served


def _load_directory(path: Path) -> Served:
    from charrnn import tracking
    from charrnn.core import metricfiles
    from charrnn.nn import network
    from charrnn.sampling import generation

    keras_model, vocab = network.load(path)
    model_hash = metricfiles.model_hash(path)
    root = _project_of(path)
    found = tracking.model_record(root, model_hash) if root else None
    params = found["params"] if found else {}
    name = _shown(path, root)
    card = _card(name, vocab, _config(keras_model.config), model_hash, root, found)
    return Served(name, generation.Engine(generation.Generator(keras_model, vocab)), vocab,
                  _defaults({k.removeprefix("sample."): v for k, v in params.items()}), card)


def _load_registered(uri: str, root: Path) -> Served:
    from charrnn import tracking
    from charrnn.data.vocab import VocabError, Vocabulary
    from charrnn.sampling import generation

    dest = Path(tempfile.mkdtemp(prefix="charrnn-serve-"))
    remove_on_exit(dest)  # however the server ends
    fetched = tracking.fetch(root, uri, dest)
    where = f"{uri} (version {fetched.version.version})"
    try:
        vocab = Vocabulary.load(fetched.vocab)
        engine = generation.Engine.load(fetched.generator)
    except (VocabError, generation.ExportError) as e:
        raise tracking.RegistryError(f"{where}: {str(e).replace(str(dest), 'its artifacts')}; register the model "
                                     "again, or promote another version with `charrnn promote`") from None
    model_hash = fetched.version.tags.get(tracking.MODEL_HASH_TAG)
    found = tracking.model_record(root, model_hash, fetched.version.run_id)
    params = found["params"] if found else {}
    card = _card(uri, vocab, _architecture(params, vocab), model_hash, None, found)
    return Served(redact(where), engine, vocab, _defaults(fetched.defaults), card)


def _project_of(path: Path) -> Path | None:
    try:
        return paths.project_root(path)
    except CharrnnError:
        return None


def _shown(path: Path, root: Path | None) -> str:
    """How the card names a model directory: relative to its project, else by its own name."""
    resolved = path.resolve()
    if root is not None and resolved.is_relative_to(root):
        return str(resolved.relative_to(root))
    return resolved.name


def _card(model: str, vocab, architecture: dict | None, model_hash: str | None, root: Path | None,
          found: dict | None) -> dict:
    params = found["params"] if found else {}
    version_tags = found["version_tags"] if found else {}
    source = params.get("data.source")
    corpus = None
    if source is not None or version_tags.get("charrnn.corpus_hash"):
        corpus = {"source": _source_shown(source) if source is not None else None,
                  "sha256": version_tags.get("charrnn.corpus_hash")}
    return {"model": redact(model), "model_hash": model_hash, "corpus": corpus, "vocab_size": vocab.size,
            "architecture": architecture, "held_out": _held_out(root, model_hash, found),
            "mlflow": found["card"] if found else None, "default_prompt": _default_prompt(params, vocab, root)}


def _source_shown(source: str) -> str:
    """data.source for the card: a preset or URL as it is (masked), a local path by its file name."""
    if "://" in source or source.startswith("env:") or "/" not in source:
        return redact(source)
    return Path(source).name


def _default_prompt(params: dict, vocab, root: Path | None = None) -> str:
    """The playground's first prompt: the model's own first sample prompt, as the sample stage
    chose it: `sample.prompts` when its run set them, else the first prompt drawn from the held-out
    text of the project it was trained in (a model directory served from its project). Failing
    both, its vocabulary's most frequent character that is not blank."""
    try:
        prompts = files.loads_json(params.get("sample.prompts", "[]"))
        if isinstance(prompts, list) and prompts and isinstance(prompts[0], str) and prompts[0]:
            return prompts[0]
    except ValueError:
        pass
    drawn = _held_out_prompt(root, params, vocab) if root is not None else None
    if drawn:
        return drawn
    ranked = sorted(zip(vocab.counts, vocab.chars), reverse=True)
    return next((char for _, char in ranked if char.strip()), vocab.chars[0] if vocab.chars else "")


def _held_out_prompt(root: Path, params: dict, vocab) -> str | None:
    """The sample stage's first default prompt over the project's corpus, if every character of it
    is the model's (the corpus may have changed since the model was trained)."""
    from charrnn.core.params import DataParams
    from charrnn.data.split import Split

    corpus = root / paths.CORPUS
    try:
        if corpus.stat().st_size > PROMPT_CORPUS_MAX_BYTES:
            return None
        val_fraction = float(params.get("data.val_fraction", DataParams().val_fraction))
        prompt = Split.of(corpus, val_fraction).prompts()[0]
    except (CharrnnError, OSError, ValueError, IndexError) as e:
        log.debug("no held-out prompt: %s", redact(e))
        return None
    return None if vocab.unknown_chars(prompt) else prompt


def _held_out(root: Path | None, model_hash: str | None, found: dict | None) -> dict | None:
    """Held-out loss / bpc / perplexity: the project's metrics/perplexity.json when it is this
    model's, else the run's metrics, else the registered version's bpc tag."""
    from charrnn.core import metricfiles

    if root is not None and model_hash is not None:
        try:
            data = metricfiles.of_model(root / paths.HELD_OUT, root / paths.EVALUATION, model_hash)
        except CharrnnError as e:
            log.warning("%s", redact(e))
            data = None
        if data is not None:
            return {k: data.get(k) for k in ("loss", "bpc", "perplexity")} | {"from": str(paths.HELD_OUT)}
    metrics = found["metrics"] if found else {}
    if "held_out_bpc" in metrics:
        return {k: metrics.get(f"held_out_{k}") for k in ("loss", "bpc", "perplexity")} | {"from": "MLflow run"}
    bpc = (found or {}).get("version_tags", {}).get("charrnn.held_out_bpc")
    if bpc is not None:
        return {"loss": None, "bpc": float(bpc), "perplexity": None, "from": "registered model version"}
    return None


def _config(config) -> dict:
    """config.json for the card: without the vocabulary's fingerprint, and an adaptive softmax's
    clusters as their sizes (the ids themselves can be thousands)."""
    out = {k: v for k, v in asdict(config).items() if k != "vocab_fingerprint"}
    if out.get("clusters"):
        out["clusters"] = [len(ids) for ids in out["clusters"]]
    return out


def _architecture(params: dict, vocab) -> dict | None:
    """The architecture a run's train.* params describe (a registered model has no config.json)."""
    try:
        return {"vocab_size": vocab.size, "embedding_dim": int(params["train.embedding_dim"]),
                "units": int(params["train.units"]), "layers": int(params["train.layers"]),
                "cell": params["train.cell"], "dropout": float(params["train.dropout"]),
                **({"softmax": params["train.softmax"]} if "train.softmax" in params else {})}
    except (KeyError, ValueError):
        return None


def _defaults(known: dict) -> SamplingSettings:
    """The sampling defaults: the model's own sample settings where known and valid (MLflow
    params arrive as strings), else the sample params' defaults."""
    defaults = SamplingSettings()
    for name in SamplingSettings.names():
        kind = type(getattr(defaults, name))
        try:
            defaults = SamplingSettings.parse({name: kind(known[name])}, defaults)
        except (KeyError, ValueError, TypeError, SettingsError):
            pass
    return defaults


