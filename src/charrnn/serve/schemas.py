"""The HTTP API's bodies as pydantic models, so that FastAPI validates every request and
/openapi.json documents every field, type, default and limit.

The request models are made per app (`request_models`): their defaults are the served model's own
sampling settings and their limits the server's options. Each range comes from the rule of the
sample.* param of the same name (charrnn.core.params.bounds), never restated here; what pydantic
cannot say (a float32's precision, a prompt's characters) is checked after it by
SamplingSettings and check_prompts, as at every other door.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from charrnn.core.params import bounds
from charrnn.sampling.settings import SamplingSettings

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Limits:
    """What one request may ask of this server (its --max-* options)."""

    max_chars: int
    max_prompts: int
    max_prompt_chars: int
    max_body_bytes: int


def _range(name: str, cap: int | None = None) -> dict:
    b = bounds(f"sample.{name}")
    lower = {"gt": b.lo} if b.lo_open else {"ge": b.lo}
    return {**lower, "le": b.hi if cap is None else min(b.hi, cap)}


SETTING_DOCS = {
    "num_chars": "characters to generate after each prompt",
    "temperature": "softmax(logits / temperature): lower is more conservative",
    "top_k": "sample among the k most likely characters only (0: off)",
    "top_p": "sample from the smallest set of characters holding this much probability (1.0: off)",
    "seed": "the same seed and settings give the same text, alone or batched with other requests",
}


def setting_fields(defaults: SamplingSettings, limits: Limits) -> dict:
    """The sampling settings as pydantic fields: type, default, range and description."""
    kinds = {name: type(getattr(defaults, name)) for name in SamplingSettings.names()}
    return {name: (kinds[name], Field(getattr(defaults, name), description=SETTING_DOCS[name],
                                      **_range(name, limits.max_chars if name == "num_chars" else None)))
            for name in SamplingSettings.names()}


def request_models(defaults: SamplingSettings, limits: Limits) -> type[BaseModel]:
    """The body of POST /v1/generate for this model and server."""
    prompt_text = Field(min_length=1, max_length=limits.max_prompt_chars)
    return create_model(
        "GenerateRequest", __config__=STRICT,
        prompt=(str | None, Field(None, min_length=1, max_length=limits.max_prompt_chars,
                                  description="one prompt (or give `prompts`)")),
        prompts=(list[_text(prompt_text)] | None,
                 Field(None, min_length=1, max_length=limits.max_prompts,
                       description="several prompts, generated as rows of one batch (or give `prompt`)")),
        stream=(bool, Field(False, description="answer as server-sent events while the text is generated")),
        **setting_fields(defaults, limits),
    )


def _text(field):
    from typing import Annotated

    return Annotated[str, field]


class GenerateResponse(BaseModel):
    texts: list[str] = Field(description="each prompt followed by its generated text, in the order given")
    model: str
    num_chars: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    warnings: list[str] = Field(description="prompts with characters outside the vocabulary (read as [UNK])")


class ErrorBody(BaseModel):
    error: str = Field(description="one line saying what is wrong")


class Health(BaseModel):
    status: Literal["ok"]


# --- the OpenAI-compatible API (charrnn.serve.openai) -------------------------------------------


def completion_request_model(defaults: SamplingSettings, limits: Limits) -> type[BaseModel]:
    """POST /v1/completions as OpenAI's API defines it, a token being a character. The fields it
    lists as refused (charrnn.serve.openai) are taken as anything here and refused there, by name.
    OpenAI's fields are nullable: a null is the field's default, as if it were left out."""
    from typing import Any

    prompt_text = Field(min_length=1, max_length=limits.max_prompt_chars)
    temperature = bounds("sample.temperature")
    refused = {name: (Any, Field(None, description="refused unless neutral (see the README)"))
               for name in ("echo", "logprobs", "suffix", "best_of", "logit_bias", "presence_penalty",
                            "frequency_penalty")}
    return create_model(
        "CompletionRequest", __config__=STRICT,
        model=(str | None, Field(None, description="the served model's id (GET /v1/models)")),
        prompt=(str | list[_text(prompt_text)],
                Field(description="a prompt, or a list of prompts (each gets `n` choices)")),
        max_tokens=_nullable(int, 16, ge=1, le=limits.max_chars,
                             description="characters to generate (a token is a character; 16 as OpenAI's default)"),
        temperature=_nullable(float, defaults.temperature, ge=0, le=temperature.hi,
                              description="0 is greedy (the lowest temperature charrnn allows)"),
        top_p=_nullable(float, defaults.top_p, **_range("top_p")),
        seed=_nullable(int, defaults.seed, **_range("seed"), description=SETTING_DOCS["seed"]),
        n=_nullable(int, 1, ge=1, le=limits.max_prompts, description="choices per prompt"),
        stream=_nullable(bool, False, description="server-sent events, then `data: [DONE]`"),
        stream_options=(dict | None, Field(None, description='{"include_usage": true}: a last chunk with usage')),
        stop=(str | list[str] | None, Field(None, description="up to 4 strings: the text is cut before the first")),
        user=(str | None, Field(None, description="ignored")),
        **refused,
    )


def _nullable(kind: type, default, **field) -> tuple:
    """A field that takes `default` when it is left out or null; its range holds for a value."""
    from typing import Annotated

    from pydantic import AfterValidator

    value = Annotated[kind, Field(**{k: v for k, v in field.items() if k != "description"})]
    return (Annotated[value | None, AfterValidator(lambda v: default if v is None else v)],
            Field(default, description=field.get("description")))


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["length", "stop"]


class Usage(BaseModel):
    prompt_tokens: int = Field(description="characters of the prompts")
    completion_tokens: int = Field(description="characters generated")
    total_tokens: int


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
