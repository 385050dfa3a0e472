"""Everything MLflow, behind a few functions. The only module of the package that imports mlflow.

One pipeline execution is one MLflow run: `train_run` opens it, and the later stages
(`model_run`) find it again by the tag holding the model's content hash and resume it. The run id
is never written to a file, so DVC outputs stay reproducible.

Tracking is best effort: when it is off (params or CHARRNN_TRACKING=0) every call is a cheap
no-op, and when the store fails, one warning says so and the caller's work goes on untracked.
mlflow is imported lazily (it costs about 1.5 s), so `import charrnn.tracking` is free.

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
import re
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from charrnn.params import Params, TrackingParams

if TYPE_CHECKING:
    import pandas

MODEL_HASH_TAG = "charrnn.model_hash"
OFF_VALUES = {"0", "false", "off", "no"}
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values
KEY_PARAMS = ("seq_length", "train.cell", "train.layers", "train.units", "train.epochs", "train.learning_rate")
KEY_METRICS = ("held_out_bpc", "held_out_loss", "held_out_perplexity", "val_loss", "loss")  # table order
# user:password@ in a URL, and query parameters that usually carry secrets
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@|(?<=[?&])(token|key|sig|signature|password|secret|access_token)=[^&\s]*", re.I)

log = logging.getLogger(__name__)


def find_root(start: Path | None = None) -> Path:
    """The nearest directory at or above `start` (default: the cwd) holding dvc.yaml."""
    start = Path(start or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if (directory / "dvc.yaml").is_file():
            return directory
    raise FileNotFoundError(f"no dvc.yaml in {start} or any parent directory")


def is_enabled(tracking: TrackingParams) -> bool:
    return tracking.enabled and os.environ.get("CHARRNN_TRACKING", "1").strip().lower() not in OFF_VALUES


def store_root(root: Path) -> Path:
    """Where mlruns/ lives. Queued and --temp experiments run in a copy of the repository under
    .dvc/tmp/exps that DVC deletes afterwards; DVC sets DVC_ROOT to the real repository."""
    return Path(os.environ.get("DVC_ROOT") or root).resolve()


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root(root) / 'mlruns' / 'mlflow.db'}"


def params_run_name(params: Params) -> str:
    """A short name, the same for the same params (tracking.* left out: it is not the model)."""
    flat = {k: v for k, v in params.flat().items() if not k.startswith("tracking.")}
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
    return f"params-{digest[:8]}"


def redact(text: str) -> str:
    """`text` with URL credentials replaced by ***: they must never reach the tracking store."""
    return _CREDENTIALS.sub(lambda m: "***@" if m.group(0).endswith("@") else f"{m.group(1)}=***", text)


def _param_text(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, tuple)) else str(value)
    return redact(text)[:MAX_PARAM_LENGTH]


def _warn_disabled(reason: str) -> None:
    log.warning("MLflow tracking is disabled for this run: %s", reason)


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

    def log_params(self, params: dict) -> None:
        def action(client):
            from mlflow.entities import Param

            items = [Param(str(k), _param_text(v)) for k, v in params.items()]
            for i in range(0, len(items), 100):  # log_batch takes at most 100 params
                client.log_batch(self._run_id, params=items[i : i + 100])

        self._call("log_params", action)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        def action(client):
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(str(k), float(v), now, step or 0) for k, v in metrics.items()]
            client.log_batch(self._run_id, metrics=items)

        self._call("log_metrics", action)

    def set_tags(self, tags: dict) -> None:
        def action(client):
            from mlflow.entities import RunTag

            client.log_batch(self._run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

        self._call("set_tags", action)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifact", lambda c: c.log_artifact(self._run_id, str(path), artifact_path))

    def log_artifacts(self, dir: str | Path, artifact_path: str | None = None) -> None:
        self._call("log_artifacts", lambda c: c.log_artifacts(self._run_id, str(dir), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call("log_text", lambda c: c.log_text(self._run_id, text, artifact_file))

    def log_loss_curve(self, history: "pandas.DataFrame", artifact_file: str = "loss_curve.png") -> None:
        """Training and validation loss per epoch, drawn as a PNG artifact."""
        if self._client is None or self._broken:
            return
        self._call("log_loss_curve", lambda c: c.log_figure(self._run_id, loss_figure(history), artifact_file))

    def _call(self, what: str, action: Callable) -> None:
        if self._client is None or self._broken:
            return
        try:
            action(self._client)
        except Exception as e:
            self._broken = True
            _warn_disabled(f"{what} failed: {type(e).__name__}: {e}")

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
    # and MLflow's sqlalchemy models trigger a deprecation warning about `noload`.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)


def _client(uri: str):
    import mlflow

    _quiet_mlflow()
    return mlflow.MlflowClient(uri)


def _open(tracking: TrackingParams, root: Path, start: Callable[..., str]) -> Run:
    """Connect, find the experiment, and `start(client, experiment_id) -> run id`.
    The null run when tracking is off or anything fails."""
    if not is_enabled(tracking):
        return NULL_RUN
    uri = tracking_uri(root)
    try:
        client = _client(uri)
        return Run(start(client, _experiment_id(client, tracking.experiment, root, uri)), client)
    except Exception as e:
        _warn_disabled(f"cannot use the MLflow store {uri}: {type(e).__name__}: {e}")
        return NULL_RUN


def _experiment_id(client, name: str, root: Path, uri: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # A tracking server decides where artifacts go; a local store keeps them beside its db.
        local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
        location = (store_root(root) / "mlruns" / "artifacts").as_uri() if local else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by a parallel stage
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _create_run(client, experiment_id: str, name: str, tags: dict) -> str:
    # resolve_tags adds what mlflow.start_run would: mlflow.user, mlflow.source.name, ...
    from mlflow.tracking.context.registry import resolve_tags

    return client.create_run(experiment_id, run_name=name, tags=resolve_tags(tags)).info.run_id


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


def loss_figure(history: "pandas.DataFrame"):
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    for column, label in (("loss", "training"), ("val_loss", "validation")):
        if column in history:
            axes.plot(history["epoch"], history[column], marker="o", label=label)
    axes.set(xlabel="epoch", ylabel="loss (nats per character)", title="charrnn loss")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def _dvc_tags() -> dict[str, str]:
    """The DVC experiment this process runs in, from the variables `dvc exp run` sets."""
    names = {"DVC_EXP_NAME": "charrnn.dvc_exp_name", "DVC_EXP_BASELINE_REV": "charrnn.dvc_exp_baseline_rev"}
    return {tag: os.environ[var] for var, tag in names.items() if os.environ.get(var)}


@contextmanager
def train_run(params: Params, root: Path, tags: dict | None = None) -> Iterator[Run]:
    """A new run for one training, named by DVC_EXP_NAME or else the params hash, with every
    param logged. Ends FINISHED, or FAILED if the body raised (the exception propagates)."""
    all_tags = {**(tags or {}), **_git_tags(store_root(root)), **_dvc_tags()}
    name = os.environ.get("DVC_EXP_NAME") or params_run_name(params)
    run = _open(params.tracking, root, lambda client, exp_id: _create_run(client, exp_id, name, all_tags))
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

    def start(client, experiment_id: str) -> str:
        found = _find_model_run(client, experiment_id, model_hash)
        if found is None:
            tags = {MODEL_HASH_TAG: model_hash, "charrnn.created_by": stage,
                    **_git_tags(store_root(root)), **_dvc_tags()}
            return _create_run(client, experiment_id, params_run_name(params), tags)
        resumed.append(found.info)
        client.update_run(found.info.run_id, status="RUNNING")
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


def _find_model_run(client, experiment_id: str, model_hash: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{MODEL_HASH_TAG}` = '{model_hash}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _git_tags(root: Path) -> dict[str, str]:
    """charrnn.git_commit and charrnn.git_dirty, or nothing outside a git repository."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"charrnn.git_commit": commit, "charrnn.git_dirty": str(dirty).lower()}


