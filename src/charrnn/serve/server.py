"""`charrnn serve`: the command, and the HTTP server under the app.

    charrnn serve --model data/model                 (or --model models:/charrnn@champion)

Bound to 127.0.0.1:8000 unless --host / --port say otherwise (--port 0: a free port; the line
`charrnn serve: listening on http://HOST:PORT/` on stdout says which, once it accepts).

uvicorn runs the app with one addition to its HTTP/1.1 protocol (`protocol_class`), so that no
client can hold the server's connections: a connection must send its request's headers within
--header-timeout (a half-sent request is closed), an idle kept-alive one is closed after
--keep-alive seconds, at most --max-connections are open at once (fewer where the process's
file-descriptor limit says so, with room to spare; one more is answered 503 with Retry-After and
closed), and a request followed by a half-close (`nc -N`) is still answered, while one whose client
went away is cancelled (see `Protocol.eof_received`). A server that cannot start
says why in one `error:` line, exit status 1; Ctrl-C ends it with 130 and SIGTERM with 143.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

from charrnn.core import paths
from charrnn.core.stage import Terminated
from charrnn.serve.options import ServeError, ServeOptions

LISTENING = "charrnn serve: listening on "
PEER_CHECK_S = 0.2  # after a client's FIN: how often to look whether its socket answered with a reset
TCP_CLOSE = 7  # tcpi_state of a connection the peer reset (linux/tcp_states.h)
# Descriptors: asyncio accepts up to `backlog` pending connections each turn of its loop; a
# connection's protocol sees it two turns later, and a refused one is closed a turn after that, so
# in a flood up to ACCEPTS_IN_FLIGHT descriptors are open beyond the cap (a CI run under load saw
# one batch's allowance overrun). Each refused one lingers a moment to read its 503; with a small
# accept batch and a bounded number lingering, the connections never take the process to its
# descriptor limit.
RESERVED_FDS = 64  # kept free beyond those open at start: files read later, logs, the loop's own
ACCEPT_BATCH = 32  # uvicorn's backlog: the listen queue, and the most connections asyncio accepts at once
ACCEPTS_IN_FLIGHT = 4 * ACCEPT_BATCH  # accepted, not yet refused or not yet closed
MAX_LINGERING = 16  # refused connections given REFUSED_LINGER_S to read their answer; past that, closed at once
REFUSED_LINGER_S = 1.0
LOOPBACK = ("127.0.0.1", "::1", "localhost")

log = logging.getLogger("charrnn.serve")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `serve` to the CLI's subcommands (charrnn.cli.parser)."""
    s = subparsers.add_parser("serve", help="serve a model over HTTP: JSON API, OpenAI-compatible completions, "
                                            "streaming, a playground page")
    add_options(s)
    s.set_defaults(func=cmd_serve)
    return s


def add_options(p: argparse.ArgumentParser) -> None:
    d = ServeOptions()
    p.add_argument("--model", default=str(paths.MODEL),
                   help="model directory or registered model, e.g. models:/charrnn@champion (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0: any free port)")
    p.add_argument("--max-chars", type=int, default=d.max_chars, help="refuse num_chars above this (default: %(default)s)")
    p.add_argument("--max-prompts", type=int, default=d.max_prompts, help="prompts per request (default: %(default)s)")
    p.add_argument("--max-prompt-chars", type=int, default=d.max_prompt_chars,
                   help="characters per prompt (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="rows generated together (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=d.chunk,
                   help="characters per batched step: how often requests can join, and the streaming "
                        "granularity (default: %(default)s)")
    p.add_argument("--no-batching", dest="batching", action="store_false",
                   help="one request at a time (the baseline of bench/serve.py)")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout,
                   help="seconds from a request's arrival to the end of its answer; then it ends with an error "
                        "(default: %(default)s)")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout,
                   help="seconds a connection may take to send a request's headers (default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout,
                   help="seconds a request may take to send its body (default: %(default)s)")
    p.add_argument("--keep-alive", type=float, default=d.keep_alive,
                   help="seconds an idle kept-alive connection stays open (default: %(default)s)")
    p.add_argument("--max-connections", type=int, default=d.max_connections,
                   help="open connections at most; more are refused with 503 (default: %(default)s)")
    p.add_argument("--allowed-host", dest="allowed_hosts", action="append", default=[], metavar="NAME",
                   help="a Host name to answer besides IP addresses and localhost (repeatable)")
    p.add_argument("--allow-origin", dest="allowed_origins", action="append", default=[], metavar="ORIGIN",
                   help="a web origin whose pages may call the API, e.g. https://app.example.com (repeatable)")
    p.add_argument("--api-key", default=None,
                   help="require Authorization: Bearer KEY on the API (default: $CHARRNN_API_KEY, else none)")


