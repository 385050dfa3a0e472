"""Running as a team, for real: a DVC remote on SeaweedFS (S3) and on OpenSSH, an MLflow server on
PostgreSQL with its artifacts in S3, two clones as two machines, and the servers failing under them.

The servers come from CHARRNN_TEAM_STACK (started by `.ci/services start`) or are started here."""
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from charrnn.serve import server
from tests import stack as team
from tests.conftest import unavailable
from tests.project import Project, make_project, shakespeare_like

pytestmark = pytest.mark.slow
TEXT = shakespeare_like(20_000)


@pytest.fixture(scope="module")
def servers():
    if os.environ.get("CHARRNN_TEAM_STACK"):
        yield team.Stack(Path(os.environ["CHARRNN_TEAM_STACK"]))
        return
    if team.missing():
        unavailable(f"the team's servers need {', '.join(team.missing())}")
    root = Path(tempfile.mkdtemp(prefix="charrnn-team-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as its own user and must reach its data
    made = team.Stack(root)
    try:
        made.start_all()
        yield made
    finally:
        made.stop_all()


def machine(servers, root: Path, tracking: bool = True) -> Project:
    """A clone of the team's repository on a machine that reaches the servers."""
    env = {**make_env(servers), "CHARRNN_TRACKING": "1" if tracking else "0"}
    subprocess.run(["git", "clone", "-q", str(root.parent / "origin"), str(root)], check=True, env=env)
    (root / ".venv").unlink(missing_ok=True)
    (root / ".venv").symlink_to(Path(sys.prefix))
    return Project(root, env)


def make_env(servers) -> dict:
    env = {**os.environ, **servers.client_env(), "MLFLOW_TRACKING_URI": servers.tracking_uri,
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for name in ("DVC_EXP_NAME", "DVC_ROOT"):
        env.pop(name, None)
    return env


def add_s3_remote(project: Project, name: str, prefix: str, default: bool = False) -> None:
    project.dvc("remote", "add", *(["-d"] if default else []), name, f"s3://{team.BUCKET}/{prefix}")
    project.dvc("remote", "modify", name, "endpointurl", project.env["MLFLOW_S3_ENDPOINT_URL"])


@pytest.fixture(scope="module")
def origin(servers, tmp_path_factory) -> Project:
    """Machine A: the tiny pipeline run against the tracking server, results committed and pushed
    to the S3 remote; its repository is the team's `origin`."""
    base = tmp_path_factory.mktemp("team")
    made = make_project(base / "origin", TEXT, {"train": {"epochs": 1}}, tracking=True)
    project = Project(made.root, {**make_env(servers), "CHARRNN_TRACKING": "1"})
    add_s3_remote(project, "team", "dvc", default=True)
    project.dvc("repro")
    project.git("add", "-A")
    project.git("commit", "-q", "-m", "results")
    project.dvc("push")
    project.run_id = team_runs(servers)[0]["info"]["run_id"]  # newest first: its own
    return project


def version_of(servers, run: dict) -> str:
    """The registered version of a run's model (found by its content hash: a model trained again,
    bit for bit, is the version registered the first time)."""
    model_hash = {t["key"]: t["value"] for t in run["data"]["tags"]}["charrnn.model_hash"]
    versions = api(servers, "model-versions/search?filter=name%3D%27charrnn%27")["model_versions"]
    (version,) = [v["version"] for v in versions
                  if {t["key"]: t["value"] for t in v.get("tags", [])}.get("charrnn.model_hash") == model_hash]
    return version


def api(servers, path: str, body: dict | None = None) -> dict:
    url = f"{servers.tracking_uri}/api/2.0/mlflow/{path}"
    r = httpx.post(url, json=body, timeout=30) if body is not None else httpx.get(url, timeout=30)
    r.raise_for_status()
    return r.json()


def team_runs(servers) -> list[dict]:
    experiment = api(servers, "experiments/get-by-name?experiment_name=charrnn")["experiment"]["experiment_id"]
    return api(servers, "runs/search", {"experiment_ids": [experiment], "max_results": 100}).get("runs", [])


def bucket_keys(servers, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=servers.s3_url, aws_access_key_id=team.S3_KEY,
                      aws_secret_access_key=team.S3_SECRET, region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=team.BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def assert_pulled_up_to_date(clone: Project, origin: Project, *pull: str) -> None:
    clone.dvc("pull", *pull)
    assert "up to date" in clone.dvc("status").stdout
    assert "Running stage" not in clone.dvc("repro").stdout  # nothing re-runs
    for rel in ("data/model/model.weights.h5", "data/samples/sample-000.txt", "data/records/meta.json"):
        assert (clone.root / rel).read_bytes() == (origin.root / rel).read_bytes(), rel


def test_machine_a_lands_its_run_artifacts_and_model_in_postgres_and_s3(servers, origin):
    assert bucket_keys(servers, "dvc/files/md5/")  # the DVC cache
    run = api(servers, f"runs/get?run_id={origin.run_id}")["run"]
    assert run["info"]["status"] == "FINISHED"
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    experiment = run["info"]["experiment_id"]
    assert bucket_keys(servers, f"mlflow/{experiment}/{run['info']['run_id']}/artifacts/")  # artifacts in S3
    assert version_of(servers, run)  # registered
    # the runs live in PostgreSQL: the server's own database holds them
    rows = subprocess.run([str(team.PG_BIN / "psql"), servers.backend_uri, "-tAc", "select run_uuid from runs"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert run["info"]["run_id"] in rows


def test_machine_b_pulls_runs_nothing_again_then_its_own_experiment_sits_beside_a(servers, origin, tmp_path):
    b = machine(servers, origin.root.parent / "b")
    assert_pulled_up_to_date(b, origin)
    b.dvc("exp", "run", "-n", "b-own", "-S", "train.learning_rate=0.02")
    names = {r["info"]["run_name"]: r["info"]["status"] for r in team_runs(servers)}
    assert names.get("b-own") == "FINISHED" and len(names) >= 2, names
    table = b.run(str(b.root / ".venv" / "bin" / "charrnn"), "runs").stdout
    assert "b-own" in table and all(name in table for name in names), table


def generate(url: str) -> str:
    r = httpx.post(url + "/v1/generate", json={"prompt": "ROMEO:", "num_chars": 40, "seed": 3}, timeout=60)
    r.raise_for_status()
    return r.json()["texts"][0]


def test_promote_then_serve_the_champion_on_a_machine_with_only_the_tracking_uri(servers, origin, tmp_path,
                                                                                  monkeypatch):
    charrnn = str(origin.root / ".venv" / "bin" / "charrnn")
    version = version_of(servers, api(servers, f"runs/get?run_id={origin.run_id}")["run"])
    origin.run(charrnn, "promote", version)
    with server.spawn(origin.root / "data" / "model", env=origin.env, log_path=tmp_path / "a.log") as spawned:
        on_a = generate(spawned.url)
    # a checkout with no data and no bucket credentials: the model comes from the registry, via the server
    bare = machine(servers, origin.root.parent / "serve-only")
    assert not (bare.root / "data" / "model").exists()
    monkeypatch.chdir(bare.root)
    env = {**{k: v for k, v in os.environ.items() if k not in servers.client_env()},
           "MLFLOW_TRACKING_URI": servers.tracking_uri, "CHARRNN_TRACKING": "1"}
    assert "AWS_SECRET_ACCESS_KEY" not in env and "MLFLOW_S3_ENDPOINT_URL" not in env
    with server.spawn("models:/charrnn@champion", env=env, log_path=tmp_path / "bare.log") as spawned:
        assert generate(spawned.url) == on_a


def ssh_home(servers, home: Path, known_hosts: str) -> Path:
    """A HOME whose ~/.ssh/config reaches the SSH remote through OpenSSH with host keys checked."""
    info = servers.ssh
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(
        f"Host team-ssh\n  HostName 127.0.0.1\n  Port {info['port']}\n  User {info['user']}\n"
        f"  IdentityFile {info['key']}\n"
        f"  ProxyCommand ssh -F none -o BatchMode=yes -o StrictHostKeyChecking=yes "
        f"-o UserKnownHostsFile={known_hosts} -i {info['key']} -p %p -W %h:%p %r@%h\n")
    return home


def test_push_and_pull_through_the_ssh_remote_with_host_keys_checked(servers, origin, tmp_path):
    path = f"{servers.ssh['path']}/{tmp_path.name}"
    home = ssh_home(servers, tmp_path / "home", servers.ssh["known_hosts"])
    env = {**origin.env, "HOME": str(home)}
    a = Project(origin.root, env)
    a.dvc("remote", "add", "--local", "ssh", f"ssh://team-ssh{path}")
    a.dvc("push", "-r", "ssh")
    assert any(p.is_file() for p in Path(path).rglob("*"))
    c = machine(servers, origin.root.parent / f"c-{tmp_path.name}", tracking=False)
    c = Project(c.root, {**c.env, "HOME": str(home)})
    c.dvc("remote", "add", "--local", "ssh", f"ssh://team-ssh{path}")
    assert_pulled_up_to_date(c, origin, "-r", "ssh")
    # a host key other than the one known: the transfer is refused
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    wrong = tmp_path / "wrong_known_hosts"
    key_type, key = impostor.with_suffix(".pub").read_text().split()[:2]
    wrong.write_text(f"[127.0.0.1]:{servers.ssh['port']} {key_type} {key}\n")
    bad = Project(c.root, {**c.env, "HOME": str(ssh_home(servers, tmp_path / "bad", str(wrong)))})
    (c.root / "data" / "model" / "model.weights.h5").unlink()
    bad.run("rm", "-rf", ".dvc/cache")  # the pull must fetch
    proc = bad.dvc("pull", "-r", "ssh", check=False)
    assert proc.returncode != 0, proc.stdout
    assert not (c.root / "data" / "model" / "model.weights.h5").exists()
    assert_pulled_up_to_date(c, origin, "-r", "ssh")  # the same pull, with the host's own key known


def test_object_store_down_during_push_is_a_clear_error_and_a_retry_completes(servers, origin, tmp_path):
    prefix = f"fault-{tmp_path.name}"
    a = Project(origin.root, origin.env)
    add_s3_remote(a, "fault", prefix)
    servers.stop("s3")
    try:
        proc = a.dvc("push", "-r", "fault", check=False)
    finally:
        servers.start("s3")
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert f'ERROR: unexpected error - Could not connect to the endpoint URL: "{servers.s3_url}/' in said, said
    a.dvc("push", "-r", "fault")
    d = machine(servers, origin.root.parent / f"d-{tmp_path.name}", tracking=False)
    add_s3_remote(d, "fault", prefix)
    assert_pulled_up_to_date(d, origin, "-r", "fault")


def wait_for_running(servers, seen: set[str], timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [r for r in team_runs(servers) if r["info"]["run_id"] not in seen and r["info"]["status"] == "RUNNING"]
        if fresh:
            return fresh[0]["info"]["run_id"]
        time.sleep(0.5)
    raise AssertionError("no RUNNING run appeared on the tracking server")


def test_tracking_server_down_mid_run_the_stages_warn_once_finish_and_the_run_is_not_left_running(servers, origin):
    e = machine(servers, origin.root.parent / "e")
    # an unreachable server fails a call in seconds, not after MLflow's four minutes of retries
    e.env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    e.dvc("pull")
    seen = {r["info"]["run_id"] for r in team_runs(servers)}
    result: list = []
    worker = threading.Thread(target=lambda: result.append(
        e.dvc("exp", "run", "-n", "e-down", "-S", "train.learning_rate=0.03", "-S", "train.epochs=3", check=False)))
    worker.start()
    run_id = wait_for_running(servers, seen)
    servers.stop("mlflow")
    try:
        worker.join(timeout=900)
    finally:
        servers.start("mlflow")
    said = result[0].stdout + result[0].stderr
    assert result[0].returncode == 0, said
    warned = said.count("MLflow tracking is disabled for this run")
    assert 1 <= warned <= 3, said  # at most once in each of train, evaluate_perplexity, sample
    assert api(servers, f"runs/get?run_id={run_id}")["run"]["info"]["status"] == "RUNNING"  # it could not be closed
    # back: the next run opened from this machine ends the one its gone process left RUNNING
    e.dvc("exp", "run", "-n", "e-back", "-S", "train.learning_rate=0.04")
    info = api(servers, f"runs/get?run_id={run_id}")["run"]
    assert info["info"]["status"] == "FAILED"
    assert any(t["key"] == "charrnn.incomplete" for t in info["data"]["tags"])
