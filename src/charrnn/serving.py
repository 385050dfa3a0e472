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

Batching. A row's text depends only on its own prompt, settings, seed, row index and position
(charrnn.generation), never on the rows beside it, so requests can share batches freely and
every answer equals `Generator.generate_text` (or the SavedModel's `generate`) for the same
request alone. One worker thread owns the model. Each step it admits the requests that arrived
meanwhile (first come, first served, while their rows fit in --max-batch), runs `start` on their
prompts, then advances every row with one `extend` of n = min(--chunk, the fewest characters
any row still needs) characters: nobody's text is generated past its end, finished requests
leave at once, and a request arriving mid-generation waits at most one step. --no-batching
admits a request only into an empty batch (the benchmark's baseline).

Errors. Every error is JSON {"error": "<one clear line>"}: 400 for a body that is not UTF-8 JSON,
413 over 1 MB, 422 for a body the rules reject (generation.check_prompts and check_settings,
the rules of the sample.* params; unknown fields are named), 404 / 405 for other routes and
methods, 503 when too many requests wait. Anything else is a bug: 500 with a masked message
(charrnn.redact), its traceback logged, masked too; the server goes on. A server that cannot
start (bad options, no model, a port in use) says why in one `error:` line, exit status 1.
"""

import argparse
import asyncio
import atexit
import collections
import difflib
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from charrnn import paths
from charrnn.errors import CharrnnError
from charrnn.params import MAX_NUM_CHARS, MAX_PROMPTS
from charrnn.redact import format_exception, redact

MAX_BODY_BYTES = 1_000_000
MAX_BATCH = 64  # the batch-invariance of generation is tested up to 64 rows
# Characters per step: how often new requests can join and streams advance. Each extend call costs
# ~2 ms beyond its characters on a 2-core CPU: 50 keeps that under ~10% of a default-size model's
# step, and a newcomer waits at most one step (~10 ms alone, ~30 ms with 64 rows).
DEFAULT_CHUNK = 50
DEFAULT_MAX_CHARS = 10_000
DEFAULT_MAX_PROMPT_CHARS = 10_000  # a prompt is run through the model before anyone's next step
MAX_WAITING = 1_024  # requests queued for a place in the batch before new ones get 503
DISCONNECT_POLL_S = 0.5
MAX_ERROR_CHARS = 1_000
FALLBACK_DEFAULTS = {"num_chars": 200, "temperature": 0.8, "top_k": 0, "top_p": 1.0, "seed": 0}
SETTING_TYPES = {"num_chars": int, "temperature": float, "top_k": int, "top_p": float, "seed": int}
FIELDS = ("prompt", "prompts", *FALLBACK_DEFAULTS, "stream")
LISTENING = "charrnn serve: listening on "

log = logging.getLogger("charrnn.serving")


class ServeError(CharrnnError):
    """A server that cannot start: bad options, a model that cannot be loaded."""


class ApiError(Exception):
    """A request the service refuses: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --- the model and its card ---------------------------------------------------------------------


@dataclass
class Served:
    """What the service runs: `engine` has the generator's graphs start and extend (a
    charrnn.generation.Generator, or the exported SavedModel of a registered model)."""

    name: str
    engine: Any
    vocab: Any  # charrnn.vocab.Vocabulary
    defaults: dict
    card: dict


def load(model: str, root: Path | None = None) -> Served:
    """A model directory, or a registered model (models:/name@alias, models:/name/version,
    resolved in the project at `root`, default: the one holding the working directory)."""
    if model.startswith("models:/"):
        from charrnn import tracking

        served = _load_registered(model, root or tracking.find_root())
    else:
        served = _load_directory(Path(model))
    _warm_up(served)
    return served


def _load_directory(path: Path) -> Served:
    from charrnn import generation, outputs
    from charrnn import model as model_lib

    keras_model, vocab = model_lib.load(path)
    model_hash = outputs.model_hash(path)
    root = _project_of(path)
    found = _mlflow_record(root, model_hash) if root else None
    params = found["params"] if found else {}
    card = _card(str(path), vocab, _config(keras_model.config), model_hash, root, found)
    return Served(redact(path), generation.Generator(keras_model, vocab), vocab,
                  _defaults({k.removeprefix("sample."): v for k, v in params.items()}), card)


def _load_registered(uri: str, root: Path) -> Served:
    import tensorflow as tf
    import yaml

    from charrnn import registry
    from charrnn.vocab import Vocabulary

    dest = Path(tempfile.mkdtemp(prefix="charrnn-serve-"))
    atexit.register(shutil.rmtree, dest, ignore_errors=True)
    local, version = registry.resolve(root, uri, dest)
    pyfunc = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))["flavors"]["python_function"]
    files = {name: local / entry["path"] for name, entry in pyfunc["artifacts"].items()}
    vocab = Vocabulary.load(files["vocab"])
    model_hash = version.tags.get("charrnn.model_hash")
    found = _mlflow_record(root, model_hash, version.run_id)
    params = found["params"] if found else {}
    card = _card(uri, vocab, _architecture(params, vocab), model_hash, None, found)
    return Served(redact(f"{uri} (version {version.version})"), tf.saved_model.load(str(files["generator"])), vocab,
                  _defaults(pyfunc.get("config") or {}), card)