def options_of(args) -> ServeOptions:
    return ServeOptions(
        max_chars=args.max_chars, max_prompts=args.max_prompts, max_prompt_chars=args.max_prompt_chars,
        max_batch=args.max_batch, chunk=args.chunk, batching=args.batching, request_timeout=args.request_timeout,
        body_timeout=args.body_timeout, header_timeout=args.header_timeout, keep_alive=args.keep_alive,
        max_connections=args.max_connections, allowed_hosts=tuple(args.allowed_hosts),
        allowed_origins=tuple(args.allowed_origins),
        api_key=args.api_key if args.api_key is not None else os.environ.get("CHARRNN_API_KEY") or None,
    ).check()


def cmd_serve(args) -> None:
    if not 0 <= args.port <= 65535:
        raise ServeError(f"--port must be from 0 to 65535, got {args.port}")
    if not args.host.strip():
        raise ServeError("--host must name an address, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                         "interface); an empty host is not one")
    options = options_of(args)
    from charrnn.sampling.generation import configure_threads
    from charrnn.serve.app import create_app
    from charrnn.serve.served import load

    configure_threads()
    sock = listening_socket(args.host, args.port)
    if options.api_key is None and args.host not in LOOPBACK:
        print(f"warning: serving on {args.host}, reachable from other machines, without an API key: anyone who "
              "can reach it can generate; set --api-key or CHARRNN_API_KEY", file=sys.stderr, flush=True)
    run(create_app(load(args.model), options), sock, args.host, options)


def run(app, sock: socket.socket, host: str, options: ServeOptions) -> None:
    """Serve `app` on `sock` with uvicorn until Ctrl-C / SIGTERM; print the address once it accepts."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                bound = self.servers[0].sockets[0].getsockname()[1]
                print(f"{LISTENING}http://{'[' + host + ']' if ':' in host else host}:{bound}/", flush=True)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    server = Server(uvicorn.Config(app, http=protocol_class(options, app), timeout_keep_alive=options.keep_alive,
                                   timeout_graceful_shutdown=5, backlog=ACCEPT_BATCH))
    server.run([sock])
    # uvicorn re-raises the signal it stopped on; where it was ignored (a background job's SIGINT),
    # end as a signal would have ended it
    if signal.SIGTERM in server._captured_signals:
        raise Terminated()
    if signal.SIGINT in server._captured_signals:
        raise KeyboardInterrupt()


def connection_cap(options: ServeOptions) -> int:
    """--max-connections, or fewer: what the descriptor limit leaves once the model is loaded
    (TensorFlow holds a hundred or so) and a reserve is kept."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return options.max_connections
    spare = soft - open_descriptors() - RESERVED_FDS - ACCEPTS_IN_FLIGHT - MAX_LINGERING
    return max(1, min(options.max_connections, spare))


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: count none, the reserve still applies
        return 0


