"""The MLflow Model of a trained model, the registry, `charrnn promote`, and `mlflow models serve`."""
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from charrnn.core.params import Params
from charrnn.sampling.settings import SamplingSettings
from charrnn.tracking import publishing, registry
from charrnn.tracking import runs as tracking
from tests.kit import exported as export_tiny
from tests.kit import saved_model, tmpfs
from tests.servers import free_port, stop_group

PARAMS = Params.from_dict({"sample": {"num_chars": 30, "seed": 5, "top_p": 0.9}})
SIGNATURE_PARAMS = {"num_chars": 30, "temperature": 0.8, "seed": 5, "top_k": 0, "top_p": 0.9}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A saved model, its exported generator, and the Generator itself."""
    root = tmp_path_factory.mktemp("exported")
    saved_model(root / "model", layers=2)
    return root, export_tiny(root / "generator", layers=2)


def text(exported, prompts, num_chars, temperature, seed, top_k, top_p):
    return exported[1].generate_text(prompts, SamplingSettings(num_chars, temperature, top_k, top_p, seed))


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root (dvc.yaml) whose store is tmp_path/mlruns/mlflow.db."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("CHARRNN_TRACKING", "1")
    for name in ("MLFLOW_TRACKING_URI", "DVC_EXP_NAME", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def trained_run(root: Path, exported, model_hash: str = "h" * 64, exp_name: str | None = None, monkeypatch=None):
    """A training run tagged with the model hash, with the model registered from it."""
    if exp_name and monkeypatch:
        monkeypatch.setenv("DVC_EXP_NAME", exp_name)
    with tracking.train_run(PARAMS, root) as run:
        run.set_tags({tracking.MODEL_HASH_TAG: model_hash})
        version = registry.register(run, "charrnn", exported[0] / "generator", exported[0] / "model" / "vocab.json",
                                    model_hash, {"charrnn.held_out_bpc": "1.2345"},
                                    registry.signature_defaults(PARAMS.sample))
    return run, version


def test_the_logged_model_is_pyfunc_with_a_signature_that_keeps_every_param(project, exported):
    from mlflow.models import Model

    run, version = trained_run(project, exported)
    assert version == "1"
    client = tracking.client(tracking.tracking_uri(project))
    (logged,) = client.search_logged_models([client.get_run(run.run_id).info.experiment_id])
    assert logged.source_run_id == run.run_id and logged.name == "generator"
    info = Model.load(urllib.parse.urlparse(logged.artifact_location).path)
    assert "python_function" in info.flavors
    params = {p.name: p.default for p in info.signature.params.params}
    assert params == SIGNATURE_PARAMS  # MLflow drops params silently when the example is given wrongly
    assert [s.type.name for s in info.signature.inputs.inputs] == ["string"]
    v = client.get_model_version("charrnn", "1")
    assert v.run_id == run.run_id and v.tags["charrnn.model_hash"] == "h" * 64
    assert v.tags["charrnn.held_out_bpc"] == "1.2345"


def test_the_pyfunc_model_gives_the_generators_text(project, exported, monkeypatch):
    import mlflow

    trained_run(project, exported)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri(project))
    loaded = mlflow.pyfunc.load_model("models:/charrnn/1")
    prompts = ["ROMEO:", "ab"]
    assert loaded.predict(prompts) == text(exported, prompts, 30, 0.8, 5, 0, 0.9)  # the defaults
    got = loaded.predict(prompts, params={"num_chars": 12, "seed": 2, "temperature": 1.0, "top_k": 3, "top_p": 1.0})
    assert got == text(exported, prompts, 12, 1.0, 2, 3, 1.0)
    for one_or_odd in (["ROMEO:"], ["ROMEO:", "ab", "e"]):  # one answer per prompt
        assert loaded.predict(one_or_odd) == text(exported, one_or_odd, 30, 0.8, 5, 0, 0.9)


@pytest.mark.parametrize("model_input,params,message", [
    (["ROMEO:"], {"temperature": 0.0}, "temperature must be a number from 1e-06 to 100, got 0.0"),
    (["ROMEO:"], {"top_p": 1e-40}, "top_p must be 0 or of a size a 32-bit float holds"),
    (["ROMEO:"], {"num_chars": 0}, "num_chars must be an integer from 1"),
    (["¿¡"], {}, "prompt 0 ('¿¡') has no character of the model's vocabulary"),
    ([""], {}, "prompt 0 is empty"),
])
def test_the_pyfunc_model_refuses_by_the_rules_of_every_door(project, exported, monkeypatch, model_input, params,
                                                             message):
    import mlflow
    from mlflow.exceptions import MlflowException

    trained_run(project, exported)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri(project))
    loaded = mlflow.pyfunc.load_model("models:/charrnn/1")
    with pytest.raises(MlflowException) as e:
        loaded.predict(model_input, params=params)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE" and message in e.value.message


def test_a_logged_model_carries_the_code_of_its_own_version(project, exported):
    from mlflow.models import Model

    run, _ = trained_run(project, exported)
    client = tracking.client(tracking.tracking_uri(project))
    (logged,) = client.search_logged_models([client.get_run(run.run_id).info.experiment_id])
    local = Path(urllib.parse.urlparse(logged.artifact_location).path)
    code = local / "code" / "charrnn"
    assert (code / "sampling" / "generation.py").read_text() == (Path(registry.PACKAGE) / "sampling" /
                                                                  "generation.py").read_text()
    assert not list(code.rglob("__pycache__"))
    assert Model.load(str(local)).flavors["python_function"]["code"] == "code"


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_text(p.read_text()[:40]), "is not a charrnn generator"),  # still YAML, without flavors
    # cut anywhere, then a line at column 0 that no YAML context accepts (an indented one may continue a scalar)
    (lambda p: p.write_text(p.read_text()[:len(p.read_text()) // 2] + "\n]: ["), "its MLmodel file cannot be read"),
    (lambda p: p.write_text("- a\n- list\n"), "its MLmodel file cannot be read"),
    (lambda p: p.write_text("flavors:\n  other: {}\n"), "is not a charrnn generator"),
])
def test_a_damaged_registered_model_is_one_clear_error_naming_the_version(project, exported, damage, message):
    """Every file charrnn opens of a registered model; the answer names the version and its place."""
    run, _ = trained_run(project, exported)
    client = tracking.client(tracking.tracking_uri(project))
    (logged,) = client.search_logged_models([client.get_run(run.run_id).info.experiment_id])
    damage(Path(urllib.parse.urlparse(logged.artifact_location).path) / "MLmodel")
    with pytest.raises(registry.RegistryError) as e:
        registry.fetch(project, "models:/charrnn/1", project / "download")
    assert message in str(e.value) and "models:/charrnn/1 (version 1, stored at " in str(e.value)
    assert "charrnn promote" in str(e.value)


def test_a_model_is_registered_once_whatever_runs_it(project, exported):
    trained_run(project, exported)
    _, again = trained_run(project, exported)  # the same model, by hash (e.g. sample re-run)
    client = tracking.client(tracking.tracking_uri(project))
    assert again == "1" and len(client.search_model_versions("name = 'charrnn'")) == 1
    _, other = trained_run(project, exported, model_hash="k" * 64)
    assert other == "2"


def test_promote_by_experiment_name_run_id_or_version(project, exported, monkeypatch):
    trained_run(project, exported, "a" * 64, exp_name="small-lr", monkeypatch=monkeypatch)
    run_b, _ = trained_run(project, exported, "b" * 64, exp_name="big-lr", monkeypatch=monkeypatch)
    assert registry.promote(project, "charrnn", "small-lr", "champion").version == "1"
    assert registry.promote(project, "charrnn", run_b.run_id, "champion").version == "2"
    assert registry.promote(project, "charrnn", "1", "staging").version == "1"
    client = tracking.client(tracking.tracking_uri(project))
    assert str(client.get_model_version_by_alias("charrnn", "champion").version) == "2"
    with pytest.raises(registry.RegistryError, match="no version of the registered model 'charrnn' comes from 'nope'"):
        registry.promote(project, "charrnn", "nope", "champion")
    with pytest.raises(registry.RegistryError, match="alias 'v2' is not usable"):
        registry.promote(project, "charrnn", "1", "v2")
    local, version = registry.resolve(project, "models:/charrnn@champion", project / "download")
    assert version.version == "2" and (local / "MLmodel").is_file()
    assert not (Path.cwd() / "mlflow.db").exists()  # nothing created outside the project's store


def test_registering_into_a_failing_store_only_warns(exported, tmp_path, monkeypatch, caplog):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("CHARRNN_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a-file/mlflow.db")
    (tmp_path / "a-file").write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="charrnn.tracking"):
        run, version = trained_run(tmp_path, exported)
    assert version is None and run.run_id is None
    assert any("tracking is disabled" in r.getMessage() for r in caplog.records)


def test_publish_registers_only_what_belongs_to_the_model(project, exported, monkeypatch):
    """publish() logs and registers the workspace's outputs only when they are this model's."""
    monkeypatch.chdir(project)
    (project / "data").mkdir()
    shutil.copytree(exported[0] / "generator", project / "data" / "generator")
    shutil.copytree(exported[0] / "model", project / "data" / "model")
    (project / "data" / "samples").mkdir()
    (project / "data" / "samples" / "sample-000.txt").write_text("ROMEO: hi\n")
    (project / "metrics").mkdir()
    (project / "metrics" / "perplexity.json").write_text(json.dumps({"loss": 1.0, "bpc": 1.4427, "chars": 4782}))
    (project / "metrics" / "samples.json").write_text(json.dumps({"copied_frac_20": 0.1, "copy_ngram": 20,
                                                                  "ngrams_20": 1443, "sample_chars": 1500}))
    (project / "data" / "raw").mkdir()
    (project / "data" / "raw" / "corpus.txt").write_text("ROMEO: hi\n")
    for about in ("evaluation", "sampling"):
        (project / "data" / f"{about}.json").write_text(json.dumps({"model": "x" * 16}))
    with tracking.train_run(PARAMS, project) as run:
        publishing.publish(run, PARAMS, "y" * 64)  # another model's outputs: nothing
    client = tracking.client(tracking.tracking_uri(project))
    assert "held_out_bpc" not in client.get_run(run.run_id).data.metrics
    assert client.search_registered_models() == []
    with tracking.train_run(PARAMS, project) as run:
        publishing.publish(run, PARAMS, "x" * 64)
    got = client.get_run(run.run_id)
    assert got.data.metrics["held_out_bpc"] == 1.4427 and got.data.metrics["copied_frac_20"] == 0.1
    # constants of the corpus and the settings are no metrics to compare
    assert set(got.data.metrics) == {"held_out_loss", "held_out_bpc", "copied_frac_20"}
    assert got.data.tags["charrnn.held_out_chars"] == "4782"
    (version,) = client.search_model_versions("name = 'charrnn'")
    assert version.tags["charrnn.held_out_bpc"] == "1.4427" and version.run_id == run.run_id
    corpus = "shakespeare " + hashlib.sha256(b"ROMEO: hi\n").hexdigest()[:8]
    assert version.tags["charrnn.corpus"] == corpus
    # the registry's versions table shows a version's description in full, its tags cut off
    assert version.description == f"1.4427 bpc · {corpus}"
    client.update_model_version("charrnn", version.version, description="mine")  # a user's own is kept ...
    with tracking.model_run(PARAMS, project, "x" * 64, stage="evaluate_perplexity") as again:
        publishing.publish(again, PARAMS, "x" * 64)
    assert client.get_model_version("charrnn", version.version).description == "mine"
    client.update_model_version("charrnn", version.version, description=f"1.4427 bpc · {corpus}")  # ... charrnn's not
    (project / "metrics" / "perplexity.json").write_text(json.dumps({"loss": 0.9, "bpc": 1.3}))
    with tracking.model_run(PARAMS, project, "x" * 64, stage="evaluate_perplexity") as again:
        publishing.publish(again, PARAMS, "x" * 64)
    assert client.get_model_version("charrnn", version.version).description == f"1.3000 bpc · {corpus}"


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations_with_the_generators_text(project, exported, monkeypatch):
    trained_run(project, exported)
    registry.promote(project, "charrnn", "1", "champion")
    port = free_port()
    # as the README says: the venv's bin on PATH (MLflow starts `uvicorn` from there)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(project),
           "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    command = [str(Path(sys.prefix) / "bin" / "mlflow"), "models", "serve", "-m", "models:/charrnn@champion",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log = open(project / "serve.log", "w")
    proc = subprocess.Popen(command, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (project / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow models serve did not come up"
                time.sleep(1)
        def invoke(body):
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.load(response)
            except urllib.error.HTTPError as e:
                return e.code, json.load(e)

        for prompts in (["ROMEO:"], ["ROMEO:", "ab"], ["ROMEO:", "ab", "e"]):  # the README's example first
            status, body = invoke({"inputs": prompts, "params": {"num_chars": 25, "seed": 3}})
            assert status == 200 and body["predictions"] == text(exported, prompts, 25, 0.8, 3, 0, 0.9)
        status, body = invoke({"inputs": ["ROMEO:"], "params": {"temperature": 0.0}})
        assert status == 400 and "temperature must be a number from 1e-06 to 100" in body["message"]
        status, body = invoke({"inputs": ["¿¡"]})
        assert status == 400 and "has no character of the model's vocabulary" in body["message"]
    finally:
        stop_group(proc, timeout=30)
        log.close()


# --- the command line against the registry: generate, promote, a store that refuses ----------------

CHARRNN = Path(sys.prefix) / "bin" / "charrnn"


def charrnn(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`charrnn ...` in the project, with a TMPDIR of its own (project/tmpdir) to check for leftovers."""
    (project / "tmpdir").mkdir(exist_ok=True)
    env = {**os.environ, "CHARRNN_TRACKING": "1", "TMPDIR": str(project / "tmpdir"), **(env or {})}
    for name in ("CHARRNN_TMPDIR_OWNER", *(() if "MLFLOW_TRACKING_URI" in env else ("MLFLOW_TRACKING_URI",))):
        env.pop(name, None)
    return subprocess.run([str(CHARRNN), *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)


def one_error(proc: subprocess.CompletedProcess) -> str:
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and "Traceback" not in output and len(errors) == 1, output[-3000:]
    return errors[0]


def test_generate_takes_a_registered_model_uri_as_serve_does(project, exported):
    trained_run(project, exported)
    registry.promote(project, "charrnn", "1", "champion")
    expected = text(exported, ["ROMEO:", "ab"], 12, 0.8, 3, 0, 1.0)
    for uri in ("models:/charrnn/1", "models:/charrnn@champion"):
        proc = charrnn(project, "generate", "--model", uri, "--prompt", "ROMEO:", "--prompt", "ab", "--num-chars", "12",
                       "--seed", "3", "--temperature", "0.8")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout == "\n\n".join(expected) + "\n"
    store = str(project / "mlruns" / "mlflow.db")
    for uri, says in [("models:/charrnn/7", "Model Version"), ("models:/charrnn@nobody", "alias"),
                      ("models:/other/1", "other")]:
        error = one_error(charrnn(project, "generate", "--model", uri, "--prompt", "ab"))
        assert uri in error and says in error and store in error, error
    assert list((project / "tmpdir").iterdir()) == []  # the downloaded copies are gone


def test_promote_takes_ascii_digits_only(project, exported):
    trained_run(project, exported)
    error = one_error(charrnn(project, "promote", "１", "--name", "charrnn"))
    assert "no version of the registered model 'charrnn' comes from '１'" in error
    error = one_error(charrnn(project, "promote", "1", "--name", "char/rnn"))
    assert "--name must be a registered-model name MLflow accepts" in error
    assert charrnn(project, "promote", "1", "--name", "charrnn").returncode == 0


@pytest.mark.parametrize("lock, says", [("IMMEDIATE", "setting the alias 'champion' failed"),
                                        ("EXCLUSIVE", "mlflow.db")])
def test_a_locked_store_says_locked_and_retry(project, exported, lock, says):
    import sqlite3

    trained_run(project, exported)
    db = project / "mlruns" / "mlflow.db"
    holder = sqlite3.connect(db, timeout=0, isolation_level=None)
    holder.execute(f"BEGIN {lock}")
    try:
        error = one_error(charrnn(project, "promote", "1", "--name", "charrnn"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert says in error and "locked by another process" in error and "retry" in error, error
    assert "move the file away" not in error
    client = tracking.client(tracking.tracking_uri(project))
    assert client.get_registered_model("charrnn").aliases == {}


@pytest.fixture
def read_only_copy(tmp_path):
    """A directory that becomes a read-only file system (tmpfs remounted ro) after `fill(source)`."""
    with tmpfs(tmp_path / "ro", "64m") as disk:
        def fill(source: Path) -> Path:
            shutil.copytree(source, disk / "mlruns")
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
            return disk / "mlruns"
        yield fill


def test_promote_into_a_read_only_store_is_one_error(project, exported, read_only_copy):
    trained_run(project, exported)
    store = read_only_copy(project / "mlruns")
    proc = charrnn(project, "promote", "1", "--name", "charrnn", env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"})
    error = one_error(proc)
    assert "setting the alias 'champion' failed" in error and "cannot be written" in error, error
