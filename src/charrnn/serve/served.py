"""What `charrnn serve` serves: a trained model (a model directory, or a registered MLflow Model)
loaded with the graphs generation runs, its sampling defaults, and its card: corpus, vocabulary,
architecture, held-out loss and bits per character, and the MLflow run and registered version it
came from. The tracking store is only read, never written, and never needed: without one the
card says less."""
from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.core import paths
from charrnn.core.errors import CharrnnError
from charrnn.core.params import MAX_NUM_CHARS
from charrnn.core.redact import redact

FALLBACK_DEFAULTS = {"num_chars": 200, "temperature": 0.8, "top_k": 0, "top_p": 1.0, "seed": 0}
SETTING_TYPES = {"num_chars": int, "temperature": float, "top_k": int, "top_p": float, "seed": int}

log = logging.getLogger("charrnn.serve")



@dataclass
class Served:
    """What the service runs: `engine` has the generator's graphs start and extend (a
    charrnn.generation.Generator, or the exported SavedModel of a registered model)."""

    name: str
    engine: Any
    vocab: Any  # charrnn.vocab.Vocabulary
    defaults: dict
    card: dict


def load(model: str, root: Path | None = None) -> Served:
    """A model directory, or a registered model (models:/name@alias, models:/name/version,
    resolved in the project at `root`, default: the one holding the working directory)."""
    if model.startswith("models:/"):
        from charrnn.tracking import runs as tracking

        served = _load_registered(model, root or tracking.find_root())
    else:
        served = _load_directory(Path(model))
    _warm_up(served)
    return served


def _load_directory(path: Path) -> Served:
    from charrnn.core import metricfiles
    from charrnn.nn import network
    from charrnn.sampling import generation

    keras_model, vocab = network.load(path)
    model_hash = metricfiles.model_hash(path)
    root = _project_of(path)
    found = _mlflow_record(root, model_hash) if root else None
    params = found["params"] if found else {}
    card = _card(str(path), vocab, _config(keras_model.config), model_hash, root, found)
    return Served(redact(path), generation.Generator(keras_model, vocab), vocab,
                  _defaults({k.removeprefix("sample."): v for k, v in params.items()}), card)


def _load_registered(uri: str, root: Path) -> Served:
    import tensorflow as tf
    import yaml

    from charrnn.data.vocab import Vocabulary
    from charrnn.tracking import registry

    dest = Path(tempfile.mkdtemp(prefix="charrnn-serve-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    local, version = registry.resolve(root, uri, dest)
    pyfunc = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))["flavors"]["python_function"]
    files = {name: local / entry["path"] for name, entry in pyfunc["artifacts"].items()}
    vocab = Vocabulary.load(files["vocab"])
    model_hash = version.tags.get("charrnn.model_hash")
    found = _mlflow_record(root, model_hash, version.run_id)
    params = found["params"] if found else {}
    card = _card(uri, vocab, _architecture(params, vocab), model_hash, None, found)
    return Served(redact(f"{uri} (version {version.version})"), tf.saved_model.load(str(files["generator"])), vocab,
                  _defaults(pyfunc.get("config") or {}), card)


def _warm_up(served: Served) -> None:
    """Trace / load the graphs now, not in the first request's time."""
    x, state = served.engine.start([served.vocab.chars[0]])
    one = lambda dtype, value: np.full(1, value, dtype)  # noqa: E731
    served.engine.extend(x, state, np.int32(1), one(np.float32, 1.0), one(np.int32, 0), one(np.float32, 1.0),
                         one(np.int64, 0), one(np.int64, 0), one(np.int64, 0))


def _project_of(path: Path) -> Path | None:
    from charrnn.tracking import runs as tracking

    try:
        return tracking.find_root(path)
    except CharrnnError:
        return None


def _mlflow_record(root: Path, model_hash: str | None, run_id: str | None = None) -> dict | None:
    """The model's MLflow run (by id, else the newest tagged with its hash) and its newest
    registered version, read-only. None without a store; a warning, never a failure, when the
    store cannot be read."""
    from charrnn.tracking import runs as tracking

    uri = tracking.tracking_uri(root)
    try:
        client = tracking.read_client(root)
        if client is None:
            return None
        if run_id is not None:
            run = client.get_run(run_id)
        else:
            experiments = [e.experiment_id for e in client.search_experiments()]
            runs = client.search_runs(experiments, filter_string=f"tags.`{tracking.MODEL_HASH_TAG}` = '{model_hash}'",
                                      order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
            run = runs[0] if runs else None
        versions = client.search_model_versions(f"tags.`{tracking.MODEL_HASH_TAG}` = '{model_hash}'") \
            if model_hash else []
        newest = max(versions, key=lambda v: int(v.version)) if versions else None
        version = client.get_model_version(newest.name, newest.version) if newest else None  # with its aliases
        experiment = client.get_experiment(run.info.experiment_id).name if run else None
    except Exception as e:  # noqa: BLE001 - the card goes without, the model is served anyway
        log.warning("the model card has no MLflow provenance: cannot read %s: %s: %s", redact(uri),
                    type(e).__name__, redact(e))
        return None
    if run is None and version is None:
        return None
    tags = dict(run.data.tags) if run else {}
    return {
        "params": dict(run.data.params) if run else {},
        "metrics": dict(run.data.metrics) if run else {},
        "version_tags": dict(version.tags) if version else {},
        "card": {"experiment": experiment, "run_id": run.info.run_id if run else None,
                 "run_name": run.info.run_name if run else None,
                 "dvc_experiment": tags.get("charrnn.dvc_exp_name") or (version.tags.get("charrnn.dvc_exp_name")
                                                                        if version else None),
                 "registered_model": version.name if version else None,
                 "version": version.version if version else None,
                 "aliases": list(getattr(version, "aliases", []) or []) if version else []},
    }


def _card(model: str, vocab, architecture: dict | None, model_hash: str | None, root: Path | None,
          found: dict | None) -> dict:
    params = found["params"] if found else {}
    version_tags = found["version_tags"] if found else {}
    source = params.get("data.source")
    corpus = None
    if source is not None or version_tags.get("charrnn.corpus_hash"):
        corpus = {"source": redact(source) if source is not None else None,
                  "sha256": version_tags.get("charrnn.corpus_hash")}
    return {"model": redact(model), "model_hash": model_hash, "corpus": corpus, "vocab_size": vocab.size,
            "architecture": architecture, "held_out": _held_out(root, model_hash, found),
            "mlflow": found["card"] if found else None}


def _held_out(root: Path | None, model_hash: str | None, found: dict | None) -> dict | None:
    """Held-out loss / bpc / perplexity: the project's metrics/perplexity.json when it is this
    model's, else the run's metrics, else the registered version's bpc tag."""
    from charrnn.core import metricfiles

    if root is not None and model_hash is not None:
        try:
            data = metricfiles.of_model(root / paths.HELD_OUT, model_hash)
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


def _defaults(known: dict) -> dict:
    """The sampling defaults: the model's own sample settings where known and valid, else the
    fallbacks. MLflow params arrive as strings."""
    from charrnn.sampling.generation import GenerationError, check_settings

    defaults = {}
    for name, fallback in FALLBACK_DEFAULTS.items():
        try:
            value = SETTING_TYPES[name](known[name])
            check_settings(**{**FALLBACK_DEFAULTS, name: value}, max_chars=MAX_NUM_CHARS)
        except (KeyError, ValueError, TypeError, GenerationError):
            value = fallback
        defaults[name] = value
    return defaults