def _warm_up(served: Served) -> None:
    """Trace / load the graphs now, not in the first request's time."""
    x, state = served.engine.start([served.vocab.chars[0]])
    one = lambda dtype, value: np.full(1, value, dtype)  # noqa: E731
    served.engine.extend(x, state, np.int32(1), one(np.float32, 1.0), one(np.int32, 0), one(np.float32, 1.0),
                         one(np.int64, 0), one(np.int64, 0), one(np.int64, 0))


def _project_of(path: Path) -> Path | None:
    from charrnn import tracking

    try:
        return tracking.find_root(path)
    except CharrnnError:
        return None


def _mlflow_record(root: Path, model_hash: str | None, run_id: str | None = None) -> dict | None:
    """The model's MLflow run (by id, else the newest tagged with its hash) and its newest
    registered version, read-only. None without a store; a warning, never a failure, when the
    store cannot be read."""
    from charrnn import tracking

    uri = tracking.tracking_uri(root)
    try:
        client = tracking.read_client(root)
        if client is None:
            return None
        if run_id is not None:
            run = client.get_run(run_id)
        else:
            experiments = [e.experiment_id for e in client.search_experiments()]
            runs = client.search_runs(experiments, filter_string=f"tags.`{tracking.MODEL_HASH_TAG}` = '{model_hash}'",
                                      order_by=["attributes.start_time DESC"], max_results=1) if experiments else []
            run = runs[0] if runs else None
        versions = client.search_model_versions(f"tags.`{tracking.MODEL_HASH_TAG}` = '{model_hash}'") \
            if model_hash else []
        newest = max(versions, key=lambda v: int(v.version)) if versions else None
        version = client.get_model_version(newest.name, newest.version) if newest else None  # with its aliases
        experiment = client.get_experiment(run.info.experiment_id).name if run else None
    except Exception as e:  # noqa: BLE001 - the card goes without, the model is served anyway
        log.warning("the model card has no MLflow provenance: cannot read %s: %s: %s", redact(uri),
                    type(e).__name__, redact(e))
        return None
    if run is None and version is None:
        return None
    tags = dict(run.data.tags) if run else {}
    return {
        "params": dict(run.data.params) if run else {},
        "metrics": dict(run.data.metrics) if run else {},
        "version_tags": dict(version.tags) if version else {},
        "card": {"experiment": experiment, "run_id": run.info.run_id if run else None,
                 "run_name": run.info.run_name if run else None,
                 "dvc_experiment": tags.get("charrnn.dvc_exp_name") or (version.tags.get("charrnn.dvc_exp_name")
                                                                        if version else None),
                 "registered_model": version.name if version else None,
                 "version": version.version if version else None,
                 "aliases": list(getattr(version, "aliases", []) or []) if version else []},
    }


def _card(model: str, vocab, architecture: dict | None, model_hash: str | None, root: Path | None,
          found: dict | None) -> dict:
    params = found["params"] if found else {}
    version_tags = found["version_tags"] if found else {}
    source = params.get("data.source")
    corpus = None
    if source is not None or version_tags.get("charrnn.corpus_hash"):
        corpus = {"source": redact(source) if source is not None else None,
                  "sha256": version_tags.get("charrnn.corpus_hash")}
    return {"model": redact(model), "model_hash": model_hash, "corpus": corpus, "vocab_size": vocab.size,
            "architecture": architecture, "held_out": _held_out(root, model_hash, found),
            "mlflow": found["card"] if found else None}


def _held_out(root: Path | None, model_hash: str | None, found: dict | None) -> dict | None:
    """Held-out loss / bpc / perplexity: the project's metrics/perplexity.json when it is this
    model's, else the run's metrics, else the registered version's bpc tag."""
    from charrnn import outputs

    if root is not None and model_hash is not None:
        try:
            data = outputs.of_model(root / paths.HELD_OUT, model_hash)
        except CharrnnError as e:
            log.warning("%s", redact(e))
            data = None
        if data is not None:
            return {k: data.get(k) for k in ("loss", "bpc", "perplexity")} | {"from": str(paths.HELD_OUT)}
    metrics = found["metrics"] if found else {}
    if "held_out_bpc" in metrics:
        return {k: metrics.get(f"held_out_{k}") for k in ("loss", "bpc", "perplexity")} | {"from": "MLflow run"}
    bpc = (found or {}).get("version_tags", {}).get("charrnn.held_out_bpc")
    if bpc is not None:
        return {"loss": None, "bpc": float(bpc), "perplexity": None, "from": "registered model version"}
    return None