def runs_frame(root: Path, experiment: str | None = None) -> "pandas.DataFrame":
    """The runs of `experiment` (default: every experiment), best held-out bits per character
    first (runs without it last, newest first): run_name, experiment, status, start_time, the key
    params plus every param that differs between runs, and the KEY_METRICS (final values).
    Empty (with a warning if the store failed) when there is nothing to show; creates nothing."""
    import pandas

    uri = tracking_uri(root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return pandas.DataFrame()
    try:
        client = _client(uri)
        experiments = _experiments(client, experiment)
        runs = _search_all(client, list(experiments)) if experiments else []
    except Exception as e:
        log.warning("cannot read MLflow runs from %s: %s: %s", uri, type(e).__name__, e)
        return pandas.DataFrame()
    return _frame(runs, experiments)


def _experiments(client, name: str | None) -> dict[str, str]:
    """{experiment id: name} of the experiment called `name`, or of all active ones."""
    if name is not None:
        found = client.get_experiment_by_name(name)
        return {found.experiment_id: found.name} if found is not None else {}
    return {e.experiment_id: e.name for e in client.search_experiments()}


def _search_all(client, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, order_by=["attributes.start_time DESC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _frame(runs: list, experiments: dict[str, str]) -> "pandas.DataFrame":
    import pandas

    if not runs:
        return pandas.DataFrame()
    rows = [
        {
            "run_name": r.info.run_name,
            "experiment": experiments.get(r.info.experiment_id, r.info.experiment_id),
            "status": r.info.status,
            "start_time": pandas.to_datetime(r.info.start_time, unit="ms", utc=True),
            **{f"params.{k}": v for k, v in r.data.params.items()},
            **{f"metrics.{k}": v for k, v in r.data.metrics.items()},
        }
        for r in runs
    ]
    df = pandas.DataFrame(rows)
    if f"metrics.{KEY_METRICS[0]}" in df:  # stable: ties and missing values keep newest first
        df = df.sort_values(f"metrics.{KEY_METRICS[0]}", kind="stable", na_position="last")
    params = sorted(c for c in df.columns if c.startswith("params."))
    shown = [c for c in params if c.removeprefix("params.") in KEY_PARAMS or df[c].nunique(dropna=False) > 1]
    metrics = [f"metrics.{m}" for m in KEY_METRICS if f"metrics.{m}" in df]
    fixed = ["run_name", "experiment", "status", "start_time"]
    out = df[fixed + shown + metrics]
    return out.rename(columns=lambda c: c.removeprefix("params.").removeprefix("metrics."))
