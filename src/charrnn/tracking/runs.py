"""MLflow runs: where they are stored, their lifecycle, and reading them back. With registry.py
(the MLflow Model and the Model Registry), the only modules of the package that import mlflow.

One pipeline execution is one MLflow run: `train_run` opens it, and the later stages
(`model_run`) find it again by the tag holding the model's content hash and resume it. The run id
is never written to a file, so DVC outputs stay reproducible.

Writing is best effort: when tracking is off (params or CHARRNN_TRACKING=0) every call is a cheap
no-op, and when the store fails, one warning says so and the caller's work goes on untracked. A
run that lost a write is ended FAILED and tagged INCOMPLETE_TAG; if the store refuses even that (a
full disk), the next run opened in the experiment ends it so, by its process being gone, and
`charrnn runs` shows it as incomplete meanwhile.
Reading (`search_runs`, for `charrnn runs`) is the opposite: it never writes, and a store it
cannot read is an error. mlflow is imported lazily (it costs about 1.5 s).

Only MlflowClient is used, never the fluent API: `mlflow.set_tracking_uri` writes
os.environ["MLFLOW_TRACKING_URI"] and start_run/end_run keep a process-wide active run, and both
would leak between runs of one process.

An unreachable tracking *server* is not a quick failure: MLflow retries HTTP requests for about
four minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT shorten that).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import sqlite3
import sys
import time
import urllib.parse
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from charrnn.core import files, paths
from charrnn.core.errors import CharrnnError
from charrnn.core.params import Params, TrackingParams
from charrnn.core.redact import redact
from charrnn.tracking import provenance, relocate, ui

MODEL_HASH_TAG = "charrnn.model_hash"
PROCESS_TAG = "charrnn.process"  # host:pid of the process a RUNNING run belongs to
INCOMPLETE_TAG = "charrnn.incomplete"  # why a run was ended FAILED by charrnn (a store that refused writes)
OFF_VALUES = {"0", "false", "off", "no"}
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values

log = logging.getLogger("charrnn.tracking")


class TrackingError(CharrnnError):
    """A tracking store that cannot be read (the read side only: writing merely warns)."""


def store_problem(e: BaseException) -> str:
    """What a store's refusal means, in one short line: locked (retry), read-only (fix the
    permissions), or the driver's own first line."""
    text = str(getattr(e, "message", None) or e)
    first = redact(text.strip().splitlines()[0] if text.strip() else type(e).__name__)[:300]
    if "database is locked" in text or "database table is locked" in text:
        return "it is locked by another process (a stage or command still running?): retry when that one is done"
    if "readonly database" in text or "Read-only file system" in text or "Permission denied" in text:
        return f"it cannot be written ({first}): make it writable, or set MLFLOW_TRACKING_URI to another store"
    if "database or disk is full" in text or "No space left" in text:
        return f"its disk is full ({first}): free some space and retry"
    return f"{type(e).__name__}: {first}"


def write_error(root: Path, what: str, e: BaseException) -> TrackingError:
    """The one error for a write to the store that did not happen (`what`: the write)."""
    return TrackingError(f"{what} failed: the MLflow store {redact(tracking_uri(root))} refused it: {store_problem(e)}")


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
            _warn_disabled(f"{what} failed: {store_problem(e)}")
            return None

    def _end(self, status: str, end_time: int | None = None) -> None:
        """Mark the run ended, even a broken one (never leave it RUNNING if the store allows): a
        run that lost writes is FAILED, tagged with why. If the store refuses even this, the next
        run opened in its experiment ends it (close_orphans)."""
        if self._client is None:
            return
        try:
            if self._broken:
                self._client.set_tag(self._run_id, INCOMPLETE_TAG, "the store refused a write during the run: its "
                                     "metrics or artifacts are partial")
                status, end_time = "FAILED", None
            self._client.set_terminated(self._run_id, status, end_time)
        except Exception as e:
            if not self._broken:
                _warn_disabled(f"ending the run failed: {store_problem(e)}")


NULL_RUN = Run()