def _config(config) -> dict:
    """config.json for the card: without the vocabulary's fingerprint, and an adaptive softmax's
    clusters as their sizes (the ids themselves can be thousands)."""
    out = {k: v for k, v in asdict(config).items() if k != "vocab_fingerprint"}
    if out.get("clusters"):
        out["clusters"] = [len(ids) for ids in out["clusters"]]
    return out


def _architecture(params: dict, vocab) -> dict | None:
    """The architecture a run's train.* params describe (a registered model has no config.json)."""
    try:
        return {"vocab_size": vocab.size, "embedding_dim": int(params["train.embedding_dim"]),
                "units": int(params["train.units"]), "layers": int(params["train.layers"]),
                "cell": params["train.cell"], "dropout": float(params["train.dropout"]),
                **({"softmax": params["train.softmax"]} if "train.softmax" in params else {})}
    except (KeyError, ValueError):
        return None


def _defaults(known: dict) -> dict:
    """The sampling defaults: the model's own sample settings where known and valid, else the
    fallbacks. MLflow params arrive as strings."""
    from charrnn.generation import GenerationError, check_settings

    defaults = {}
    for name, fallback in FALLBACK_DEFAULTS.items():
        try:
            value = SETTING_TYPES[name](known[name])
            check_settings(**{**FALLBACK_DEFAULTS, name: value}, max_chars=MAX_NUM_CHARS)
        except (KeyError, ValueError, TypeError, GenerationError):
            value = fallback
        defaults[name] = value
    return defaults


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
    from charrnn.generation import GenerationError, check_prompts, check_settings

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


# --- the batcher --------------------------------------------------------------------------------


class Job:
    """One request: its prompts and settings, and the asyncio queue (of the event loop that
    submitted it) where the worker thread puts its events: ("text", [piece per prompt]), then
    ("done", None), ("error", message) or ("cancelled", None)."""

    def __init__(self, prompts: list[str], settings: dict):
        self.prompts = prompts
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False

    def send(self, kind: str, payload=None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop is closed: nobody waits for this job any more
            pass

    def cancel(self) -> None:
        self.cancelled = True  # read by the worker at the next step

    async def pieces(self):
        """The text pieces as they come (one per prompt), until the job is done."""
        while True:
            kind, payload = await self.events.get()
            if kind == "done":
                return
            if kind == "error":
                raise ApiError(500, payload)
            if kind == "cancelled":
                raise ApiError(499, "cancelled: the client went away")  # nobody reads this answer
            yield payload


class Batch:
    """The rows being generated: parallel arrays, one entry per row, and each row's job."""

    def __init__(self):
        self.jobs: list[Job] = []
        self.rows: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, job: Job, x: np.ndarray, state: np.ndarray) -> None:
        k, s = len(job.prompts), job.settings
        new = {"x": x, "state": state, "temperature": np.full(k, s["temperature"], np.float32),
               "top_k": np.full(k, s["top_k"], np.int32), "top_p": np.full(k, s["top_p"], np.float32),
               "seed": np.full(k, s["seed"], np.int64), "row": np.arange(k, dtype=np.int64),
               "position": np.zeros(k, np.int64), "left": np.full(k, s["num_chars"], np.int64)}
        self.rows = {key: np.concatenate([self.rows[key], new[key]]) for key in new} if self.jobs else new
        self.jobs += [job] * k

    def keep(self, mask: np.ndarray) -> None:
        self.rows = {key: value[mask] for key, value in self.rows.items()}
        self.jobs = [job for job, kept in zip(self.jobs, mask) if kept]


