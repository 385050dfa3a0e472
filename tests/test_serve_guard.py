"""charrnn serve as an attacker and a crowd would meet it, each case a real HTTP request (raw bytes
where a client library would tidy them up) to a real server process: foreign Host and Origin,
non-JSON bodies, the API key, timeouts for headers, bodies and idle connections, half-close,
chunked and pipelined requests, the connection cap and the descriptor limit, the request deadline,
/metrics, and how the process ends."""
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from charrnn.serve import server
from tests.conftest import unavailable
from tests.kit import SERVE_VOCAB, saved_model

pytestmark = pytest.mark.slow
KEY = "s3cr3t-key-for-tests"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return saved_model(tmp_path_factory.mktemp("guard") / "model", SERVE_VOCAB, units=32, layers=2)


@pytest.fixture(scope="module")
def open_server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "open.log"
    with server.spawn(model_dir, "--max-connections", "24", "--header-timeout", "2", "--body-timeout", "2",
                      "--keep-alive", "1", "--request-timeout", "1", "--allowed-host", "box.lan",
                      "--allow-origin", "http://127.0.0.1:9", log_path=log) as spawned:
        yield spawned


@pytest.fixture(scope="module")
def keyed_server(model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "keyed.log"
    with server.spawn(model_dir, log_path=log, env={**os.environ, "CHARRNN_API_KEY": KEY}) as spawned:
        yield spawned, log


def port_of(spawned) -> int:
    return int(spawned.url.rsplit(":", 1)[1])


def exchange(port: int, data: bytes, half_close: bool = False, timeout: float = 10.0, pause: float = 0) -> bytes:
    """Send raw bytes, read until the server closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if pause:
            time.sleep(pause)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            pass
    return out


def post(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}",
             "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def final(answer: bytes) -> bytes:
    """The final answer, past any interim 1xx ones (a server may send them, and clients skip them)."""
    while answer.startswith(b"HTTP/1.1 1"):
        answer = answer.split(b"\r\n\r\n", 1)[1]
    return answer


def status_of(answer: bytes) -> int:
    return int(final(answer).split(b" ", 2)[1])


def body_of(answer: bytes) -> dict:
    return json.loads(final(answer).split(b"\r\n\r\n", 1)[1])


GOOD = b'{"prompt": "ROMEO:", "num_chars": 5}'
JSON = {"Host": "127.0.0.1", "Content-Type": "application/json"}


# --- Host and Origin: a page the user merely visits cannot use the server ----------------------

@pytest.mark.parametrize("host,status", [
    ("127.0.0.1", 200), ("localhost", 200), ("LOCALHOST:80", 200), ("[::1]:8000", 200), ("box.lan", 200),
    ("evil.example", 403), ("localhost.evil.example", 403), ("127.0.0.1.nip.io", 403), ("", 403), (None, 403),
    ("localhost:abc", 403), ("[::1]evil.example", 403), ("[::1", 403), ("127.0.0.1:80:80", 403),  # not host[:port]
])
def test_only_ip_literals_localhost_and_allowed_names_are_answered(open_server, host, status):
    headers = {"Content-Type": "application/json"} | ({} if host is None else {"Host": host})
    if host is None:  # HTTP/1.0 allows a request without Host; it is not this server's either
        request = post("/v1/generate", GOOD, headers).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    else:
        request = post("/v1/generate", GOOD, headers)
    answer = exchange(port_of(open_server), request)
    assert status_of(answer) == status, answer[:300]
    if status == 403:
        assert "is not this server's" in body_of(answer)["error"]


def test_the_model_card_and_stats_are_refused_to_a_rebinding_page(open_server):
    for path in ("/v1/model", "/v1/stats", "/metrics", "/"):
        answer = exchange(port_of(open_server), f"GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
                          .encode())
        assert status_of(answer) == 403 and b"ROMEO" not in answer and b"run_id" not in answer


@pytest.mark.parametrize("origin,status", [
    ("http://127.0.0.1:{port}", 200),  # the server's own page
    ("http://127.0.0.1:9", 200),  # allowed with --allow-origin
    ("http://localhost:{port}", 403),  # another origin, though the same machine
    ("http://127.0.0.1:9999", 403),
    ("null", 403),  # a file:// page or a sandboxed frame
    ("https://evil.example", 403),
])
def test_a_browser_origin_must_be_the_servers_own_or_allowed(open_server, origin, status):
    port = port_of(open_server)  # a browser's Host names the port, as its Origin does
    answer = exchange(port, post("/v1/generate", GOOD, {**JSON, "Host": f"127.0.0.1:{port}",
                                                        "Origin": origin.format(port=port)}))
    assert status_of(answer) == status, answer[:300]
    cors = b"access-control-allow-origin" in answer.lower()
    assert cors == (origin == "http://127.0.0.1:9")  # CORS headers only for an allowed origin


def test_an_allowed_origin_gets_its_preflight_and_others_do_not(open_server):
    port = port_of(open_server)
    preflight = ("OPTIONS /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {o}\r\nAccess-Control-Request-Method: "
                 "POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n")
    allowed = exchange(port, preflight.format(o="http://127.0.0.1:9").encode())
    assert status_of(allowed) == 200 and b"access-control-allow-origin: http://127.0.0.1:9" in allowed.lower()
    refused = exchange(port, preflight.format(o="https://evil.example").encode())
    assert status_of(refused) == 403 and b"access-control-allow" not in refused.lower()


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/jsonp", "application/json-patch+json"])
def test_a_post_body_must_be_declared_json(open_server, content_type):
    """The requests a page may send without a preflight (text/plain, forms) never run a generation."""
    headers = {"Host": "127.0.0.1"} | ({} if content_type is None else {"Content-Type": content_type})
    answer = exchange(port_of(open_server), post("/v1/generate", GOOD, headers))
    assert status_of(answer) == 415 and "Content-Type: application/json" in body_of(answer)["error"]


def test_json_with_a_charset_is_json(open_server):
    answer = exchange(port_of(open_server), post("/v1/generate", GOOD, {**JSON, "Content-Type":
                                                                         "application/json; charset=utf-8"}))
    assert status_of(answer) == 200 and len(body_of(answer)["texts"][0]) == len("ROMEO:") + 5


def test_no_site_may_frame_the_page_or_the_api(open_server):
    for path in ("/", "/v1/model", "/static/playground.js"):
        r = httpx.get(open_server.url + path)
        assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"


def test_the_model_card_names_no_path_of_the_serving_machine(open_server, model_dir):
    card = httpx.get(open_server.url + "/v1/model").text
    assert str(model_dir) not in card and str(model_dir.parent) not in card and "/tmp" not in card
    assert json.loads(card)["model"] == "model"


# --- the API key ------------------------------------------------------------------------------

def test_with_an_api_key_the_api_needs_it_and_the_page_does_not(keyed_server):
    spawned, log = keyed_server
    for path in ("/v1/model", "/v1/stats", "/metrics", "/v1/models"):
        r = httpx.get(spawned.url + path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert r.json() == {"error": "this server needs an API key: send the header Authorization: Bearer <key>"}
    for wrong in ("Bearer nope", f"Basic {KEY}", KEY, f"Bearer {KEY}x", "Bearer", f"Bearer {KEY[:-1]}"):
        assert httpx.get(spawned.url + "/v1/model", headers={"Authorization": wrong}).status_code == 401
    good = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(spawned.url + "/v1/model", headers=good).json()["auth"] is True
    r = httpx.post(spawned.url + "/v1/generate", json={"prompt": "ROMEO:", "num_chars": 5}, headers=good)
    assert r.status_code == 200
    for path in ("/", "/static/playground.js", "/favicon.ico", "/healthz"):
        assert httpx.get(spawned.url + path).status_code == 200, path
    assert KEY not in log.read_text()  # never logged


def test_a_server_on_every_interface_without_a_key_warns(model_dir, tmp_path):
    """Inside a network namespace of the test's own (loopback only), so nothing outside can reach it."""
    if os.geteuid() != 0:
        unavailable("needs root to make a network namespace (ip netns)")
    ns = f"charrnn-warn-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "charrnn.cli", "serve",
                                 "--model", str(model_dir), "--host", "0.0.0.0", "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()  # "listening on ...": the warning came before it
            assert line.startswith(server.LISTENING), line
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert "warning: serving on 0.0.0.0, reachable from other machines, without an API key" in err
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=True)


