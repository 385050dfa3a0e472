"""The OpenAI-compatible API: POST /v1/completions and GET /v1/models, as llama.cpp's server, vLLM
and Ollama offer them, so that existing clients and SDKs work unchanged. A token is a character.

The requests go to the same batcher as /v1/generate: `n` choices of a prompt are rows 0..n-1 of
one request (prompt after prompt for a list), so the same seed gives the same text as
/v1/generate with the same prompts, repeated n times each.

Fields of POST /v1/completions
- read: model (must be the served model's id, GET /v1/models), prompt (a string or a list of
  strings), max_tokens (characters; default 16, as OpenAI's), temperature (0 is greedy: the lowest
  temperature charrnn allows), top_p, seed (default: the model's), n, stream (server-sent events,
  then `data: [DONE]`), stream_options.include_usage, stop (up to 4 strings: the text is cut
  before the first, finish_reason "stop"); a null is the field's default, as OpenAI's fields are
  nullable;
- ignored: user, and the neutral values of the fields below (echo false, logprobs null, suffix
  null or "", best_of equal to n, logit_bias {}, presence_penalty and frequency_penalty 0);
- refused (400, naming the field): echo true, logprobs, suffix, best_of other than n, logit_bias,
  presence_penalty, frequency_penalty (charrnn has none of these), a prompt given as token ids,
  and any field the API does not define.
Errors come in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

import json
import time
import uuid
from typing import NamedTuple

from charrnn.core.params import TEMPERATURE_RANGE
from charrnn.sampling.settings import SamplingSettings, SettingsError, check_prompts

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
MAX_STOP = 4
NEUTRAL = {"echo": (False, None), "logprobs": (None,), "suffix": (None, ""), "logit_bias": (None, {}),
           "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0)}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.kind, self.headers = status, param, code, kind, headers or {}

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def model_id(served) -> str:
    """The served model's id: charrnn and the first digits of its content hash."""
    digest = served.card.get("model_hash") or ""
    return f"charrnn-{digest[:12]}" if digest else "charrnn"