class Batcher:
    """The worker thread that owns the model (see the module docstring)."""

    def __init__(self, engine, max_batch: int = MAX_BATCH, chunk: int = DEFAULT_CHUNK, batching: bool = True,
                 max_waiting: int = MAX_WAITING):
        self.engine, self.max_batch, self.chunk, self.batching = engine, max_batch, chunk, batching
        self.max_waiting = max_waiting
        self.batch = Batch()
        self.waiting: collections.deque[Job] = collections.deque()
        self.wake = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.counts = {"requests_served": 0, "requests_cancelled": 0, "chars_generated": 0, "steps": 0,
                       "max_rows": 0}

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="charrnn-batcher", daemon=True)
        self.thread.start()

    def close(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        with self.wake:
            if self.stopping:
                raise ApiError(503, "the server is shutting down")
            if len(self.waiting) >= self.max_waiting:
                raise ApiError(503, f"busy: {len(self.waiting)} requests are waiting already; try again shortly")
            self.waiting.append(job)
            self.wake.notify()

    def stats(self) -> dict:
        return {"rows": len(self.batch), "waiting": len(self.waiting), **self.counts,
                "max_batch": self.max_batch, "chunk": self.chunk, "batching": self.batching}

    def _run(self) -> None:
        while True:
            with self.wake:
                while not (self.stopping or self.waiting or len(self.batch)):
                    self.wake.wait()
                if self.stopping:
                    break
                admitted = self._next_jobs()
            try:
                self._admit(admitted)
            except Exception as e:  # noqa: BLE001 - see _fail
                self._fail(admitted, e)
            try:
                self._drop_cancelled()
                if len(self.batch):
                    self._step()
            except Exception as e:  # noqa: BLE001
                self._fail(self.batch.jobs, e)
                self.batch = Batch()
        with self.wake:
            for job in dict.fromkeys([*self.batch.jobs, *self.waiting]):
                job.send("error", "the server is shutting down")
            self.waiting.clear()

    def _next_jobs(self) -> list[Job]:
        """The waiting jobs that join now, first come first served (under the lock)."""
        if not self.batching and len(self.batch):
            return []
        taken, free = [], self.max_batch - len(self.batch)
        while self.waiting and (self.batching or not taken):
            job = self.waiting[0]
            if job.cancelled:
                self.waiting.popleft().send("cancelled")
                self.counts["requests_cancelled"] += 1
                continue
            if self.batching and len(job.prompts) > free:
                break
            taken.append(self.waiting.popleft())
            free -= len(job.prompts)
        return taken

    def _admit(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        x, state = self.engine.start([p for job in jobs for p in job.prompts])
        x, state = x.numpy(), state.numpy()
        offset = 0
        for job in jobs:
            k = len(job.prompts)
            self.batch.add(job, x[offset:offset + k], state[offset:offset + k])
            offset += k
        self.counts["max_rows"] = max(self.counts["max_rows"], len(self.batch))

    def _drop_cancelled(self) -> None:
        cancelled = np.array([job.cancelled for job in self.batch.jobs], bool)
        if cancelled.any():
            for job in {job for job, c in zip(self.batch.jobs, cancelled) if c}:
                job.send("cancelled")
                self.counts["requests_cancelled"] += 1
            self.batch.keep(~cancelled)

    def _step(self) -> None:
        rows = self.batch.rows
        n = int(min(self.chunk, rows["left"].min()))
        text, x, state = self.engine.extend(rows["x"], rows["state"], np.int32(n), rows["temperature"], rows["top_k"],
                                            rows["top_p"], rows["seed"], rows["row"], rows["position"])
        rows["x"], rows["state"] = x.numpy(), state.numpy()
        rows["position"] += n
        rows["left"] -= n
        pieces: dict[Job, list[str]] = {}
        for job, piece in zip(self.batch.jobs, text.numpy()):
            pieces.setdefault(job, []).append(piece.decode("utf-8"))
        for job, texts in pieces.items():
            job.send("text", texts)
        finished = rows["left"] == 0
        for job in {job for job, done in zip(self.batch.jobs, finished) if done}:
            job.send("done")
            self.counts["requests_served"] += 1
        self.counts["chars_generated"] += n * len(self.batch)
        self.counts["steps"] += 1
        self.batch.keep(~finished)

    def _fail(self, jobs: list[Job], e: Exception) -> None:
        """A bug or a TensorFlow failure: these jobs get a 500, the worker goes on with the rest."""
        log.error("generation failed; %d request(s) get a 500:\n%s", len(set(jobs)), format_exception(e))
        for job in dict.fromkeys(jobs):  # each job once
            job.send("error", f"internal error: {type(e).__name__}: {redact(e)}")


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
    page = resources.files("charrnn").joinpath("web/index.html").read_text(encoding="utf-8")

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
        batcher.submit(job)
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
    except ApiError as e:
        yield event({"error": str(e)}, "error")
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

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:  # uvicorn would log it and exit 3; here it is one `error:` line like any other
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                bound = self.servers[0].sockets[0].getsockname()[1]
                print(f"{LISTENING}http://{'[' + host + ']' if ':' in host else host}:{bound}/", flush=True)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    Server(uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=5)).run([sock])


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
