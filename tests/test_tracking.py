import dataclasses
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from charrnn.core.params import Params, TrackingParams
from charrnn.nn import history
from charrnn.tracking import runs as tracking
from charrnn.tracking import table as runs
from charrnn.tracking import ui
from tests.kit import tmpfs

EXPERIMENT = TrackingParams().experiment


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("CHARRNN_TRACKING", "1")
    for name in ("DVC_EXP_NAME", "DVC_ROOT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def root(tmp_path, empty_store, env) -> Path:
    """A project root whose store is tmp_path/mlruns/mlflow.db, named by MLFLOW_TRACKING_URI."""
    (tmp_path / "mlruns").mkdir()
    shutil.copy(empty_store, tmp_path / "mlruns" / "mlflow.db")
    env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    return tmp_path


def client(root: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")


def all_runs(root: Path):
    c = client(root)
    return c.search_runs([c.get_experiment_by_name(EXPERIMENT).experiment_id])


def assert_no_mlflow_state_left(uri: str):
    """No fluent active run, and MLFLOW_TRACKING_URI still what the test set."""
    import mlflow

    assert mlflow.active_run() is None
    assert os.environ["MLFLOW_TRACKING_URI"] == uri


def train(root: Path, params: Params = Params(), model_hash: str = "hash-1", **tags) -> str:
    with tracking.train_run(params, root, tags=tags) as run:
        for epoch in range(3):
            run.log_metrics({"loss": 3.0 - epoch, "val_loss": 3.5 - epoch}, step=epoch)
        run.set_tags({tracking.MODEL_HASH_TAG: model_hash})
    return run.run_id


def test_train_run_logs_params_metrics_tags_and_artifacts(root, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.txt").write_text("w")
    (tmp_path / "history.csv").write_text("epoch,loss\n")

    with tracking.train_run(Params(), root, tags={"charrnn.tensorflow_version": "2.99"}) as run:
        for epoch in range(3):
            run.log_metrics({"loss": 3.0 - epoch}, step=epoch)
        run.log_artifact(tmp_path / "history.csv")
        run.log_artifacts(tmp_path / "model", artifact_path="model")
        run.log_text("ROMEO: hi", "samples/0.txt")
        run.log_figure(lambda: history.loss_figure(pd.DataFrame({"epoch": [1, 2, 3], "loss": [3.0, 2.0, 1.0],
                                                                 "val_loss": [3.5, 2.5, 1.5]})), "loss_curve.png")
        run.set_tags({tracking.MODEL_HASH_TAG: "abc"})

    assert_no_mlflow_state_left(f"sqlite:///{root}/mlruns/mlflow.db")
    got = client(root).get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["train.units"] == "512"
    assert got.data.params["sample.prompts"] == '[]'
    assert got.data.params["data.sha256"] == "None"
    assert [m.step for m in client(root).get_metric_history(run.run_id, "loss")] == [0, 1, 2]
    assert got.data.metrics["loss"] == 1.0
    tags = got.data.tags
    assert tags["charrnn.tensorflow_version"] == "2.99"
    assert tags[tracking.MODEL_HASH_TAG] == "abc"
    assert "charrnn.git_commit" not in tags  # tmp_path is not a git repository
    assert tags["charrnn.cpu_pins"] == "TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=SSE41"  # the pin, charrnn.core.isa
    assert tags["charrnn.cpu_model"] and tags["charrnn.cpu_arch"] and tags["charrnn.cpu_pinned"] in ("true", "false")
    artifacts = {a.path for a in client(root).list_artifacts(run.run_id)}
    assert artifacts == {"history.csv", "model", "samples", "loss_curve.png"}
    png = Path(client(root).download_artifacts(run.run_id, "loss_curve.png", str(tmp_path)))
    assert png.read_bytes().startswith(b"\x89PNG")
    assert got.info.artifact_uri.startswith((root / "mlruns" / "artifacts").as_uri())


def test_run_name_from_params_hash(root):
    small = Params.from_dict({"train": {"units": 8}})
    names = {client(root).get_run(train(root, p)).info.run_name for p in (Params(), Params(), small)}
    assert names == {tracking.params_run_name(Params()), tracking.params_run_name(small)}
    assert all(n.startswith("params-") and len(n) == len("params-") + 8 for n in names)


def test_run_name_and_tags_from_dvc_experiment(root, env):
    env.setenv("DVC_EXP_NAME", "lanky-mice")
    env.setenv("DVC_EXP_BASELINE_REV", "f" * 40)
    got = client(root).get_run(train(root))
    assert got.info.run_name == "lanky-mice"
    assert got.data.tags["charrnn.dvc_exp_name"] == "lanky-mice"
    assert got.data.tags["charrnn.dvc_exp_baseline_rev"] == "f" * 40


def test_credentials_never_reach_the_store(root):
    source = "https://alice:s3cret@example.org/corpus.txt?token=abc123&lang=en"
    got = client(root).get_run(train(root, Params.from_dict({"data": {"source": source}}), note=source))
    assert got.data.params["data.source"] == "https://***@example.org/corpus.txt?token=***&lang=***"
    assert got.data.tags["note"] == "https://***@example.org/corpus.txt?token=***&lang=***"


def test_git_dirty_means_code_or_params_differ_from_the_commit_not_outputs(root):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "params.yaml").write_text("seq_length: 100\n")
    (root / "metrics").mkdir()
    (root / "metrics" / "train.json").write_text("{}")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=root, check=True)
    # what running the pipeline changes: outputs, the lock file, the MLflow store
    (root / "metrics" / "train.json").write_text('{"loss": 1}')
    (root / "metrics" / "perplexity.json").write_text("{}")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (root / "data" / "model").mkdir(parents=True)
    tags = client(root).get_run(train(root)).data.tags
    assert len(tags["charrnn.git_commit"]) == 40
    assert tags["charrnn.git_dirty"] == "false"
    (root / "params.yaml").write_text("seq_length: 50\n")
    assert client(root).get_run(train(root)).data.tags["charrnn.git_dirty"] == "true"


def test_model_run_resumes_the_training_run(root):
    run_id = train(root, model_hash="h1")
    for stage in ("sample", "evaluate_perplexity"):
        with tracking.model_run(Params(), root, "h1", stage=stage) as run:
            run.log_metrics({f"{stage}_metric": 1.0})
            assert client(root).get_run(run_id).info.status == "RUNNING"

    assert_no_mlflow_state_left(f"sqlite:///{root}/mlruns/mlflow.db")
    assert run.run_id == run_id
    (only,) = all_runs(root)
    assert only.info.status == "FINISHED"
    assert {"loss", "sample_metric", "evaluate_perplexity_metric"} <= set(only.data.metrics)
    assert only.data.tags["charrnn.stage.sample"] == "FINISHED"


def test_model_run_picks_the_most_recent_run_with_the_hash(root):
    train(root, model_hash="same")
    newest = train(root, model_hash="same")
    with tracking.model_run(Params(), root, "same", stage="sample") as run:
        pass
    assert run.run_id == newest


def test_model_run_with_unknown_hash_creates_one_run_then_reuses_it(root):
    train(root, model_hash="h1")
    for _ in range(2):
        with tracking.model_run(Params(), root, "wiped", stage="sample") as run:
            run.log_metrics({"perplexity": 4.0})

    runs = all_runs(root)
    assert len(runs) == 2
    created = client(root).get_run(run.run_id)
    assert created.data.tags[tracking.MODEL_HASH_TAG] == "wiped"
    assert created.data.tags["charrnn.created_by"] == "sample"
    assert created.data.params["train.units"] == "512"
    assert created.info.status == "FINISHED"


def test_failing_stage_does_not_mark_the_training_run_failed(root):
    run_id = train(root, model_hash="h1")
    trained = client(root).get_run(run_id).info
    with pytest.raises(ZeroDivisionError):
        with tracking.model_run(Params(), root, "h1", stage="sample"):
            1 / 0
    assert_no_mlflow_state_left(f"sqlite:///{root}/mlruns/mlflow.db")
    got = client(root).get_run(run_id)
    assert (got.info.status, got.info.end_time) == ("FINISHED", trained.end_time)
    assert got.data.tags["charrnn.stage.sample"] == "FAILED"


def test_body_raising_marks_the_run_failed_and_propagates(root):
    with pytest.raises(KeyError, match="boom"):
        with tracking.train_run(Params(), root) as run:
            run.log_metrics({"loss": 1.0}, step=0)
            raise KeyError("boom")
    assert_no_mlflow_state_left(f"sqlite:///{root}/mlruns/mlflow.db")
    assert client(root).get_run(run.run_id).info.status == "FAILED"


@pytest.mark.parametrize("how", ["param", "env"])
def test_disabled_tracking_is_a_no_op(tmp_path, env, how):
    params = Params()
    if how == "param":
        params = dataclasses.replace(params, tracking=TrackingParams(enabled=False))
    else:
        env.setenv("CHARRNN_TRACKING", "off")
    for context in (tracking.train_run(params, tmp_path), tracking.model_run(params, tmp_path, "h")):
        with context as run:
            run.log_params({"a": 1})
            run.log_metrics({"loss": 1.0}, step=0)
            run.set_tags({"t": "v"})
            run.log_artifact(tmp_path / "missing.txt")
            run.log_artifacts(tmp_path / "missing")
            run.log_text("x", "x.txt")
        assert run.run_id is None
    assert list(tmp_path.iterdir()) == []


def test_import_and_disabled_runs_do_not_import_mlflow(tmp_path):
    code = (
        "import sys; from pathlib import Path; from charrnn.tracking import runs as tracking; from charrnn.core.params import Params\n"
        f"with tracking.train_run(Params(), Path({str(tmp_path)!r})) as run: run.log_metrics({{'a': 1}})\n"
        "assert 'mlflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"CHARRNN_TRACKING": "0", "PATH": ""})


@pytest.fixture
def failing_store(tmp_path, env, request) -> Path:
    """MLFLOW_TRACKING_URI naming a store that cannot work."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory, not a database")
    uri = {"under_a_file": f"sqlite:///{blocker}/mlflow.db", "not_a_db": f"sqlite:///{blocker}",
           "bad_scheme": "nosuchscheme://x"}[request.param]
    env.setenv("MLFLOW_TRACKING_URI", uri)
    return tmp_path


@pytest.mark.parametrize("failing_store", ["under_a_file", "not_a_db", "bad_scheme"], indirect=True)
def test_failing_store_warns_once_and_the_body_completes(failing_store, caplog):
    uri, done = os.environ["MLFLOW_TRACKING_URI"], []
    with caplog.at_level(logging.WARNING, logger="charrnn.tracking"):
        with tracking.train_run(Params(), failing_store) as run:
            run.log_metrics({"loss": 1.0}, step=0)
            run.log_text("x", "x.txt")
            done.append(True)
    assert done and run.run_id is None
    assert_no_mlflow_state_left(uri)
    warnings = [r for r in caplog.records if r.name == "charrnn.tracking"]
    assert len(warnings) == 1
    assert "tracking is disabled for this run" in warnings[0].getMessage()


def test_a_failing_call_warns_once_then_the_run_is_a_no_op(root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="charrnn.tracking"):
        with tracking.train_run(Params(), root) as run:
            run.log_artifact(tmp_path / "missing.txt")
            run.log_metrics({"loss": 1.0}, step=0)
    assert len([r for r in caplog.records if r.name == "charrnn.tracking"]) == 1
    got = client(root).get_run(run.run_id)
    assert got.info.status == "FAILED"  # ended, not left RUNNING, and not FINISHED: it lost a write
    assert "partial" in got.data.tags[tracking.INCOMPLETE_TAG]
    assert "loss" not in got.data.metrics
    assert list(runs.frame(root)["status"]) == ["FAILED (incomplete)"]


def test_a_run_left_running_by_a_process_that_is_gone_is_shown_incomplete_then_ended_failed(root):
    """A full store refuses even the end of a run; the next run opened in the experiment ends it."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with tracking.train_run(Params(), root) as left:
        pass
    c = client(root)
    c.update_run(left.run_id, status="RUNNING")
    c.set_tag(left.run_id, tracking.PROCESS_TAG, f"{socket.gethostname()}:{gone.stdout.strip()}")
    assert list(runs.frame(root)["status"]) == ["INCOMPLETE (its process is gone)"]
    assert c.get_run(left.run_id).info.status == "RUNNING"  # reading never repairs
    with tracking.train_run(Params(), root) as live:
        assert c.get_run(left.run_id).info.status == "FAILED"
        assert "refused writes" in c.get_run(left.run_id).data.tags[tracking.INCOMPLETE_TAG]
        assert list(runs.frame(root)["status"]) == ["RUNNING", "FAILED (incomplete)"]  # this process is alive
    assert c.get_run(live.run_id).info.status == "FINISHED"


def test_default_uri_is_an_absolute_sqlite_path_under_root(root, env, tmp_path):
    env.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(root) == f"sqlite:///{root}/mlruns/mlflow.db"
    train(root)
    assert len(all_runs(root)) == 1
    env.setenv("DVC_ROOT", str(tmp_path / "real-repo"))  # dvc exp run in a temporary copy
    assert tracking.tracking_uri(root) == f"sqlite:///{tmp_path}/real-repo/mlruns/mlflow.db"


def test_the_project_root_is_the_nearest_directory_with_dvc_yaml(tmp_path):
    from charrnn.core import paths

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "stages" / "deep").mkdir(parents=True)
    assert paths.project_root(tmp_path / "stages" / "deep") == tmp_path
    with pytest.raises(paths.ProjectError):
        paths.project_root(tmp_path.parent)


def test_runs_table(root):
    train(root, Params.from_dict({"train": {"units": 8}}), model_hash="a")
    train(root, Params.from_dict({"train": {"units": 16}, "vocab": {"min_count": 2}}), model_hash="b")
    frame = runs.frame(root)
    assert len(frame) == 2
    assert {"run_name", "status", "start_time", "train.units", "vocab.min_count", "loss", "val_loss"} <= set(
        frame.columns
    )
    assert "train.seed" not in frame.columns  # same in every run
    assert list(frame["train.units"]) == ["16", "8"]  # newest first when nothing is evaluated


def test_runs_table_sorts_by_held_out_bpc_and_filters_by_experiment(root):
    def evaluated(units: int, bpc: float | None, experiment: str = EXPERIMENT) -> None:
        params = Params.from_dict({"train": {"units": units}, "tracking": {"experiment": experiment}})
        with tracking.train_run(params, root) as run:
            if bpc is not None:
                run.log_metrics({"held_out_bpc": bpc, "held_out_loss": bpc * 0.693, "copied_frac_20": 0.1})

    evaluated(8, 2.5)
    evaluated(16, None)
    evaluated(32, 2.1)
    evaluated(64, 1.9, experiment="other")
    frame = runs.frame(root)
    assert list(frame["train.units"]) == ["64", "32", "8", "16"]  # best bpc first, unevaluated last
    assert list(frame.columns[:6]) == ["corpus", "rank", "run_name", "experiment", "status", "start_time"]
    assert list(frame["rank"]) == ["1", "2", "3", "-"]  # runs without a corpus tag: one "?" corpus
    assert list(frame.columns[-3:]) == ["held_out_bpc", "held_out_loss", "copied_frac_20"]
    assert list(frame["experiment"]) == ["other", EXPERIMENT, EXPERIMENT, EXPERIMENT]
    assert list(runs.frame(root, EXPERIMENT)["train.units"]) == ["32", "8", "16"]
    with pytest.raises(tracking.TrackingError, match=f"there is no experiment 'no-such-experiment' in the MLflow store "
                       f"sqlite:///.*; it holds: 'Default', '{EXPERIMENT}', 'other'"):
        runs.frame(root, "no-such-experiment")


def test_reading_runs_without_a_store_or_from_an_empty_file_writes_nothing(tmp_path, env):
    assert runs.frame(tmp_path).empty
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").write_bytes(b"")
    assert runs.frame(tmp_path).empty
    assert (tmp_path / "mlruns" / "mlflow.db").read_bytes() == b""


def test_reading_runs_leaves_the_store_byte_identical(root):
    train(root)
    db = root / "mlruns" / "mlflow.db"
    before = db.read_bytes()
    assert len(runs.frame(root)) == 1
    assert db.read_bytes() == before


@pytest.mark.parametrize("content,match", [
    (b"this is not a database at all" * 100, "is not a readable MLflow database"),
    (b"SQLite format 3\x00" + b"\xff" * 5000, "is not a readable MLflow database"),
])
def test_a_corrupt_store_is_an_error_not_no_runs(tmp_path, env, content, match):
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "mlflow.db").write_bytes(content)
    with pytest.raises(tracking.TrackingError, match=match):
        runs.frame(tmp_path)
    assert (tmp_path / "mlruns" / "mlflow.db").read_bytes() == content


