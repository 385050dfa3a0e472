"""`charrnn serve`: a trained model over HTTP, with dynamic batching and streaming.

    charrnn serve --model data/model                 (or --model models:/charrnn@champion)

Bound to 127.0.0.1:8000 unless --host / --port say otherwise (--port 0: a free port; the line
`charrnn serve: listening on http://HOST:PORT/` on stdout says which, once it accepts).

Endpoints
- GET  /             the playground page (charrnn/web/index.html: one static file, no external URL)
- GET  /healthz      {"status": "ok"}
- GET  /v1/model     the model card: corpus, vocabulary size, architecture, sampling defaults,
                     held-out loss and bits per character, the MLflow run and registered version
                     it came from (null where unknown: the store is only read, never written), limits
- GET  /v1/stats     the batcher's counters: rows generating, requests waiting, requests served, ...
- POST /v1/generate  {"prompt": "ROMEO:"} or {"prompts": ["ROMEO:", "JULIET:"]}, and optionally
                     num_chars, temperature, top_k, top_p, seed (default: the model's sample params
                     where known, else 200, 0.8, 0, 1.0, 0) and stream (default false). Answer:
                     {"texts": [prompt + generated text, ...], "model", "num_chars", "temperature",
                      "top_k", "top_p", "seed", "warnings": [characters read as [UNK], ...]}

Streaming. With "stream": true the answer is text/event-stream: one event per prompt per chunk,
the first event of each prompt being the prompt itself, so that joining the `text`s of index i
gives texts[i] of the plain answer; then one `done` event with the rest of the plain answer:

    data: {"index": 0, "text": "ROMEO:"}

    data: {"index": 0, "text": "\\nWhat light through yonder"}
    ...
    event: done
    data: {"model": "data/model", "num_chars": 200, ..., "warnings": []}

A failure after the first event ends the stream with `event: error` and data {"error": "..."}.
A client that goes away (mid-stream, or while waiting for a plain answer) frees its rows at the
next chunk.

Batching: charrnn.batching (one worker thread merges the requests that arrive while it is busy).
The model and its card: charrnn.modelcard.

Errors. Every error is JSON {"error": "<one clear line>"}: 400 for a body that is not UTF-8 JSON,
413 over 1 MB, 422 for a body the rules reject (generation.check_prompts and check_settings,
the rules of the sample.* params; unknown fields are named), 404 / 405 for other routes and
methods, 503 when too many requests wait. Anything else is a bug: 500 with a masked message
(charrnn.redact), its traceback logged, masked too; the server goes on. A server that cannot
start (bad options, no model, a port in use) says why in one `error:` line, exit status 1.
"""

import argparse
import asyncio
import difflib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, NamedTuple

from charrnn.core import paths
from charrnn.core.errors import CharrnnError
from charrnn.core.params import MAX_NUM_CHARS, MAX_PROMPTS
from charrnn.core.redact import format_exception, redact
from charrnn.serve.batching import DEFAULT_CHUNK, MAX_BATCH, Batcher, Busy, Cancelled, Failed, Job
from charrnn.serve.served import FALLBACK_DEFAULTS, SETTING_TYPES, Served, load

MAX_BODY_BYTES = 1_000_000
DEFAULT_MAX_CHARS = 10_000
DEFAULT_MAX_PROMPT_CHARS = 10_000  # a prompt is run through the model before anyone's next step
DISCONNECT_POLL_S = 0.5
MAX_ERROR_CHARS = 1_000
FIELDS = ("prompt", "prompts", *FALLBACK_DEFAULTS, "stream")
LISTENING = "charrnn serve: listening on "

log = logging.getLogger("charrnn.serve")


class ServeError(CharrnnError):
    """A server that cannot start: bad options, a port in use."""


class ApiError(Exception):
    """A request the service refuses: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --- requests -----------------------------------------------------------------------------------


@dataclass
class Limits:
    max_chars: int = DEFAULT_MAX_CHARS
    max_prompts: int = MAX_BATCH
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS


async def read_body(request) -> bytes:
    """The request's body, or a 413 as soon as it passes MAX_BODY_BYTES (whatever Content-Length
    says). Starlette's own limit answers in plain text; every error here is JSON."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES:,} bytes")
    return bytes(body)


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text: send JSON such as {\"prompt\": \"ROMEO:\"}") from None
    except ValueError as e:  # json.JSONDecodeError
        raise ApiError(400, f"the body is not valid JSON ({e}): send e.g. {{\"prompt\": \"ROMEO:\"}}") from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply to be a request") from None
    if not isinstance(body, dict):
        raise ApiError(422, f"the body must be a JSON object such as {{\"prompt\": \"ROMEO:\"}}, got {_short(body)}")
    return body


