"""The options of `charrnn serve`, their defaults and their rules: one home for each, read by the
command line (charrnn.serve.server) and by the app (charrnn.serve.app). Nothing here loads
TensorFlow, so that `charrnn --help` and a bad option answer at once."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from charrnn.core.errors import CharrnnError
from charrnn.core.params import MAX_NUM_CHARS, MAX_PROMPTS

MAX_BATCH = 64  # the batch-invariance of generation is tested up to 64 rows
# Characters per step: how often new requests can join and streams advance. Each extend call costs
# ~1-2 ms beyond its characters on a 2-core CPU: 100 keeps that near 10% of a lone request's time
# (bench/serve.py: a lone 500-character request took ~95 ms with 50, ~88 ms with 100), and a
# newcomer waits at most one step (~15 ms alone, ~60 ms with 64 rows).
DEFAULT_CHUNK = 100


class ServeError(CharrnnError):
    """A server that cannot start: bad options, no model, a port in use."""


@dataclass(frozen=True)
class ServeOptions:
    max_chars: int = 10_000  # num_chars of one request
    max_prompts: int = MAX_BATCH  # prompts of one request
    max_prompt_chars: int = 10_000  # a prompt runs through the model before anyone's next step
    max_batch: int = MAX_BATCH  # rows generated together
    chunk: int = DEFAULT_CHUNK  # characters per step
    batching: bool = True
    request_timeout: float = 300.0  # seconds from arrival to the end of the answer
    body_timeout: float = 30.0  # seconds for a request's body to arrive
    header_timeout: float = 10.0  # seconds for a request's headers to arrive
    keep_alive: float = 5.0  # seconds an idle kept-alive connection stays open
    max_connections: int = 512  # open connections; more are refused at once (and never past the fd limit)
    max_body_bytes: int = 1_000_000
    allowed_hosts: tuple[str, ...] = ()  # Host names besides IP literals and localhost
    allowed_origins: tuple[str, ...] = ()  # web origins besides the server's own (they get CORS headers)
    api_key: str | None = None  # Authorization: Bearer <key> on every API route

    def problems(self) -> list[str]:
        wrong = []
        if not 1 <= self.max_chars <= MAX_NUM_CHARS:
            wrong.append(f"--max-chars must be from 1 to {MAX_NUM_CHARS:,}, got {self.max_chars}")
        if not 1 <= self.max_batch <= MAX_BATCH:
            wrong.append(f"--max-batch must be from 1 to {MAX_BATCH} (generation is tested batch-invariant up to "
                         f"{MAX_BATCH} rows), got {self.max_batch}")
        if not 1 <= self.max_prompts <= MAX_PROMPTS:
            wrong.append(f"--max-prompts must be from 1 to {MAX_PROMPTS}, got {self.max_prompts}")
        for name in ("chunk", "max_prompt_chars", "max_connections", "max_body_bytes"):
            if getattr(self, name) < 1:
                wrong.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("request_timeout", "body_timeout", "header_timeout", "keep_alive"):
            value = getattr(self, name)
            if not 0 < value < float("inf"):
                wrong.append(f"--{name.replace('_', '-')} must be a positive number of seconds, got {value}")
        if self.api_key is not None and not self.api_key.strip():
            wrong.append("--api-key (or CHARRNN_API_KEY) must not be empty")
        for origin in self.allowed_origins:
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                wrong.append(f"--allow-origin takes an origin such as https://app.example.com (scheme and host, "
                             f"no path), got {origin!r}")
        return wrong

    def check(self) -> "ServeOptions":
        wrong = self.problems()
        if wrong:
            raise ServeError("; ".join(wrong))
        return self

    def replace(self, **changes) -> "ServeOptions":
        return dataclasses.replace(self, **changes)