def protocol_class(options: ServeOptions, app):
    """uvicorn's HTTP/1.1 protocol with a header timeout, a connection cap and half-close
    handling (see the module docstring)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    cap = connection_cap(options)
    body = json.dumps({"error": f"busy: {cap} connections are open; try again shortly"}).encode()
    refusal = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
               b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    late = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"

    lingering: set = set()  # refused connections that are given a moment to read their 503

    class Protocol(H11Protocol):
        header_timer = None
        refused = False

        def connection_made(self, transport):
            super().connection_made(transport)
            if len(self.connections) > cap:
                self._refuse(transport)
                return
            self._arm()

        def _refuse(self, transport):
            """Answer 503, stop sending, and close a moment later: closed at once with its request
            unread, a connection is reset before the client reads the answer. Past a few dozen
            such moments (a flood), close at once: descriptors matter more than manners."""
            self.refused = True
            app.state.policy.refused["connections"] += 1
            transport.write(refusal)
            if len(lingering) >= MAX_LINGERING or not transport.can_write_eof():
                transport.close()
                return
            transport.write_eof()
            lingering.add(transport)

            def close():
                lingering.discard(transport)
                transport.close()

            self.loop.call_later(REFUSED_LINGER_S, close)

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return  # a refused connection's request is never read
            if self.header_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of a request: its headers must follow in time
            before = self.cycle
            super().data_received(data)
            if self.cycle is not before:  # a request's headers have arrived
                self._disarm()

        def eof_received(self):
            if self.refused:
                return None
            if self.cycle is not None and not self.cycle.response_complete:
                try:
                    self.conn.receive_data(b"")  # the client is done sending: answer, then close
                except h11.RemoteProtocolError:
                    return None
                self.cycle.keep_alive = False
                self._probe_peer()
                return True  # keep the transport open for the answer
            return None

        def _probe_peer(self):
            """A FIN reads the same whether the client half-closed and waits for its answer or went
            away. Bytes sent tell them apart: a closed socket answers them with a reset. Before the
            answer starts, the only bytes HTTP/1.1 allows are an interim 1xx, which clients skip."""
            if not self.cycle.response_started and self.conn.their_http_version == b"1.1":
                interim = h11.InformationalResponse(status_code=102, headers=[], reason=b"Processing")
                self.transport.write(self.conn.send(interim))
                self.loop.call_later(PEER_CHECK_S, self._check_peer)

        def _check_peer(self):
            if self.transport.is_closing() or self.cycle is None or self.cycle.response_complete:
                return
            sock = self.transport.get_extra_info("socket")
            if sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_CLOSE:
                self.transport.close()  # the client went away: its request is cancelled
                return
            self.loop.call_later(PEER_CHECK_S, self._check_peer)

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self):
            self._disarm()
            self.header_timer = self.loop.call_later(options.header_timeout, self._too_slow)

        def _disarm(self):
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _too_slow(self):
            self.header_timer = None
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                app.state.policy.refused["header_timeout"] += 1
                self.transport.write(late)
                self.transport.close()

    return Protocol


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port for uvicorn, or a ServeError saying why not."""
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on the connections it accepts only
    # when the socket says it is TCP; without it, every answer on a kept-alive connection waited
    # ~40 ms for a delayed ACK (Nagle's algorithm)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:  # uvicorn would log it and exit 3; here it is one `error:` line like any other
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


class Spawned(NamedTuple):
    url: str  # http://127.0.0.1:PORT, no trailing slash
    process: subprocess.Popen


@contextmanager
def spawn(model: str | Path, *options: str, log_path: Path | None = None, timeout: float = 180,
          env: dict | None = None) -> Iterator[Spawned]:
    """A real server in a child process on 127.0.0.1 and a free port, for tests and benchmarks;
    SIGTERM, then SIGKILL, on the way out. Its log (stdout and stderr) goes to `log_path`."""
    command = [sys.executable, "-m", "charrnn.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
               "--port", "0", *options]
    logfile = open(log_path or "/dev/null", "w", encoding="utf-8")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=logfile, text=True, bufsize=1, env=env)
    found: list[str] = []
    ready = threading.Event()

    def drain():  # read stdout to the end, so a chatty server never blocks on a full pipe
        for line in proc.stdout:
            logfile.write(line)
            logfile.flush()
            if line.startswith(LISTENING) and not found:
                found.append(line[len(LISTENING):].strip().rstrip("/"))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2) and time.monotonic() < deadline:
            pass
        if not found:
            raise ServeError(f"the server did not start within {timeout:.0f} s (exit status {proc.poll()}); "
                             f"see {log_path or 'its log (pass log_path)'}")
        yield Spawned(found[0], proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logfile.close()
