import os

from charrnn.core.quiet import quiet_tensorflow

# TensorFlow without its C++ log lines, on the CPU, before anything imports it; the stages and
# commands the tests start inherit the same environment.
quiet_tensorflow()
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("CHARRNN_TRACKING", "0")  # tests that want MLflow turn it on explicitly

import pytest  # noqa: E402

from tests import servers  # noqa: E402


@pytest.fixture
def make_records(tmp_path):
    """A corpus -> vocabulary -> records factory: make_records(text, seq_length=20,
    val_fraction=0.1) writes tmp_path/corpus.txt and tmp_path/rec, and returns (records dir, vocab)."""
    from charrnn.data import records
    from charrnn.data.vocab import Vocabulary, count_chars

    def make(text: str, seq_length: int = 20, val_fraction: float = 0.1):
        (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
        vocab = Vocabulary.from_counts(count_chars([text]))
        records.write_records(tmp_path / "corpus.txt", vocab, tmp_path / "rec", seq_length=seq_length,
                              val_fraction=val_fraction)
        return tmp_path / "rec", vocab

    return make


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    """An initialised, empty sqlite MLflow store to copy: creating its tables takes seconds, a copy does not."""
    from charrnn.tracking import runs

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    runs.client(f"sqlite:///{path}").search_experiments()
    return path


def unavailable(reason: str) -> None:
    """A test that cannot run here: skipped, saying why, on a developer's machine; a failure in CI
    (CI=true), where everything the suite needs is installed and the tests run as root."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason} (CI must run this test)")
    pytest.skip(reason)


BODY = b"To be, or not to be\r\n"  # /corpus.txt on the https fixture's servers


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return servers.self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https(tls, monkeypatch):
    """An https server (trusted by this test) serving /corpus.txt, and a second one on another port."""
    from charrnn.data import corpus

    monkeypatch.setenv("SSL_CERT_FILE", str(tls[0]))
    for name in (corpus.TOKEN_VARIABLE, "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tls[0].parent))  # no ~/.netrc of the machine's
    main, other = servers.Server(tls), servers.Server(tls)
    main.serve("/corpus.txt", BODY)
    other.serve("/corpus.txt", BODY)
    yield {"url": main.url, "host": main.host, "server": main, "other": other}
    main.close()
    other.close()