def router(served, defaults: SamplingSettings, limits, options, batcher):
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    from charrnn.serve import jobs
    from charrnn.serve.schemas import completion_request_model

    routes = APIRouter()
    served_id = model_id(served)
    created = int(time.time())
    CompletionRequest = completion_request_model(defaults, limits)
    documented = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": CompletionRequest.model_json_schema()}}}}

    @routes.get("/v1/models", summary="the served model, as OpenAI's API lists models")
    async def models():
        return {"object": "list", "data": [{"id": served_id, "object": "model", "created": created,
                                            "owned_by": "charrnn"}]}

    @routes.post("/v1/completions", summary="OpenAI-compatible completions (a token is a character)",
                 openapi_extra=documented)
    async def completions(request: Request):
        try:
            asked = read(await _json_body(request), CompletionRequest, served_id, defaults, limits)
            for_rows = [p for p in asked.prompts for _ in range(asked.n)]
            check_prompts(served.vocab, for_rows, limits.max_prompts)
            try:
                job = jobs.submit(batcher, for_rows, asked.settings, options.request_timeout)
            except jobs.ApiError as e:
                raise OpenAIError(e.status, str(e), kind="server_error", code="busy", headers=e.headers) from None
        except SettingsError as e:
            return _error(OpenAIError(400, str(e)))
        except OpenAIError as e:
            return _error(e)
        meta = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": served_id}
        usage = {"prompt_tokens": sum(len(p) for p in asked.prompts)}
        if asked.stream:
            return StreamingResponse(_stream(job, meta, asked.stop, usage, asked.include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            texts = await jobs.collect(job, request)
        except jobs.ApiError as e:
            return _error(OpenAIError(e.status, str(e), kind="server_error"))
        choices = []
        for index, (prompt, text) in enumerate(zip(job.prompts, texts)):
            cut, reason = _cut(text[len(prompt):], asked.stop)
            choices.append({"text": cut, "index": index, "logprobs": None, "finish_reason": reason})
        generated = sum(len(c["text"]) for c in choices)
        return JSONResponse({**meta, "object": "text_completion", "choices": choices,
                             "usage": {**usage, "completion_tokens": generated,
                                       "total_tokens": usage["prompt_tokens"] + generated}})

    def _error(e: OpenAIError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    return routes


async def _json_body(request) -> dict:
    raw = await request.body()
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise OpenAIError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object")
    return body


class Asked(NamedTuple):
    """What a completion request asks for."""
    prompts: list[str]
    settings: SamplingSettings
    n: int
    stop: list[str]
    stream: bool
    include_usage: bool


def read(body: dict, model, served_id: str, defaults: SamplingSettings, limits) -> Asked:
    """What a completion request asks for, or an OpenAIError naming the field.
    `model` is the pydantic model of the request (charrnn.serve.schemas)."""
    from pydantic import ValidationError

    try:
        request = model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(part) for part in first["loc"][:1])
        if first["type"] == "extra_forbidden":
            raise OpenAIError(400, f"Unrecognized request argument supplied: {param}", param=param) from None
        raise OpenAIError(400, f"{param}: {first['msg']}", param=param) from None
    for name, neutral in NEUTRAL.items():
        if getattr(request, name) not in neutral:
            raise OpenAIError(400, f"{name} is not supported by charrnn (leave it out)", param=name)
    if request.model is not None and request.model != served_id:
        raise OpenAIError(404, f"The model {request.model[:80]!r} does not exist: this server serves {served_id!r} "
                               "(GET /v1/models)", param="model", code="model_not_found")
    if request.best_of not in (None, request.n):
        raise OpenAIError(400, "best_of other than n is not supported by charrnn", param="best_of")
    prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
    if not prompts or len(prompts) * request.n > limits.max_prompts:
        raise OpenAIError(400, f"give 1 to {limits.max_prompts} choices per request (prompts x n), got "
                               f"{len(prompts) * request.n}", param="n" if prompts else "prompt")
    values = {"num_chars": request.max_tokens, "temperature": max(request.temperature, TEMPERATURE_RANGE[0]),  # 0: greedy
              "top_p": request.top_p, "seed": request.seed}
    return Asked(prompts, SamplingSettings.parse(values, defaults, limits.max_chars), request.n, _stop(request.stop),
                 request.stream, bool((request.stream_options or {}).get("include_usage")))


def _stop(stop) -> list[str]:
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP or not all(isinstance(s, str) and s for s in stops):
        raise OpenAIError(400, f"stop must be a non-empty string or a list of up to {MAX_STOP} of them", param="stop")
    return stops


def _cut(text: str, stop: list[str]) -> tuple[str, str]:
    """The text before the first stop string, and the finish reason."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[:min(ends)], "stop") if ends else (text, "length")


class _Choice:
    """One choice while it streams: what is sent, and what is held back because it might begin
    a stop string."""

    def __init__(self, stop: list[str]):
        self.stop, self.text, self.sent, self.finished = stop, "", 0, None
        self.hold = max((len(s) for s in stop), default=1) - 1

    def add(self, piece: str) -> str:
        """The part of the text now certain to be sent."""
        if self.finished:
            return ""
        self.text += piece
        cut, reason = _cut(self.text, self.stop)
        if reason == "stop":
            self.finished = "stop"
            return self._send(len(cut))
        return self._send(max(self.sent, len(self.text) - self.hold))

    def end(self) -> str:
        if self.finished:
            return ""
        self.finished = "length"
        return self._send(len(self.text))

    def _send(self, upto: int) -> str:
        out, self.sent = self.text[self.sent:upto], upto
        return out


async def _stream(job, meta: dict, stop: list[str], usage: dict, include_usage: bool):
    from charrnn.serve.batching import Cancelled, Failed

    def chunk(choices: list, with_usage: dict | None = None) -> bytes:
        body = {**meta, "object": "text_completion", "choices": choices}
        if include_usage:
            body["usage"] = with_usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    choices = [_Choice(stop) for _ in job.prompts]
    try:
        async for pieces in job.pieces():
            out = [(row, choices[row].add(piece)) for row, piece in pieces]
            sent = [{"text": text, "index": row, "logprobs": None, "finish_reason": None} for row, text in out if text]
            if sent:
                yield chunk(sent)
            if all(c.finished for c in choices):
                job.cancel()  # every choice hit a stop string: free the rows
                break
    except Cancelled:
        pass
    except Failed as e:
        yield f"data: {json.dumps(OpenAIError(e.status, str(e), kind='server_error').body())}\n\n".encode()
        return
    finally:
        job.cancel()
    ends = [(i, c.finished or "length", c.end()) for i, c in enumerate(choices)]
    yield chunk([{"text": text, "index": i, "logprobs": None, "finish_reason": reason} for i, reason, text in ends])
    if include_usage:
        generated = sum(len(c.text[:c.sent]) for c in choices)
        yield chunk([], {**usage, "completion_tokens": generated, "total_tokens": usage["prompt_tokens"] + generated})
    yield b"data: [DONE]\n\n"