# --- slow, half-sent and many connections ----------------------------------------------------------

def test_headers_that_do_not_arrive_in_time_are_a_408_and_a_closed_connection(open_server):
    started = time.monotonic()
    answer = exchange(port_of(open_server), b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nConte", timeout=15)
    assert answer.startswith(b"HTTP/1.1 408") and 1.5 < time.monotonic() - started < 8


def test_a_connection_that_sends_nothing_is_closed(open_server):
    started = time.monotonic()
    assert exchange(port_of(open_server), b"", timeout=15).startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 8


def test_a_body_that_does_not_arrive_in_time_is_a_408(open_server):
    head = b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    answer = exchange(port_of(open_server), head + b'{"prompt": ', timeout=15)
    assert status_of(answer) == 408 and "did not arrive within 2 s" in body_of(answer)["error"]


def test_an_idle_kept_alive_connection_is_closed(open_server):
    with socket.create_connection(("127.0.0.1", port_of(open_server)), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while b'{"status":"ok"}' not in answer:
            answer += s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert s.recv(65536) == b""  # closed by the server after --keep-alive 1
        assert time.monotonic() - started < 5


def test_a_request_followed_by_a_half_close_is_answered(open_server):
    request = post("/v1/generate", GOOD, JSON).replace(b"Connection: close\r\n", b"")
    answer = exchange(port_of(open_server), request, half_close=True)
    assert status_of(answer) == 200 and len(body_of(answer)["texts"][0]) == len("ROMEO:") + 5


def test_a_chunked_body_is_read(open_server):
    head = b"POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (GOOD[:7], GOOD[7:20], GOOD[20:])) + b"0\r\n\r\n"
    answer = exchange(port_of(open_server), head + chunks)
    assert status_of(answer) == 200 and len(body_of(answer)["texts"][0]) == len("ROMEO:") + 5


def test_pipelined_requests_are_answered_in_order(open_server):
    generate = post("/v1/generate", GOOD, JSON).replace(b"Connection: close\r\n", b"")
    data = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + generate + \
        b"GET /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    answer = exchange(port_of(open_server), data)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.index(b'"status":"ok"') < answer.index(b'"texts"') < answer.index(b'"requests_served"')


@pytest.mark.parametrize("path", ["/healthz", "/v1/model", "/", "/favicon.ico", "/v1/models"])
def test_head_is_get_without_the_body(open_server, path):
    """Pipelined after a HEAD, the GET's answer comes whole: the HEAD's sent no body bytes."""
    request = f"{{}} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{{}}\r\n"
    answer = exchange(port_of(open_server), (request.format("HEAD", "") +
                                             request.format("GET", "Connection: close\r\n")).encode())
    head, get = answer.split(b"HTTP/1.1 ", 2)[1:]
    assert head.startswith(b"200 ") and get.startswith(b"200 ")
    head_fields, after_head = head.split(b"\r\n\r\n", 1)
    get_fields, body = get.split(b"\r\n\r\n", 1)
    assert after_head == b""
    assert fields(head_fields) == fields(get_fields)
    assert f"content-length: {len(body)}".encode() in get_fields.lower()


def fields(head: bytes) -> list[bytes]:
    """An answer's status line and header fields, but those of the moment and the connection."""
    return sorted(f for f in head.lower().split(b"\r\n") if not f.startswith((b"date:", b"connection:")))


def test_connections_past_the_cap_get_a_503_and_the_server_goes_on(open_server):
    port = port_of(open_server)
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(24)]
    try:
        time.sleep(0.3)
        answer = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(answer) == 503 and b"retry-after: 1" in answer.lower()
        assert "24 connections are open" in body_of(answer)["error"]
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    stats = httpx.get(open_server.url + "/v1/stats").json()
    assert stats["refused"]["connections"] >= 1


def test_at_the_descriptor_limit_idle_connections_never_starve_a_good_client(model_dir, tmp_path):
    """Under `ulimit -n 256`, 400 idle connections: the cap (what the limit leaves once the model is
    loaded, less a reserve) refuses the excess cleanly,
    a good client is answered at once, and no 'Too many open files' flood reaches the log."""
    log = tmp_path / "fd.log"

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    command = [sys.executable, "-m", "charrnn.cli", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
               "--port", "0", "--header-timeout", "30"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=out, text=True, preexec_fn=low_limit)
        try:
            line = proc.stdout.readline()
            assert line.startswith(server.LISTENING), log.read_text()
            url = line[len(server.LISTENING):].strip().rstrip("/")
            port = int(url.rsplit(":", 1)[1])
            held = []
            for _ in range(400):
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                except OSError:
                    break
            time.sleep(0.5)
            started = time.monotonic()
            r = httpx.get(url + "/healthz", timeout=10)
            while r.status_code == 503 and time.monotonic() - started < 10:  # the cap: a clean refusal, retry
                for s in held[:50]:
                    s.close()
                held = held[50:]
                r = httpx.get(url + "/healthz", timeout=10)
            assert r.status_code == 200 and time.monotonic() - started < 10
            for s in held:
                s.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    assert "Too many open files" not in log.read_text()


# --- deadlines, busy answers, metrics ----------------------------------------------------------------

def test_a_request_past_its_deadline_ends_with_a_504(open_server):
    big = {"prompts": ["ROMEO:"] * 64, "num_chars": 10_000}
    before = httpx.get(open_server.url + "/v1/stats").json()["requests_timed_out"]
    started = time.monotonic()
    r = httpx.post(open_server.url + "/v1/generate", json=big, timeout=60)
    assert r.status_code == 504 and "--request-timeout (1 s)" in r.json()["error"]
    assert time.monotonic() - started < 10
    with httpx.stream("POST", open_server.url + "/v1/generate", timeout=60, json={**big, "stream": True}) as streamed:
        text = "".join(streamed.iter_text())
    assert streamed.status_code == 200 and "event: error" in text and "--request-timeout" in text
    stats = httpx.get(open_server.url + "/v1/stats").json()
    assert stats["requests_timed_out"] - before == 2 and stats["rows"] == 0


def test_metrics_are_prometheus_text(open_server):
    from prometheus_client.parser import text_string_to_metric_families

    httpx.post(open_server.url + "/v1/generate", json={"prompt": "ROMEO:", "num_chars": 3})
    r = httpx.get(open_server.url + "/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {"charrnn_requests", "charrnn_request_seconds", "charrnn_requests_waiting", "charrnn_batch_rows",
            "charrnn_chars_generated", "charrnn_generations", "charrnn_refused"} <= set(families)
    served = [s for s in families["charrnn_requests"].samples
              if s.labels == {"route": "/v1/generate", "status": "200"}]
    assert served and served[0].value >= 1
    assert any(s.name == "charrnn_request_seconds_bucket" for s in families["charrnn_request_seconds"].samples)
    assert next(iter(families["charrnn_chars_generated"].samples)).value >= 3


# --- how the process ends --------------------------------------------------------------------------

@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_end_the_server_with_their_status_and_leave_no_file(model_dir, tmp_path, sig, status):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("CHARRNN_TMPDIR_OWNER", None)
    # a background job of a non-interactive shell ignores SIGINT, as the report had it
    proc = subprocess.Popen([sys.executable, "-c", "import signal, sys, runpy; signal.signal(signal.SIGINT, "
                             "signal.SIG_IGN) if sys.argv[1] == 'ign' else None; sys.argv = sys.argv[1:]; "
                             "runpy.run_module('charrnn.cli', run_name='__main__')",
                             "ign" if sig == signal.SIGINT else "keep", "serve", "--model", str(model_dir),
                             "--host", "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    line = proc.stdout.readline()
    assert line.startswith(server.LISTENING)
    httpx.post(line[len(server.LISTENING):].strip() + "v1/generate", json={"prompt": "ROMEO:", "num_chars": 5})
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err[-2000:]
    assert "Traceback" not in err
    assert list(tmp.iterdir()) == []  # autograph's files, the server's own: all gone
