"""The pipeline's outputs in the working tree, and which model they belong to.

Metrics files hold numbers only, so `dvc metrics diff` and `dvc exp diff` print clean tables.
Beside each, a small JSON output holds its text: the evaluation (metrics/perplexity.json) has
data/evaluation.json, the samples (metrics/samples.json, data/samples/, data/generator/) have
data/sampling.json. Both record the first digits of their model's content hash under `model`, so
a stage can tell whether an output it finds is the one of the model at hand (tracking.publish).
Nothing here imports TensorFlow.
"""
from __future__ import annotations

from pathlib import Path

from charrnn.core import files, paths
from charrnn.core.errors import CharrnnError

MODEL_ID_DIGITS = 16


class OutputsError(CharrnnError):
    pass


def model_hash(model_dir: Path = paths.MODEL) -> str:
    return files.sha256_tree(model_dir)


def model_id(full_hash: str) -> str:
    """What outputs record of their model: enough of the hash to tell models apart."""
    return full_hash[:MODEL_ID_DIGITS]


def read_metrics(path: Path) -> dict | None:
    """A metrics file's content, None if it is missing; an OutputsError if it is not a JSON object."""
    try:
        data = files.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise OutputsError(f"{path} is not a readable metrics file ({e}); run `dvc repro` to remake it") from None
    if not isinstance(data, dict):
        raise OutputsError(f"{path} is not a metrics file (expected a JSON object); run `dvc repro` to remake it")
    return data


def write(metrics_path: Path, metrics: dict, about_path: Path, full_hash: str, **about) -> None:
    """A stage's numbers into its metrics file, and beside them (about_path) its model and text."""
    files.write_json(about_path, {"model": model_id(full_hash), **about})
    files.write_json(metrics_path, metrics)


def of_model(metrics_path: Path, about_path: Path, full_hash: str) -> dict | None:
    """The metrics in `metrics_path` if they are the model's (by its hash, kept in about_path),
    else None."""
    about = read_metrics(about_path)
    if about is None or about.get("model") != model_id(full_hash):
        return None
    return read_metrics(metrics_path)


def numbers(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numeric entries of a metrics file (for MLflow), keys prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