def _quiet_mlflow() -> None:
    # A new sqlite store logs "Creating initial MLflow database tables..." (and alembic chatter),
    # logging a model logs how it made its output example and draws download progress bars, and
    # MLflow's sqlalchemy models trigger a deprecation warning about `noload`.
    for name in ("alembic", "mlflow.models", "mlflow.pyfunc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A refused write is logged there with its whole traceback before it is raised to us, who
    # report it in one line (charrnn.tracking's warning, or the command's error).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
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
        prepare_store(uri)
        _relocated(root)
        mlflow_client = client(uri)
        experiment_id = _experiment_id(mlflow_client, tracking.experiment, root, uri)
        close_orphans(mlflow_client, experiment_id)
        run_id = start(mlflow_client, experiment_id)
        mlflow_client.set_tag(run_id, PROCESS_TAG, _this_process())
        return Run(run_id, mlflow_client)
    except Exception as e:
        _warn_disabled(f"cannot use the MLflow store {uri}: {store_problem(e)}")
        return NULL_RUN


def prepare_store(uri: str) -> None:
    """A local sqlite store that is missing, empty, or whose creation was cut short is created
    anew, atomically: MLflow creates its tables in dozens of steps (an initial schema, then each
    migration), and a store whose disk filled up between two of them fails every later start
    ("duplicate column name: step", "table ... already exists"). So the tables are made in a
    temporary file beside the store, renamed into place only when complete."""
    if not uri.startswith("sqlite:///"):
        return
    db = Path(uri.removeprefix("sqlite:///"))
    if _complete(db):
        return
    import fcntl

    import sqlalchemy
    from mlflow.store.db import utils as db_utils

    _quiet_mlflow()
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.parent / f".{db.name}.lock", "w") as lock:  # parallel stages: one creates, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(db):
            return
        with files.atomic_path(db) as tmp:
            engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
            try:
                db_utils._initialize_tables(engine)  # what MLflow's SqlAlchemyStore does for an empty database
            finally:
                engine.dispose()


def _complete(db: Path) -> bool:
    return db.is_file() and db.stat().st_size > 0 and not _unfinished(db)


