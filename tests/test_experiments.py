"""End to end: two `dvc exp run -S` experiments, then a real MLflow server shows both runs.

The server runs in its own process group (it starts worker processes) and the whole group is
stopped afterwards. Everything is checked through MLflow's REST API, as a dashboard would see it.
"""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.project import make_project, shakespeare_like

pytestmark = pytest.mark.slow

EXPERIMENTS = {"units-16": 16, "units-24": 24}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, store: Path, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "mlflow-server.log", "w")
        mlflow = Path(sys.prefix) / "bin" / "mlflow"
        self.proc = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{store}", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "TMPDIR": str(store.parent)},  # MLflow leaves a lock file per database URL there
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow server exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not answer /health in time")

    def get(self, endpoint: str, **query) -> dict:
        url = f"{self.url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.load(r)

    def post(self, endpoint: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{endpoint}", json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.load(r)

    def stop(self) -> None:
        """Stop the server and every worker it started: the whole process group, SIGKILL if
        SIGTERM is not enough within 15 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 15
            while group_alive(self.proc.pid) and time.monotonic() < deadline:
                self.proc.poll()  # reap the leader, so that only live members keep the group
                time.sleep(0.2)
            if not group_alive(self.proc.pid):
                break
        self.log.close()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """A project where two experiments ran, the second as a --temp experiment in a copy."""
    project = make_project(tmp_path_factory.mktemp("experiments"), shakespeare_like(30_000), tracking=True)
    (first, units_1), (second, units_2) = EXPERIMENTS.items()
    project.dvc("exp", "run", "-n", first, "-S", f"train.units={units_1}")
    project.dvc("exp", "run", "--temp", "-n", second, "-S", f"train.units={units_2}")
    # on top of the first (still in the workspace): only `sample` re-runs, adding to that model's run
    project.sample_only = project.dvc("exp", "run", "-n", "cooler", "-S", "sample.temperature=0.5").stdout
    return project


@pytest.fixture(scope="module")
def server(experiments):
    s = Server(experiments.root / "mlruns" / "mlflow.db", experiments.root)
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()
        assert not group_alive(s.proc.pid), "mlflow server workers left running"


def test_dvc_shows_both_experiments(experiments):
    shown = json.loads(experiments.dvc("exp", "show", "--json").stdout)
    found = {e["name"]: e["revs"][0]["data"] for rev in shown for e in (rev.get("experiments") or [])}
    assert set(EXPERIMENTS) <= set(found)
    for name, units in EXPERIMENTS.items():
        assert found[name]["params"]["params.yaml"]["data"]["train"]["units"] == units
        bpc = found[name]["metrics"]["metrics/perplexity.json"]["data"]["bpc"]
        assert 0 < bpc < math.log2(found[name]["metrics"]["metrics/vocab.json"]["data"]["size"])  # beats uniform
    experiments.dvc("plots", "diff", *EXPERIMENTS, "-o", "plots-diff")  # the README's side-by-side curves
    html = (experiments.root / "plots-diff" / "index.html").read_text()
    assert all(name in html for name in EXPERIMENTS) and "val_loss" in html


def test_a_sample_only_experiment_runs_only_sample(experiments):
    assert "Running stage 'sample'" in experiments.sample_only
    assert "Running stage 'train'" not in experiments.sample_only


def test_each_experiment_is_one_run_with_everything(experiments, server):
    experiment = server.get("experiments/get-by-name", experiment_name="charrnn")["experiment"]
    runs = server.post("runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    by_name = {r["info"]["run_name"]: r for r in runs}
    # one run per trained model: the sample-only experiment added to the first one's run
    assert sorted(by_name) == sorted(EXPERIMENTS)

    for name, units in EXPERIMENTS.items():
        run = by_name[name]
        run_id = run["info"]["run_id"]
        assert run["info"]["status"] == "FINISHED"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["train.units"] == str(units)
        assert params["sample.temperature"] == "0.8" and params["seq_length"] == "32"
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert metrics["held_out_bpc"] == pytest.approx(metrics["held_out_loss"] / 0.6931471805599453)
        assert metrics["held_out_perplexity"] > 1
        for key in ("loss", "val_loss", "chars_per_sec", "learning_rate"):
            history = server.get("metrics/get-history", run_id=run_id, metric_key=key)["metrics"]
            assert sorted(m["step"] for m in history) == [1, 2], key  # one point per epoch
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["charrnn.dvc_exp_name"] == name
        assert len(tags["charrnn.dvc_exp_baseline_rev"]) == 40
        assert len(tags["charrnn.git_commit"]) == 40 and tags["charrnn.git_dirty"] == "true"  # -S changed params.yaml
        for key in ("charrnn.model_hash", "charrnn.corpus_hash", "charrnn.vocab_hash"):
            assert len(tags[key]) == 64, key
        assert tags["charrnn.tensorflow_version"] and tags["charrnn.device"] == "CPU"
        assert tags["charrnn.cpu_pins"] == "TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=SSE41" and tags["charrnn.cpu_model"]
        assert tags["charrnn.stage.sample"] == tags["charrnn.stage.evaluate_perplexity"] == "FINISHED"
        artifacts = {f["path"] for f in server.get("artifacts/list", run_id=run_id)["files"]}
        assert {"model", "samples", "vocab.json", "history.csv", "loss_curve.png"} <= artifacts
        samples = {f["path"] for f in server.get("artifacts/list", run_id=run_id, path="samples")["files"]}
        assert samples == {"samples/sample-000.txt", "samples/sample-001.txt", "samples/temperatures.md"}
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert {"copied_frac_20", "longest_copied", "distinct_4"} <= metrics  # 40-char samples: no 50-gram, null


def test_each_trained_model_is_a_logged_model_and_a_registered_version(experiments, server):
    experiment = server.get("experiments/get-by-name", experiment_name="charrnn")["experiment"]
    logged = server.post("logged-models/search", {"experiment_ids": [experiment["experiment_id"]]})["models"]
    assert len(logged) == len(EXPERIMENTS) and {m["info"]["name"] for m in logged} == {"generator"}
    versions = server.get("model-versions/search", filter="name='charrnn'")["model_versions"]
    by_experiment = {next(t["value"] for t in v["tags"] if t["key"] == "charrnn.dvc_exp_name"): v for v in versions}
    assert sorted(by_experiment) == sorted(EXPERIMENTS)  # one version per trained model, none for `cooler`
    for v in versions:
        tags = {t["key"]: t["value"] for t in v["tags"]}
        assert float(tags["charrnn.held_out_bpc"]) > 0 and len(tags["charrnn.model_hash"]) == 64
        assert len(tags["charrnn.corpus_hash"]) == 64


def test_runs_table_in_the_terminal(experiments):
    out = experiments.run(str(Path(sys.prefix) / "bin" / "charrnn"), "runs").stdout
    lines = out.splitlines()
    assert "held_out_bpc" in lines[0] and "train.units" in lines[0]
    assert lines[0].split()[:3] == ["corpus", "rank", "run_name"]
    rows = [line.split() for line in lines[1:]]  # the corpus is two words: its name and hash digits
    assert sorted(row[3] for row in rows) == sorted(EXPERIMENTS)
    assert len({(row[0], row[1]) for row in rows}) == 1  # one corpus: one ranking
    assert sorted(row[2] for row in rows) == [str(i) for i in range(1, len(EXPERIMENTS) + 1)]


def readme_exp_show() -> list[str]:
    """README's `dvc exp show ...` line in "Comparing runs", as arguments."""
    import shlex

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    line = next(x for x in text.splitlines() if x.startswith("dvc exp show --drop"))
    return shlex.split(line.split("  #")[0])


def test_a_queued_grid_runs_as_the_readme_writes_it(tmp_path):
    """From a fresh copy: the README's PATH line, a grid queued with -S 'range(...)', `dvc queue
    start`; both experiments finish, and README's `dvc exp show` shows their params and metrics."""
    project = make_project(tmp_path / "queue", shakespeare_like(20_000))
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin]
    project.env["PATH"] = os.pathsep.join([str(project.root / ".venv" / "bin"), *path])  # the README's export
    queued = project.run("dvc", "exp", "run", "--queue", "-S", "train.units=range(16,25,8)")
    assert queued.stdout.count("Queued experiment") == 2
    project.run("dvc", "queue", "start")
    try:
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline:
            status = project.run("dvc", "queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
    finally:
        project.run("dvc", "queue", "stop", "--kill", check=False)
    tasks = [line.split() for line in status.splitlines() if line[:1].isalnum() and not line.startswith("Task")
             and not line.startswith("Worker")]
    assert len(tasks) == 2 and all(t[-1] == "Success" for t in tasks), status
    shown = project.run(*readme_exp_show(), "--csv").stdout.splitlines()
    assert shown[0].split(",") == ["Experiment", "bpc", "train.cell", "train.units", "train.learning_rate"]
    rows = [r.split(",") for r in shown[1:] if r.split(",")[0]]  # experiments (not workspace or baseline)
    assert sorted(int(r[3]) for r in rows) == [16, 24] and all(float(r[1]) > 0 for r in rows)
