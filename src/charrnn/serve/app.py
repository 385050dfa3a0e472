"""The HTTP app of `charrnn serve`: a trained model as a JSON API, with dynamic batching,
streaming and a playground page.

Endpoints (request and response bodies: charrnn.serve.schemas; /openapi.json describes them)
- GET  /               the playground page (web/: static files, nothing loaded from elsewhere)
- GET  /healthz        {"status": "ok"}
- GET  /v1/model       the model card: corpus, vocabulary size, architecture, sampling defaults,
                       held-out loss and bits per character, the MLflow run and registered version
                       (null where unknown), and this server's limits
- GET  /v1/stats       the batcher's counters and the refusals
- GET  /metrics        the same and more in the Prometheus text format
- POST /v1/generate    {"prompt": "ROMEO:"} or {"prompts": [...]}, and optionally num_chars,
                       temperature, top_k, top_p, seed (default: the model's own sample settings)
                       and stream. Answer: {"texts": [prompt + generated text, ...], "model",
                       the settings used, "warnings": [characters read as [UNK], ...]}
- POST /v1/completions, GET /v1/models: the OpenAI-compatible API (charrnn.serve.openai)
Every GET answers HEAD too: the same status and headers, no body.

Streaming. With "stream": true the answer is text/event-stream: events {"index": i, "text": ...},
the first of each prompt being the prompt itself, so that joining the texts of index i gives
texts[i] of the plain answer; then one `done` event with the rest of the plain answer. A failure
after the first event ends the stream with `event: error` and data {"error": "..."}. A client that
goes away frees its rows at the next step.

Errors are JSON {"error": "<one line>"}: 400 a body that is not JSON, 401 a missing API key, 403 a
foreign Host or Origin, 408 a body too slow to arrive, 413 over the size cap, 415 not JSON, 422 a
body the rules refuse (the sample.* params' rules, as every other door applies them), 503 (with
Retry-After) too many requests, 504 past --request-timeout. Anything else is a bug: 500 "internal
error (id ...)", with the traceback under that id in the server's log; the server goes on.
"""

import json
import logging
from contextlib import asynccontextmanager
from importlib import resources

from charrnn.core.redact import redact
from charrnn.sampling.settings import SamplingSettings, SettingsError, check_prompts
from charrnn.serve import guard, openai, schemas
from charrnn.serve.batching import Batcher, internal_error
from charrnn.serve.jobs import ApiError, collect, sse_events, submit
from charrnn.serve.metrics import Metrics, Observed
from charrnn.serve.options import ServeOptions
from charrnn.serve.served import Served

MAX_ERROR_CHARS = 1_000
WEB = resources.files("charrnn.serve").joinpath("web")
STATIC = {"playground.js": "text/javascript", "playground.css": "text/css", "icon.svg": "image/svg+xml"}

log = logging.getLogger("charrnn.serve")


def create_app(served: Served, options: ServeOptions = ServeOptions()):
    """The FastAPI app serving `served`. Its batcher runs from the app's startup to its shutdown
    (use TestClient as a context manager)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException
    from starlette.middleware.cors import CORSMiddleware

    options.check()
    defaults = served.defaults.replace(num_chars=min(served.defaults.num_chars, options.max_chars))
    limits = schemas.Limits(options.max_chars, options.max_prompts, options.max_prompt_chars, options.max_body_bytes)
    GenerateRequest = schemas.request_models(defaults, limits)
    batcher = Batcher(served.engine, options.max_batch, options.chunk, options.batching)
    policy = guard.Policy(options.allowed_hosts, options.allowed_origins, options.api_key, options.max_body_bytes,
                          options.body_timeout)
    metrics = Metrics(batcher, policy)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            batcher.close()

    app = FastAPI(title="charrnn", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="A character-level RNN served with dynamic batching (charrnn serve).")
    app.state.batcher, app.state.served, app.state.policy = batcher, served, policy

    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        clean = redact(message).encode("utf-8", "backslashreplace").decode("utf-8")
        return JSONResponse({"error": clean[:MAX_ERROR_CHARS]}, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error(e.status, str(e), e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return error(*validation_message(e.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return error(e.status_code, str(e.detail))

    @app.exception_handler(guard.BodyTooLarge)
    async def too_large(request: Request, e: guard.BodyTooLarge):
        return error(413, str(e))

    @app.exception_handler(guard.BodyTimeout)
    async def too_slow(request: Request, e: guard.BodyTimeout):
        return error(408, str(e), {"Connection": "close"})

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception):
        return error(500, internal_error(f"{request.method} {request.url.path} failed", e))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground():
        return WEB.joinpath("index.html").read_text(encoding="utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in STATIC:
            raise ApiError(404, f"no such file: /static/{name[:60]}")
        return Response(WEB.joinpath(name).read_bytes(), media_type=STATIC[name],
                        headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():
        return Response(WEB.joinpath("icon.svg").read_bytes(), media_type="image/svg+xml")

    @app.get("/healthz", response_model=schemas.Health)
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/model", summary="the model card and this server's limits")
    async def model_card():
        return {**served.card, "sampling_defaults": defaults.as_dict(),
                "limits": {"max_chars": options.max_chars, "max_prompts": options.max_prompts,
                           "max_prompt_chars": options.max_prompt_chars, "max_batch": options.max_batch,
                           "max_body_bytes": options.max_body_bytes, "request_timeout": options.request_timeout,
                           "settings": setting_ranges(options.max_chars)},
                "auth": options.api_key is not None}

    @app.get("/v1/stats", summary="the batcher's counters and the refusals")
    async def stats():
        return {**batcher.stats(), "refused": dict(policy.refused)}

    @app.get("/metrics", include_in_schema=False)
    async def prometheus():
        body, kind = metrics.text()
        return Response(body, media_type=kind)

    errors = {code: {"model": schemas.ErrorBody} for code in (400, 401, 403, 413, 415, 422, 503, 504)}

    documented = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": GenerateRequest.model_json_schema()}}}}

    @app.post("/v1/generate", response_model=schemas.GenerateResponse, responses=errors, openapi_extra=documented,
              summary="continue one or more prompts (stream: server-sent events)")
    async def generate(request: Request):
        body = validated(GenerateRequest, parse_body(await request.body()), OPTION_OF)
        prompts = request_prompts(body)
        settings = request_settings(body, defaults, options.max_chars)
        warnings = checked(served, prompts, options.max_prompts)
        job = submit(batcher, prompts, settings, options.request_timeout)
        summary = {"model": served.name, **settings.as_dict(), "warnings": warnings}
        if body.stream:
            from fastapi.sse import EventSourceResponse

            return EventSourceResponse(sse_events(job, summary))
        return {"texts": await collect(job, request), **summary}

    app.include_router(openai.router(served, defaults, limits, options, batcher))
    # the last added runs first: metrics see every answer, the guard refuses before CORS answers
    app.add_middleware(HeadAsGet)
    app.add_middleware(CORSMiddleware, allow_origins=list(options.allowed_origins), allow_methods=["GET", "POST"],
                       allow_headers=["Content-Type", "Authorization"], max_age=600)
    app.add_middleware(guard.Guard, policy=policy)
    app.add_middleware(Observed, metrics=metrics)
    return app


class HeadAsGet:
    """HEAD is GET without the body (RFC 9110, 9.3.2). The routes see GET; the HTTP protocol still
    holds the request's own scope, with HEAD, and so sends the headers alone."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def setting_ranges(max_chars: int) -> dict:
    """Each sampling setting's smallest and largest value, as the playground's inputs take them."""
    from charrnn.core.params import FLOAT32_TINY, bounds

    ranges = {}
    for name in SamplingSettings.names():
        b = bounds(f"sample.{name}")
        low = (FLOAT32_TINY if isinstance(b.lo, float) or b.lo == 0 else b.lo + 1) if b.lo_open else b.lo
        ranges[name] = {"min": low, "max": max_chars if name == "num_chars" else b.hi}
    return ranges