def _unfinished(db: Path) -> bool:
    """An MLflow sqlite store whose creation stopped part-way: not at the newest schema, and
    holding no run, experiment of the user's or registered model (so nothing is lost by making
    it anew). An older store with runs is MLflow's to upgrade, never ours to replace."""
    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as connection:
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" not in tables or not {"experiments", "runs"} <= tables:
                return False  # not an MLflow store at all: _holds_runs says so
            (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone() or (None,)
            if version == _newest_schema():
                return False
            count = {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("runs", "experiments", "registered_models") if t in tables}
    except sqlite3.Error:
        return False
    return count.get("runs", 0) == 0 and count.get("registered_models", 0) == 0 and count.get("experiments", 0) <= 1


@functools.lru_cache(maxsize=1)
def _newest_schema() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def orphaned(status: str, tags: dict) -> bool:
    """A RUNNING run whose process (on this host) is gone: it ended while the store refused writes."""
    host, _, pid = tags.get(PROCESS_TAG, "").rpartition(":")
    if status != "RUNNING" or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def close_orphans(mlflow_client, experiment_id: str) -> None:
    """End FAILED, tagged with why, the experiment's runs left RUNNING by a process that is gone."""
    for run in mlflow_client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        if orphaned(run.info.status, run.data.tags):
            mlflow_client.set_tag(run.info.run_id, INCOMPLETE_TAG, "its process ended while the store refused writes "
                                  "(a full disk?): its metrics or artifacts are partial")
            mlflow_client.set_terminated(run.info.run_id, "FAILED")


def _experiment_id(mlflow_client, name: str, root: Path, uri: str) -> str:
    """The experiment's id, created (or restored) when needed, with the tags that make the MLflow
    UI open it as a training experiment on charrnn's runs view (charrnn.tracking.ui)."""
    from mlflow.exceptions import MlflowException

    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        # A tracking server decides where artifacts go; a local store keeps them beside its db.
        local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
        location = (store_root(root) / paths.MLRUNS / "artifacts").as_uri() if local else None
        try:
            experiment_id = mlflow_client.create_experiment(name, artifact_location=location)
            ui.prepare(mlflow_client, experiment_id, {})
            return experiment_id
        except MlflowException:  # created meanwhile by a parallel stage
            experiment = mlflow_client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(experiment.experiment_id)
    ui.prepare(mlflow_client, experiment.experiment_id, dict(experiment.tags))  # an older charrnn's experiment
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
    all_tags = {**(tags or {}), **provenance.run_tags(store_root(root)), **provenance.corpus_tags(root, params)}
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
            tags = {MODEL_HASH_TAG: model_hash, "charrnn.created_by": stage, **provenance.run_tags(store_root(root)),
                    **provenance.corpus_tags(root, params)}
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
    _check_named_store(uri)
    if uri.startswith("sqlite:///") and not _holds_runs(Path(uri.removeprefix("sqlite:///"))):
        return None
    _relocated(root)
    return client(uri)


def _check_named_store(uri: str) -> None:
    """A local store named by MLFLOW_TRACKING_URI is in a directory that exists: reading it must
    not look like "no runs yet" (nor create it, as MLflow's file store would)."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return
    if uri.startswith("sqlite:///"):
        directory = Path(uri.removeprefix("sqlite:///")).parent
    elif uri.startswith("file:") or "://" not in uri:
        directory = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path) if uri.startswith("file:") else uri)
    else:
        return
    if not directory.is_dir():
        raise TrackingError(f"MLFLOW_TRACKING_URI={redact(uri)}: the directory {directory} does not exist; "
                            "give the path of an existing store, or unset it for the project's mlruns/")


def search_runs(root: Path, experiment: str | None = None) -> list[dict]:
    """Every run of `experiment` (default: of every experiment), newest first, as plain dicts:
    run_name, experiment, experiment_id, status, start_time (ms), params, metrics (final values), tags.
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
             "experiment_id": r.info.experiment_id,
             "status": _status(r.info.status, r.data.tags), "start_time": r.info.start_time, "params": dict(r.data.params),
             "metrics": dict(r.data.metrics), "tags": dict(r.data.tags)} for r in runs]


def _status(status: str, tags: dict) -> str:
    """A run's status as `charrnn runs` shows it: an incomplete run says so (reading never repairs)."""
    if orphaned(status, tags):
        return "INCOMPLETE (its process is gone)"
    return f"{status} (incomplete)" if INCOMPLETE_TAG in tags else status


def _holds_runs(db: Path) -> bool:
    """Whether `db` is an MLflow sqlite store (False when missing or empty), read-only."""
    if not db.exists() or (db.is_file() and db.stat().st_size == 0):
        return False
    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as connection:
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        if "locked" in str(e):
            raise TrackingError(f"{db}: {store_problem(e)}") from None
        raise TrackingError(f"{db} is not a readable MLflow database ({e}); set MLFLOW_TRACKING_URI to another "
                            "store, or move the file away to start a new one") from None
    if not tables:
        return False
    if {"experiments", "runs", "alembic_version"} <= tables and _unfinished(db):
        return False  # its creation was cut short: no runs (the next run makes it anew)
    if not {"experiments", "runs", "alembic_version"} <= tables:
        raise TrackingError(f"{db} is an SQLite database but not an MLflow store (tables: {', '.join(sorted(tables))})")
    return True


def _experiments(mlflow_client, name: str | None) -> dict[str, str]:
    """{experiment id: name} of the experiment called `name`, or of all active ones."""
    existing = {e.experiment_id: e.name for e in mlflow_client.search_experiments()}
    if name is None:
        return existing
    found = {i: n for i, n in existing.items() if n == name}
    if not found:
        raise TrackingError(f"there is no experiment {name!r} in the MLflow store {redact(mlflow_client.tracking_uri)}; "
                            f"it holds: {', '.join(repr(n) for n in sorted(existing.values())) or 'none'}")
    return found


def _search_all(mlflow_client, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs(experiment_ids, order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
