"""Reading back where a model came from: its MLflow run and its registered version, by the model's
content hash, for the model card of `charrnn serve`. Read-only, and never needed: without a store,
or with one that cannot be read, the answer is None (with a warning) and the caller goes on."""
from __future__ import annotations

import logging
from pathlib import Path

from charrnn.core.redact import redact
from charrnn.tracking import registry, runs

log = logging.getLogger("charrnn.tracking")


def model_record(root: Path, model_hash: str | None, run_id: str | None = None) -> dict | None:
    """The model's run (by id, else the newest tagged with its hash) and its newest registered
    version: {"params", "metrics", "version_tags", "card": {experiment, run_id, run_name,
    dvc_experiment, registered_model, version, aliases}}, or None."""
    uri = runs.tracking_uri(root)
    try:
        client = runs.read_client(root)
        if client is None:
            return None
        if run_id is not None:
            run = client.get_run(run_id)
        elif model_hash:
            run = runs.find_model_run(client, [e.experiment_id for e in client.search_experiments()], model_hash)
        else:
            run = None
        newest = registry.version_of(client, model_hash) if model_hash else None
        version = client.get_model_version(newest.name, newest.version) if newest else None  # with its aliases
        experiment = client.get_experiment(run.info.experiment_id).name if run else None
    except Exception as e:  # noqa: BLE001 - the card goes without, the model is served anyway
        log.warning("the model card has no MLflow provenance: cannot read %s: %s: %s", redact(uri),
                    type(e).__name__, redact(e))
        return None
    if run is None and version is None:
        return None
    tags = dict(run.data.tags) if run else {}
    version_tags = dict(version.tags) if version else {}
    return {
        "params": dict(run.data.params) if run else {},
        "metrics": dict(run.data.metrics) if run else {},
        "version_tags": version_tags,
        "card": {"experiment": experiment, "run_id": run.info.run_id if run else None,
                 "run_name": run.info.run_name if run else None,
                 "dvc_experiment": tags.get("charrnn.dvc_exp_name") or version_tags.get("charrnn.dvc_exp_name"),
                 "registered_model": version.name if version else None,
                 "version": version.version if version else None,
                 "aliases": list(getattr(version, "aliases", []) or []) if version else []},
    }
