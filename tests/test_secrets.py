"""Secrets never leave the process unmasked: presigned S3 and GCS URLs, API keys and user info in
data.source go through the download stage (a real HTTPS server), a training run's MLflow params
and tags, log lines and error messages; then the MLflow store (the database file itself) and every
line of output are searched for them."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from charrnn.core.params import Params
from charrnn.tracking import runs as tracking
from tests import servers
from tests.project import write_params

ROOT = Path(__file__).resolve().parents[1]
SECRETS = ["AKIASECRETCRED", "S3SIGNATURE0123", "GCSCREDENTIAL", "GCSSIGNATURE4567", "APIKEY8910", "APIKEY1112",
           "hunter2", "T0KEN99"]
BODY = b"To be, or not to be.\n" * 20


def sources(base: str) -> list[str]:
    host = base.removeprefix("https://")
    return [
        f"{base}/corpus.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIASECRETCRED%2F20261123%2Fus-east-1"
        f"&X-Amz-Date=20261123T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=S3SIGNATURE0123",
        f"{base}/corpus.txt?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=GCSCREDENTIAL&X-Goog-Date=20261123T0"
        f"&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature=GCSSIGNATURE4567",
        f"{base}/corpus.txt?apikey=APIKEY8910",
        f"{base}/corpus.txt?api_key=APIKEY1112",
        f"https://alice:hunter2@{host}/corpus.txt",
        f"{base}/missing.txt?access_token=T0KEN99",  # a 404: the error message holds the URL
    ]


@pytest.fixture
def https(tmp_path, monkeypatch):
    cert = servers.self_signed_cert(tmp_path)
    server = servers.Server(cert)
    server.serve("/corpus.txt", BODY)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    yield server
    server.close()


def test_no_secret_reaches_the_store_or_any_output(https, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_TRACKING", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    outputs = []
    for i, source in enumerate(sources(https.url)):
        work = tmp_path / f"p{i}"
        work.mkdir()
        sha = hashlib.sha256(BODY).hexdigest() if "missing" not in source else None
        write_params(work, {"data": {"source": source, "sha256": sha}})
        done = subprocess.run([sys.executable, str(ROOT / "stages" / "download.py")], cwd=work, text=True,
                              capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        outputs.append(done.stdout + done.stderr)
        assert ("missing" in source) == (done.returncode == 1), outputs[-1]
        assert "warning: data.source holds what looks like a credential" in outputs[-1]
        # the same params in a training run: params, a tag, and a warning log line carrying the URL
        with tracking.train_run(Params.from_dict({"data": {"source": source}}), tmp_path,
                                tags={"charrnn.note": f"fetched {source}"}) as run:
            run.set_tags({"charrnn.source": source})
            tracking.log.warning("fetched %s", source)
        assert run.run_id is not None
    # a URL holding a space: the HTTP library's own exception text carries the raw query
    write_params(tmp_path, {"data": {"source": f"{https.url}/a b.txt?sig=S3SIGNATURE0123&token=T0KEN99"}})
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "download.py")], cwd=tmp_path, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    outputs.append(done.stdout + done.stderr)
    assert done.returncode == 1 and "error: download failed" in outputs[-1]

    store = (tmp_path / "mlruns" / "mlflow.db").read_bytes()
    artifacts = b"".join(p.read_bytes() for p in (tmp_path / "mlruns").rglob("*") if p.is_file())
    everything = "\n".join(outputs)
    for secret in SECRETS:
        assert secret.encode() not in store, f"{secret} is in the MLflow database"
        assert secret.encode() not in artifacts, f"{secret} is in the MLflow artifacts"
        assert secret not in everything, f"{secret} was printed"
    client = tracking.client(tracking.tracking_uri(tmp_path))
    logged = client.search_runs([client.get_experiment_by_name("charrnn").experiment_id])
    assert {r.data.params["data.source"].split("?")[0] for r in logged} >= {f"{https.url}/corpus.txt"}
    assert any("X-Amz-Signature=***" in r.data.params["data.source"] for r in logged)


def test_the_warning_goes_to_logs_masked(caplog):
    import logging

    from charrnn.core.redact import mask_log_records

    mask_log_records()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("anything").warning("GET %s failed", "https://u:hunter2@h/x?X-Amz-Signature=S3SIGNATURE0123")
        try:
            raise OSError("https://h/x?token=T0KEN99")
        except OSError:
            logging.getLogger("anything").exception("boom")
    text = caplog.text
    assert "hunter2" not in text and "S3SIGNATURE0123" not in text and "T0KEN99" not in text
    assert "https://***@h/x?X-Amz-Signature=***" in text