def _version() -> str:
    from charrnn import __version__

    return __version__


# the option that caps a field, named when a request passes the cap
OPTION_OF = {"num_chars": "--max-chars", "prompt": "--max-prompt-chars", "prompts": "--max-prompts"}


def parse_body(raw: bytes):
    """A request body as JSON, or an ApiError (400) saying why it is not."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, 'the body is not UTF-8 text: send JSON such as {"prompt": "ROMEO:"}') from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply to be a request") from None
    except ValueError as e:  # json.JSONDecodeError
        raise ApiError(400, f'the body is not valid JSON ({e}): send e.g. {{"prompt": "ROMEO:"}}') from None


def validated(model, data, options: dict | None = None):
    """`data` as the pydantic `model`, or an ApiError (422) naming every problem."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(*validation_message(e.errors(), model, options or {})) from None


def validation_message(errors, model=None, options: dict | None = None) -> tuple[int, str]:
    """(status, one line) for pydantic's errors about a body: every problem, field by field."""
    import difflib

    lines = []
    for error in errors:
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        if error["type"] == "json_invalid":
            return 400, 'the body is not valid JSON: send e.g. {"prompt": "ROMEO:"}'
        if error["type"] in ("model_attributes_type", "model_type", "dict_type"):
            return 422, 'the body must be a JSON object such as {"prompt": "ROMEO:"}'
        if error["type"] == "extra_forbidden":
            known = list(model.model_fields) if model is not None else []
            close = difflib.get_close_matches(where, known, n=1)
            lines.append(f"unknown field {where!r}" + (f" (did you mean {close[0]!r}?)" if close else
                                                       f" (known: {', '.join(known)})" if known else ""))
            continue
        got = f", got {_short(error['input'])}" if "input" in error and error["type"] != "missing" else ""
        cap = (options or {}).get(where.split(".")[0])
        capped = f" (the server's {cap})" if cap and error["type"] in ("less_than_equal", "too_long",
                                                                       "string_too_long") else ""
        lines.append(f"{where or 'body'}: {error['msg'][0].lower() + error['msg'][1:]}{got}{capped}")
    return 422, "; ".join(lines) or "invalid request"


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list, str, int, float)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def request_prompts(body) -> list[str]:
    if (body.prompt is None) == (body.prompts is None):
        raise ApiError(422, 'give either "prompt": "..." or "prompts": ["...", ...]'
                       + (", not both" if body.prompt is not None else ""))
    return [body.prompt] if body.prompt is not None else list(body.prompts)


def request_settings(body, defaults: SamplingSettings, max_chars: int) -> SamplingSettings:
    """The request's settings over the model's defaults, by the sample.* params' rules."""
    try:
        return SamplingSettings.parse({name: getattr(body, name) for name in SamplingSettings.names()}, defaults,
                                      max_chars)
    except SettingsError as e:
        raise ApiError(422, str(e).replace("--max-chars", "the server's --max-chars")) from None


def checked(served: Served, prompts: list[str], max_prompts: int) -> list[str]:
    try:
        return check_prompts(served.vocab, prompts, max_prompts)
    except SettingsError as e:
        raise ApiError(422, str(e)) from None


