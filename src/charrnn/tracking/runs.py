"""MLflow runs: where they are stored, their lifecycle, and reading them back. With registry.py
(the MLflow Model and the Model Registry), the only modules of the package that import mlflow.

One pipeline execution is one MLflow run: `train_run` opens it, and the later stages
(`model_run`) find it again by the tag holding the model's content hash and resume it. The run id
is never written to a file, so DVC outputs stay reproducible.

Writing is best effort: when tracking is off (params or CHARRNN_TRACKING=0) every call is a cheap
no-op, and when the store fails, one warning says so and the caller's work goes on untracked.
Reading (`search_runs`, for `charrnn runs`) is the opposite: it never writes, and a store it
cannot read is an error. mlflow is imported lazily (it costs about 1.5 s).

Only MlflowClient is used, never the fluent API: `mlflow.set_tracking_uri` writes
os.environ["MLFLOW_TRACKING_URI"] and start_run/end_run keep a process-wide active run, and both
would leak between runs of one process.

An unreachable tracking *server* is not a quick failure: MLflow retries HTTP requests for about
four minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT shorten that).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from charrnn.core import paths
from charrnn.core.errors import CharrnnError
from charrnn.core.params import Params, TrackingParams
from charrnn.core.redact import redact
from charrnn.tracking import provenance, relocate

MODEL_HASH_TAG = "charrnn.model_hash"
OFF_VALUES = {"0", "false", "off", "no"}
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values

log = logging.getLogger("charrnn.tracking")


class TrackingError(CharrnnError):
    """A tracking store that cannot be read (the read side only: writing merely warns)."""


def is_enabled(tracking: TrackingParams) -> bool:
    return tracking.enabled and os.environ.get("CHARRNN_TRACKING", "1").strip().lower() not in OFF_VALUES


def store_root(root: Path) -> Path:
    """Where mlruns/ lives. Queued and --temp experiments run in a copy of the repository under
    .dvc/tmp/exps that DVC deletes afterwards; DVC sets DVC_ROOT to the real repository."""
    return Path(os.environ.get("DVC_ROOT") or root).resolve()


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root(root) / paths.MLRUNS / 'mlflow.db'}"


def params_run_name(params: Params) -> str:
    """A short name, the same for the same params (tracking.* left out: it is not the model)."""
    flat = {k: v for k, v in params.flat().items() if not k.startswith("tracking.")}
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
    return f"params-{digest[:8]}"


def _param_text(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, tuple)) else str(value)
    return redact(text)[:MAX_PARAM_LENGTH]


def _warn_disabled(reason: str) -> None:
    log.warning("MLflow tracking is disabled for this run: %s", redact(reason))


class Run:
    """One MLflow run, or the null run (run_id None) whose methods do nothing.

    Every method swallows MLflow failures: the first one is reported as a warning and the run
    becomes a no-op from then on.
    """

    def __init__(self, run_id: str | None = None, client=None):
        self._run_id = run_id
        self._client = client
        self._broken = False

    @property
    def run_id(self) -> str | None:
        return self._run_id

    @property
    def active(self) -> bool:
        return self._client is not None and not self._broken

    def log_params(self, params: dict) -> None:
        def action(client):
            from mlflow.entities import Param

            items = [Param(str(k), _param_text(v)) for k, v in params.items()]
            for i in range(0, len(items), 100):  # log_batch takes at most 100 params
                client.log_batch(self._run_id, params=items[i : i + 100])

        self.call("log_params", action)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        def action(client):
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(str(k), float(v), now, step or 0) for k, v in metrics.items()]
            client.log_batch(self._run_id, metrics=items)

        self.call("log_metrics", action)

    def set_tags(self, tags: dict) -> None:
        def action(client):
            from mlflow.entities import RunTag

            client.log_batch(self._run_id, tags=[RunTag(str(k), redact(v)) for k, v in tags.items()])

        self.call("set_tags", action)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.call("log_artifact", lambda c: c.log_artifact(self._run_id, str(path), artifact_path))

    def log_artifacts(self, dir: str | Path, artifact_path: str | None = None) -> None:
        self.call("log_artifacts", lambda c: c.log_artifacts(self._run_id, str(dir), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.call("log_text", lambda c: c.log_text(self._run_id, text, artifact_file))

    def log_figure(self, make_figure: Callable, artifact_file: str) -> None:
        """A matplotlib figure, made only when the run is live, as an image artifact."""
        self.call("log_figure", lambda c: c.log_figure(self._run_id, make_figure(), artifact_file))

    def call(self, what: str, action: Callable):
        """action(client) unless the run is off or broken; a failure warns once and breaks the run."""
        if not self.active:
            return None
        try:
            return action(self._client)
        except Exception as e:
            self._broken = True
            _warn_disabled(f"{what} failed: {type(e).__name__}: {e}")
            return None

    def _end(self, status: str, end_time: int | None = None) -> None:
        """Mark the run ended, even a broken one (never leave it RUNNING if the store allows)."""
        if self._client is None:
            return
        try:
            self._client.set_terminated(self._run_id, status, end_time)
        except Exception as e:
            if not self._broken:
                _warn_disabled(f"ending the run failed: {type(e).__name__}: {e}")


NULL_RUN = Run()


def _quiet_mlflow() -> None:
    # A new sqlite store logs "Creating initial MLflow database tables..." (and alembic chatter),
    # logging a model logs how it made its output example and draws download progress bars, and
    # MLflow's sqlalchemy models trigger a deprecation warning about `noload`.
    for name in ("mlflow.store.db.utils", "alembic", "mlflow.models", "mlflow.pyfunc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)


def client(uri: str):
    """An MlflowClient whose runs and registry are both at `uri`."""
    import mlflow

    _quiet_mlflow()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _relocated(root: Path) -> None:
    """The project's own store (not MLFLOW_TRACKING_URI's) points at this root's artifacts, even
    after the project was moved or copied (charrnn.tracking.relocate)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return
    try:
        moved = relocate.relocate(store_root(root) / paths.MLRUNS / "mlflow.db", store_root(root))
    except sqlite3.Error as e:  # a read-only or locked store: MLflow itself says what it can do
        log.warning("cannot point the MLflow store's artifact locations at this project: %s", e)
        return
    if moved:
        log.warning("the MLflow store was made at %s: its artifact locations now point at %s",
                    ", ".join(moved), store_root(root) / paths.MLRUNS / "artifacts")


