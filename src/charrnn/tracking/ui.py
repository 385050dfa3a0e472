"""What the MLflow UI (3.17) shows of a charrnn experiment when it is opened.

MLflow 3.17's UI opens every experiment in its "GenAI" mode (traces, no runs table) unless the
page's URL says `workflowType=machine_learning` or the browser remembers the "Model training"
switch; the experiment tag `mlflow.experimentKind` is read by other versions and by the
experiment's kind selector, so it is set too. Its runs table shows no metric column until one is
picked, but it opens a *shared view* named in the URL (`viewStateShareKey=<key>`), kept in the
experiment tag `mlflow.sharedViewState.<key>`: charrnn writes one, VIEW_KEY, whose columns are
the corpus, the held-out bits per character and the key params, sorted best bpc first. It is also
listed under the UI's "Views". `runs_url` is the link that opens it.

Only the tags are written here (through MlflowClient), when charrnn creates an experiment or finds
one of its own without them; a view the user changed is left as it is.
"""
from __future__ import annotations

import json
import time

from charrnn.tracking.provenance import CORPUS_TAG

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"  # the UI's "Machine learning" kind (vs "genai_development")
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "charrnn-by-bpc"
VIEW_NAME = "charrnn: held-out bpc by corpus"
SHOWN_METRICS = ("held_out_bpc", "copied_frac_20")
SHOWN_PARAMS = ("train.cell", "train.units")  # few: the grid draws only the columns that fit


def _column(kind: str, name: str) -> str:
    return f"{kind}.`{name}`"  # the UI's column (and sort) key


def view_state() -> dict:
    """The shared view: the runs list with the corpus, held-out bpc and key params as columns,
    best bpc first (the UI's own state keys: its search facets and its UI state)."""
    columns = ([_column("tags", CORPUS_TAG)] + [_column("metrics", m) for m in SHOWN_METRICS]
               + [_column("params", p) for p in SHOWN_PARAMS])
    return {"searchFilter": "", "orderByKey": _column("metrics", "held_out_bpc"), "orderByAsc": True,
            "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs",
            "datasetsFilter": [], "selectedColumns": columns, "columnOrder": [], "columnWidths": {},
            "runsHiddenMode": "SHOW_ALL", "viewMaximized": False, "runListHidden": False,
            "isAccordionReordered": False, "groupBy": None, "groupsExpanded": {}, "useGroupedValuesInCharts": True,
            "hideEmptyCharts": True}


def view_tag_value(now_ms: int | None = None) -> str:
    """The tag's value: the UI's saved-view envelope, the state as a JSON string inside."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps({"name": VIEW_NAME, "createdAt": now, "updatedAt": now, "state": json.dumps(view_state())})


def missing_tags(tags: dict[str, str]) -> dict[str, str]:
    """Of the experiment tags charrnn sets, those `tags` (an experiment's) lacks."""
    wanted = {EXPERIMENT_KIND_TAG: TRAINING_KIND, VIEW_TAG_PREFIX + VIEW_KEY: view_tag_value()}
    return {k: v for k, v in wanted.items() if k not in tags}


def prepare(mlflow_client, experiment_id: str, tags: dict[str, str] | None = None) -> None:
    """Give the experiment the tags it lacks (`tags`: its tags, when the caller has them)."""
    if tags is None:
        tags = dict(mlflow_client.get_experiment(experiment_id).tags)
    for key, value in missing_tags(tags).items():
        mlflow_client.set_experiment_tag(experiment_id, key, value)


LOCAL_UI = "http://127.0.0.1:5000"  # `make ui`'s default address


def ui_base(tracking_uri: str) -> str:
    """Where the UI of a store is: a tracking server serves its own; a local store's is `make ui`'s."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI


def runs_url(base_url: str, experiment_id: str) -> str:
    """The UI page of the experiment's runs, in training mode, opened on charrnn's view."""
    return (f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")