def read_request(body: dict, served: Served, limits: Limits) -> tuple[list[str], dict, bool, list[str]]:
    """(prompts, settings, stream, warnings) of a request body, or an ApiError (422) saying what
    is wrong, by the rules of the sample.* params."""
    from charrnn.sampling.generation import GenerationError, check_prompts, check_settings

    unknown = [k for k in body if k not in FIELDS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], FIELDS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(FIELDS)}"
        raise ApiError(422, f"unknown field {_short(unknown[0])} ({hint})")
    prompts = _prompts(body, limits)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(422, f"stream must be true or false, got {_short(stream)}")
    settings = {**served.defaults, **{k: body[k] for k in FALLBACK_DEFAULTS if k in body}}
    try:
        check_settings(max_chars=limits.max_chars, **settings)
        warnings = check_prompts(served.vocab, prompts)
    except GenerationError as e:
        raise ApiError(422, str(e).replace("--max-chars", "the server's --max-chars")) from None
    return prompts, {k: SETTING_TYPES[k](v) for k, v in settings.items()}, stream, warnings


def _prompts(body: dict, limits: Limits) -> list[str]:
    if ("prompt" in body) == ("prompts" in body):
        raise ApiError(422, "give either \"prompt\": \"...\" or \"prompts\": [\"...\", ...]"
                       + (", not both" if "prompt" in body else ""))
    if "prompt" in body:
        if not isinstance(body["prompt"], str):
            raise ApiError(422, f"prompt must be a string, got {_short(body['prompt'])}")
        prompts = [body["prompt"]]
    else:
        prompts = body["prompts"]
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ApiError(422, f"prompts must be a list of strings, got {_short(prompts)}")
    if len(prompts) > limits.max_prompts:
        raise ApiError(422, f"at most {limits.max_prompts} prompts per request, got {len(prompts)}")
    for i, prompt in enumerate(prompts):
        if len(prompt) > limits.max_prompt_chars:
            raise ApiError(422, f"prompt {i} has {len(prompt):,} characters; at most {limits.max_prompt_chars:,} "
                                "(the server's --max-prompt-chars)")
    return prompts


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- the app ------------------------------------------------------------------------------------


def create_app(model: str | Path | Served, max_chars: int = DEFAULT_MAX_CHARS, max_prompts: int = MAX_BATCH,
               max_batch: int = MAX_BATCH, chunk: int = DEFAULT_CHUNK, batching: bool = True,
               max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS):
    """The FastAPI app serving `model` (a model directory, models:/ URI, or a loaded Served).
    Its batcher runs from the app's startup to its shutdown (use TestClient as a context
    manager)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.sse import EventSourceResponse
    from starlette.exceptions import HTTPException

    check_options(max_chars, max_prompts, max_batch, chunk, batching, max_prompt_chars)
    served = model if isinstance(model, Served) else load(str(model))
    limits = Limits(max_chars, max_prompts, max_prompt_chars)
    defaults = {**served.defaults, "num_chars": min(served.defaults["num_chars"], max_chars)}
    served = Served(served.name, served.engine, served.vocab, defaults, served.card)
    batcher = Batcher(served.engine, max_batch, chunk, batching)
    page = resources.files("charrnn.serve").joinpath("web/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            batcher.close()

    app = FastAPI(title="charrnn", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.served = served

    def error(status: int, message: str) -> JSONResponse:
        clean = redact(message).encode("utf-8", "backslashreplace").decode("utf-8")
        return JSONResponse({"error": clean[:MAX_ERROR_CHARS]}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        if e.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, e)
        return error(e.status, str(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        log.error("%s %s failed:\n%s", request.method, request.url.path, format_exception(e))
        return error(500, f"internal error: {type(e).__name__}: {e}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground():
        return page

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_card():
        return {**served.card, "sampling_defaults": served.defaults,
                "limits": {"max_chars": max_chars, "max_prompts": max_prompts, "max_prompt_chars": max_prompt_chars,
                           "max_batch": max_batch, "max_body_bytes": MAX_BODY_BYTES}}

    @app.get("/v1/stats")
    async def stats():
        return batcher.stats()

    @app.post("/v1/generate")
    async def generate(request: Request):
        prompts, settings, stream, warnings = read_request(parse_body(await read_body(request)), served, limits)
        job = Job(prompts, settings)
        try:
            batcher.submit(job)
        except Busy as e:
            raise ApiError(503, str(e)) from None
        summary = {"model": served.name, **settings, "warnings": warnings}
        if stream:
            return EventSourceResponse(_events(job, summary))
        return {"texts": await _collect(job, request), **summary}

    return app


async def _collect(job: Job, request) -> list[str]:
    """The job's whole texts; the job is cancelled if the client goes away first."""
    async def watch():
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)
        job.cancel()

    watcher = asyncio.create_task(watch())
    texts = list(job.prompts)
    try:
        async for pieces in job.pieces():
            texts = [t + p for t, p in zip(texts, pieces)]
    except Failed as e:
        raise ApiError(500, str(e)) from None
    except Cancelled:
        raise ApiError(499, "cancelled: the client went away") from None  # nobody reads this answer
    finally:
        watcher.cancel()
        job.cancel()  # a no-op once done; frees the rows if we are cancelled ourselves
    return texts