def _open(tracking: TrackingParams, root: Path, start: Callable[..., str]) -> Run:
    """Connect, find the experiment, and `start(client, experiment_id) -> run id`.
    The null run when tracking is off or anything fails."""
    if not is_enabled(tracking):
        return NULL_RUN
    uri = tracking_uri(root)
    try:
        _relocated(root)
        mlflow_client = client(uri)
        return Run(start(mlflow_client, _experiment_id(mlflow_client, tracking.experiment, root, uri)), mlflow_client)
    except Exception as e:
        _warn_disabled(f"cannot use the MLflow store {uri}: {type(e).__name__}: {e}")
        return NULL_RUN


def _experiment_id(mlflow_client, name: str, root: Path, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        # A tracking server decides where artifacts go; a local store keeps them beside its db.
        local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
        location = (store_root(root) / paths.MLRUNS / "artifacts").as_uri() if local else None
        try:
            return mlflow_client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by a parallel stage
            experiment = mlflow_client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _create_run(mlflow_client, experiment_id: str, name: str, tags: dict) -> str:
    # resolve_tags adds what mlflow.start_run would: mlflow.user, mlflow.source.name, ...
    from mlflow.tracking.context.registry import resolve_tags

    tags = {k: redact(v) for k, v in resolve_tags(tags).items()}
    return mlflow_client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


@contextmanager
def _ending(run: Run, final: Callable[[str], tuple[str, int | None]]) -> Iterator[Run]:
    """Yield `run`, then end it with (status, end_time) = final(outcome), where outcome is
    FINISHED, FAILED or KILLED."""
    outcome = "FINISHED"
    try:
        yield run
    except Exception:
        outcome = "FAILED"
        raise
    except BaseException:  # KeyboardInterrupt, SystemExit
        outcome = "KILLED"
        raise
    finally:
        run._end(*final(outcome))


@contextmanager
def train_run(params: Params, root: Path, tags: dict | None = None) -> Iterator[Run]:
    """A new run for one training, named by DVC_EXP_NAME or else the params hash, with every
    param logged. Ends FINISHED, or FAILED if the body raised (the exception propagates)."""
    all_tags = {**(tags or {}), **provenance.run_tags(store_root(root))}
    name = os.environ.get("DVC_EXP_NAME") or params_run_name(params)
    run = _open(params.tracking, root, lambda c, exp_id: _create_run(c, exp_id, name, all_tags))
    run.log_params(params.flat())
    with _ending(run, lambda outcome: (outcome, None)) as run:
        yield run


@contextmanager
def model_run(params: Params, root: Path, model_hash: str, stage: str | None = None) -> Iterator[Run]:
    """The run of the model with this content hash, resumed, for the stages after training.

    The most recent run tagged MODEL_HASH_TAG == model_hash is set RUNNING and afterwards gets
    back the status and end time it had (a failing sample stage does not turn a finished training
    FAILED, nor stretch its duration); the tag `charrnn.stage.<stage>` records this stage's
    outcome. With no such run (a wiped store) a new one is created, tagged with the hash and
    `charrnn.created_by: <stage>`.
    `stage` defaults to the name of the running script (stages/sample.py -> sample).
    """
    stage = stage or Path(sys.argv[0]).stem or "unknown"
    resumed = []  # start() puts the RunInfo of the run it resumes here

    def start(mlflow_client, experiment_id: str) -> str:
        found = find_model_run(mlflow_client, [experiment_id], model_hash)
        if found is None:
            tags = {MODEL_HASH_TAG: model_hash, "charrnn.created_by": stage, **provenance.run_tags(store_root(root))}
            return _create_run(mlflow_client, experiment_id, params_run_name(params), tags)
        resumed.append(found.info)
        mlflow_client.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id

    run = _open(params.tracking, root, start)
    if not resumed:
        run.log_params(params.flat())  # a resumed run has them (and MLflow params are immutable)

    def final(outcome: str) -> tuple[str, int | None]:
        run.set_tags({f"charrnn.stage.{stage}": outcome})
        if resumed and resumed[0].status in ("FINISHED", "FAILED", "KILLED"):
            return resumed[0].status, resumed[0].end_time
        return outcome, None

    with _ending(run, final) as run:
        yield run


def find_model_run(mlflow_client, experiment_ids: list[str], model_hash: str):
    """The newest run of these experiments tagged with the model's content hash, or None."""
    runs = mlflow_client.search_runs(
        experiment_ids,
        filter_string=f"tags.`{MODEL_HASH_TAG}` = '{model_hash}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    ) if experiment_ids else []
    return runs[0] if runs else None


# --- reading runs back -------------------------------------------------------------------------


def read_client(root: Path):
    """A client of the project's store for reading, or None when there is no store yet: a
    missing or empty sqlite file is left as it is (an MlflowClient would create its tables).
    A file that is not an MLflow store is a TrackingError."""
    uri = tracking_uri(root)
    if uri.startswith("sqlite:///") and not _holds_runs(Path(uri.removeprefix("sqlite:///"))):
        return None
    _relocated(root)
    return client(uri)


def search_runs(root: Path, experiment: str | None = None) -> list[dict]:
    """Every run of `experiment` (default: of every experiment), newest first, as plain dicts:
    run_name, experiment, status, start_time (ms), params, metrics (final values), tags.
    Never writes: a missing or empty sqlite store has no runs; one that cannot be read is a
    TrackingError, as is an unreachable server."""
    uri = tracking_uri(root)
    try:
        mlflow_client = read_client(root)
        if mlflow_client is None:
            return []
        experiments = _experiments(mlflow_client, experiment)
        runs = _search_all(mlflow_client, list(experiments)) if experiments else []
    except TrackingError:
        raise
    except Exception as e:
        raise TrackingError(f"cannot read the MLflow runs from {redact(uri)}: {type(e).__name__}: {redact(e)}") from None
    return [{"run_name": r.info.run_name, "experiment": experiments.get(r.info.experiment_id, r.info.experiment_id),
             "status": r.info.status, "start_time": r.info.start_time, "params": dict(r.data.params),
             "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)} for r in runs]


def _holds_runs(db: Path) -> bool:
    """Whether `db` is an MLflow sqlite store (False when missing or empty), read-only."""
    if not db.exists() or (db.is_file() and db.stat().st_size == 0):
        return False
    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as connection:
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        raise TrackingError(f"{db} is not a readable MLflow database ({e}); set MLFLOW_TRACKING_URI to another "
                            "store, or move the file away to start a new one") from None
    if not tables:
        return False
    if not {"experiments", "runs", "alembic_version"} <= tables:
        raise TrackingError(f"{db} is an SQLite database but not an MLflow store (tables: {', '.join(sorted(tables))})")
    return True


def _experiments(mlflow_client, name: str | None) -> dict[str, str]:
    """{experiment id: name} of the experiment called `name`, or of all active ones."""
    if name is not None:
        found = mlflow_client.get_experiment_by_name(name)
        return {found.experiment_id: found.name} if found is not None else {}
    return {e.experiment_id: e.name for e in mlflow_client.search_experiments()}


def _search_all(mlflow_client, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs(experiment_ids, order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