def test_a_sqlite_file_that_is_not_a_store_is_an_error(tmp_path, env):
    import sqlite3

    (tmp_path / "mlruns").mkdir()
    with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as db:
        db.execute("CREATE TABLE notes (x)")
    with pytest.raises(tracking.TrackingError, match="not an MLflow store"):
        runs.frame(tmp_path)


def test_outside_a_project_is_a_clear_error(tmp_path):
    from charrnn.core import paths

    with pytest.raises(paths.ProjectError, match="not inside a charrnn project"):
        paths.project_root(tmp_path)


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KiB file system at tmp_path/disk (the test grows it to 64 MiB by a remount)."""
    with tmpfs(tmp_path / "disk", "300k") as disk:
        yield disk


def test_a_store_whose_creation_a_full_disk_cut_short_is_made_anew_once_there_is_space(small_disk, env, tmp_path):
    uri = f"sqlite:///{small_disk}/mlflow.db"
    env.setenv("MLFLOW_TRACKING_URI", uri)
    made = subprocess.run([sys.executable, "-c", f"import mlflow; mlflow.MlflowClient({uri!r}).search_experiments()"],
                          capture_output=True, text=True)  # MLflow's own creation in another process, cut short
    assert made.returncode != 0 and "database or disk is full" in made.stderr, made.stderr[-2000:]
    husk = (small_disk / "mlflow.db").read_bytes()
    assert husk and tracking.search_runs(tmp_path) == []  # no runs, and reading it writes nothing
    with pytest.raises(Exception, match="database or disk is full"):
        tracking.prepare_store(uri)  # still full: the attempt is undone, the file left as it was
    assert (small_disk / "mlflow.db").read_bytes() == husk
    assert sorted(p.name for p in small_disk.iterdir()) == [".mlflow.db.lock", "mlflow.db"]
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    run_id = train(tmp_path)
    assert run_id is not None
    assert [r["status"] for r in tracking.search_runs(tmp_path)] == ["FINISHED"]
    assert not [p.name for p in small_disk.iterdir() if p.name.endswith(".tmp")]  # no temporary left


def test_a_new_store_is_created_complete_or_not_at_all(tmp_path, env):
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    tracking.prepare_store(uri)
    assert tracking._complete(tmp_path / "mlruns" / "mlflow.db")
    before = (tmp_path / "mlruns" / "mlflow.db").read_bytes()
    tracking.prepare_store(uri)  # complete: left alone
    assert (tmp_path / "mlruns" / "mlflow.db").read_bytes() == before


def test_runs_are_ranked_within_their_corpus_never_across(root, monkeypatch):
    """bpc compares only on one text: each corpus's runs together, ranked among themselves, the
    corpus with the best run first; a run is tagged with its corpus's name and content hash."""
    monkeypatch.chdir(root)

    def evaluated(source: str, text: str, units: int, bpc: float | None) -> str:
        (root / "data" / "raw").mkdir(parents=True, exist_ok=True)
        (root / "data" / "raw" / "corpus.txt").write_text(text)
        with tracking.train_run(Params.from_dict({"data": {"source": source}, "train": {"units": units}}), root) as run:
            if bpc is not None:
                run.log_metrics({"held_out_bpc": bpc})
        return run.run_id

    first = evaluated("shakespeare", "ROMEO: hi\n", 8, 2.1)
    evaluated("corpora/chinese.txt", "\u4e00\u4e8c\n", 16, 5.2)
    evaluated("shakespeare", "ROMEO: hi\n", 32, 1.9)
    evaluated("https://u:p@example.org/texts/dickens.txt?sig=x", "Pip.\n", 64, 2.0)
    evaluated("shakespeare", "ROMEO: hi\n", 128, None)
    tags = client(root).get_run(first).data.tags
    digest = hashlib.sha256(b"ROMEO: hi\n").hexdigest()
    assert tags["charrnn.corpus_hash"] == digest and tags["charrnn.corpus"] == f"shakespeare {digest[:8]}"
    frame = runs.frame(root)
    assert [c.split()[0] for c in frame["corpus"]] == ["shakespeare"] * 3 + ["dickens.txt", "chinese.txt"]
    assert list(frame["train.units"]) == ["32", "8", "128", "64", "16"]
    assert list(frame["rank"]) == ["1", "2", "-", "1", "1"]
    assert list(runs.frame(root, corpus="dickens.txt")["train.units"]) == ["64"]
    assert list(runs.frame(root, corpus=digest[:6])["train.units"]) == ["32", "8", "128"]
    assert runs.frame(root, corpus="nothing-like-it").empty