async def _events(job: Job, summary: dict):
    from fastapi.sse import format_sse_event

    def event(data: dict, name: str | None = None) -> bytes:
        return format_sse_event(data_str=json.dumps(data, ensure_ascii=False), event=name)

    try:
        for i, prompt in enumerate(job.prompts):
            yield event({"index": i, "text": prompt})
        async for pieces in job.pieces():
            for i, piece in enumerate(pieces):
                yield event({"index": i, "text": piece})
        yield event(summary, "done")
    except (Failed, Cancelled) as e:
        yield event({"error": str(e) or "cancelled"}, "error")
    finally:
        job.cancel()  # the client went away (Starlette cancels this generator), or a no-op


# --- the command --------------------------------------------------------------------------------


def check_options(max_chars: int, max_prompts: int, max_batch: int, chunk: int, batching: bool,
                  max_prompt_chars: int) -> None:
    wrong = []
    if not 1 <= max_chars <= MAX_NUM_CHARS:
        wrong.append(f"--max-chars must be from 1 to {MAX_NUM_CHARS:,}, got {max_chars}")
    if not 1 <= max_batch <= MAX_BATCH:
        wrong.append(f"--max-batch must be from 1 to {MAX_BATCH} (generation is tested batch-invariant up to "
                     f"{MAX_BATCH} rows), got {max_batch}")
    if not 1 <= max_prompts <= MAX_PROMPTS:
        wrong.append(f"--max-prompts must be from 1 to {MAX_PROMPTS}, got {max_prompts}")
    elif batching and max_prompts > max_batch:
        wrong.append(f"--max-prompts ({max_prompts}) must not exceed --max-batch ({max_batch}): a request's rows "
                     "join the batch together")
    if chunk < 1:
        wrong.append(f"--chunk must be at least 1, got {chunk}")
    if max_prompt_chars < 1:
        wrong.append(f"--max-prompt-chars must be at least 1, got {max_prompt_chars}")
    if wrong:
        raise ServeError("; ".join(wrong))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `serve` to the CLI's subcommands (charrnn.cli.parser)."""
    s = subparsers.add_parser("serve", help="serve a model over HTTP: JSON API, streaming, a playground page")
    add_options(s)
    s.set_defaults(func=cmd_serve)
    return s


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(paths.MODEL),
                   help="model directory or registered model, e.g. models:/charrnn@champion (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0: any free port)")
    p.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS,
                   help="refuse num_chars above this (default: %(default)s)")
    p.add_argument("--max-prompts", type=int, default=MAX_BATCH, help="prompts per request (default: %(default)s)")
    p.add_argument("--max-prompt-chars", type=int, default=DEFAULT_MAX_PROMPT_CHARS,
                   help="characters per prompt (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=MAX_BATCH,
                   help=f"rows generated together, at most {MAX_BATCH} (default: %(default)s)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                   help="characters per batched step: how often requests can join, and the streaming "
                        "granularity (default: %(default)s)")
    p.add_argument("--no-batching", dest="batching", action="store_false",
                   help="one request at a time (the baseline of bench/serve.py)")


def cmd_serve(args) -> None:
    if not 0 <= args.port <= 65535:
        raise ServeError(f"--port must be from 0 to 65535, got {args.port}")
    check_options(args.max_chars, args.max_prompts, args.max_batch, args.chunk, args.batching, args.max_prompt_chars)
    app = create_app(load(args.model), max_chars=args.max_chars, max_prompts=args.max_prompts,
                     max_batch=args.max_batch, chunk=args.chunk, batching=args.batching,
                     max_prompt_chars=args.max_prompt_chars)
    run(app, args.host, args.port)


def run(app, host: str, port: int) -> None:
    """Serve `app` with uvicorn until Ctrl-C / SIGTERM; print the address once it accepts."""
    import uvicorn

    sock = listening_socket(host, port)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                bound = self.servers[0].sockets[0].getsockname()[1]
                print(f"{LISTENING}http://{'[' + host + ']' if ':' in host else host}:{bound}/", flush=True)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    Server(uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5)).run([sock])


def listening_socket(host: str, port: int):
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
def spawn(model: str | Path, *options: str, log_path: Path | None = None, timeout: float = 180) -> Iterator[Spawned]:
    """A real server in a child process on 127.0.0.1 and a free port, for tests and benchmarks;
    SIGTERM, then SIGKILL, on the way out. Its log (stdout and stderr) goes to `log_path`."""
    command = [sys.executable, "-m", "charrnn.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
               "--port", "0", *options]
    logfile = open(log_path or "/dev/null", "w", encoding="utf-8")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=logfile, text=True, bufsize=1)
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
