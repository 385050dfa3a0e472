"""The pipeline's outputs in the working tree, and which model they belong to.

The evaluation (metrics/perplexity.json) and the samples (metrics/samples.json, beside
data/samples/ and data/generator/) record the first digits of their model's content hash under
`model`, so a stage can tell whether an output it finds is the one of the model at hand
(charrnn.publish). Nothing here imports TensorFlow.
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


def of_model(path: Path, full_hash: str) -> dict | None:
    """The metrics in `path` if they are the model's (by its hash), else None."""
    data = read_metrics(path)
    return data if data is not None and data.get("model") == model_id(full_hash) else None


def numbers(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numeric entries of a metrics file (for MLflow), keys prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