def test_the_experiment_opens_in_the_ui_as_a_training_experiment_on_the_held_out_bpc_view(root):
    """The tags the MLflow UI reads: the experiment's kind, and charrnn's shared runs view (its
    columns: the corpus and held_out_bpc, sorted by it), set on a new experiment and added to an
    existing one that lacks them; a view the user changed is kept."""
    import json

    train(root)
    c = client(root)
    experiment = c.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags[ui.EXPERIMENT_KIND_TAG] == "custom_model_development"
    view = json.loads(experiment.tags[ui.VIEW_TAG_PREFIX + ui.VIEW_KEY])
    state = json.loads(view["state"])
    assert view["name"] == ui.VIEW_NAME
    assert state["orderByKey"] == "metrics.`held_out_bpc`" and state["orderByAsc"] is True
    assert {"metrics.`held_out_bpc`", "tags.`charrnn.corpus`"} <= set(state["selectedColumns"])
    other = c.create_experiment("made-elsewhere")  # e.g. by an older charrnn: no tags
    c.set_experiment_tag(experiment.experiment_id, ui.VIEW_TAG_PREFIX + ui.VIEW_KEY, "the user's own")
    train(root, Params.from_dict({"tracking": {"experiment": "made-elsewhere"}}))
    assert c.get_experiment(other).tags[ui.EXPERIMENT_KIND_TAG] == "custom_model_development"
    train(root)
    assert c.get_experiment(experiment.experiment_id).tags[ui.VIEW_TAG_PREFIX + ui.VIEW_KEY] == "the user's own"
    assert ui.runs_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=charrnn-by-bpc")


def test_the_ui_link_is_the_servers_own_page_or_make_uis():
    assert ui.ui_base("sqlite:///mlruns/mlflow.db") == ui.LOCAL_UI
    assert ui.ui_base("http://mlflow.team.example:5000/") == "http://mlflow.team.example:5000"
    assert ui.ui_base("https://127.0.0.1:8443") == "https://127.0.0.1:8443"
