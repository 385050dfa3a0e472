"""The MLflow Model of a trained model, the registry, `charrnn promote`, and `mlflow models serve`."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import keras
import pytest

from charrnn.core.params import Params
from charrnn.data.vocab import Vocabulary
from charrnn.nn import network
from charrnn.nn.modeldir import ModelConfig
from charrnn.sampling import generation
from charrnn.tracking import publish, registry
from charrnn.tracking import runs as tracking
from tests.servers import free_port

VOCAB = Vocabulary(tuple(sorted(set("\n :ABEMORabcde"))), (1,) * 14)
PARAMS = Params.from_dict({"sample": {"num_chars": 30, "seed": 5, "top_p": 0.9}})
SIGNATURE_PARAMS = {"num_chars": 30, "temperature": 0.8, "seed": 5, "top_k": 0, "top_p": 0.9}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A saved model, its exported generator, and the Generator itself."""
    root = tmp_path_factory.mktemp("exported")
    keras.utils.set_random_seed(0)
    model = network.build(ModelConfig(vocab_size=VOCAB.size, embedding_dim=8, units=16, layers=2,
                                        vocab_fingerprint=VOCAB.fingerprint))
    network.save(model, VOCAB, root / "model")
    generator = generation.Generator(model, VOCAB)
    generation.export(generator, root / "generator")
    return root, generator


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
    assert loaded.predict(prompts) == exported[1].generate_text(prompts, 30, 0.8, 5, 0, 0.9)  # the defaults
    got = loaded.predict(prompts, params={"num_chars": 12, "seed": 2, "temperature": 1.0, "top_k": 3, "top_p": 1.0})
    assert got == exported[1].generate_text(prompts, 12, 1.0, 2, 3, 1.0)


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
    (project / "metrics" / "perplexity.json").write_text(json.dumps({"loss": 1.0, "bpc": 1.4427, "model": "x" * 16}))
    (project / "metrics" / "samples.json").write_text(json.dumps({"copied_frac_20": 0.1, "model": "x" * 16}))
    with tracking.train_run(PARAMS, project) as run:
        publish.publish(run, PARAMS, "y" * 64)  # another model's outputs: nothing
    client = tracking.client(tracking.tracking_uri(project))
    assert "held_out_bpc" not in client.get_run(run.run_id).data.metrics
    assert client.search_registered_models() == []
    with tracking.train_run(PARAMS, project) as run:
        publish.publish(run, PARAMS, "x" * 64)
    got = client.get_run(run.run_id)
    assert got.data.metrics["held_out_bpc"] == 1.4427 and got.data.metrics["copied_frac_20"] == 0.1
    (version,) = client.search_model_versions("name = 'charrnn'")
    assert version.tags["charrnn.held_out_bpc"] == "1.4427" and version.run_id == run.run_id


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
        body = {"inputs": ["ROMEO:", "ab"], "params": {"num_chars": 25, "seed": 3}}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.load(response)["predictions"]
        assert predictions == exported[1].generate_text(["ROMEO:", "ab"], 25, 0.8, 3, 0, 0.9)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
