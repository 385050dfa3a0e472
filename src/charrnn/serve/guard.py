"""Who may make `charrnn serve` work: checked before any route runs, as ASGI middleware.

A server on a laptop's loopback is reachable by every web page its user visits. So, as Jupyter and
Ollama do for a loopback server and as the MCP specification asks of a local HTTP server:
- the `Host` header must be an IP literal, `localhost`, or a name the operator allows
  (--allowed-host): a DNS-rebinding page, whose requests carry its own host name, is refused (403);
- a browser's `Origin` must be the server's own (or one allowed with --allow-origin, which alone
  gets CORS headers): a page on another origin, a `file://` page (`Origin: null`) cannot use it;
- a POST body must be `application/json` (415): the "simple" requests a page may send without
  asking (text/plain, forms) are refused, and a JSON body always needs a CORS preflight;
- with --api-key (or CHARRNN_API_KEY), every API route needs `Authorization: Bearer <key>`,
  compared in constant time and never logged; the page and its files load without it;
- bodies are capped in size (413) and must arrive within the body timeout (408);
- every answer says that no other site may frame it (X-Frame-Options, CSP frame-ancestors).
Every refusal is one JSON line, {"error": "..."}, and is counted (`refused`), not logged.
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import json
import time
from dataclasses import dataclass, field

OPEN_PATHS = ("/", "/favicon.ico", "/healthz")  # and /static/...: no API key (the page asks for it itself)
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


@dataclass
class Policy:
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    api_key: str | None = None
    max_body_bytes: int = 1_000_000
    body_timeout: float = 30.0
    refused: collections.Counter = field(default_factory=collections.Counter)  # reason -> count


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header names this server: an IP literal, localhost, or an allowed name."""
    name = _hostname(host)
    if not name:
        return False
    if name.lower() in ("localhost", *(h.lower() for h in allowed)):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _hostname(host: str) -> str:
    """The host part of a Host header: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1';
    '' when the header is not host[:port] (a port of other than digits, text after ']')."""
    host = host.strip()
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket:
            return ""
    elif host.count(":") == 1:
        name, rest = host.split(":")
        rest = ":" + rest
    else:
        name, rest = host, ""
    port = rest[1:]
    if rest and not (rest.startswith(":") and port.isascii() and port.isdigit() and len(port) <= 5):
        return ""
    return name


def origin_allowed(origin: str, host: str, scheme: str, allowed: tuple[str, ...]) -> bool:
    """Whether a browser's Origin is this server's own (its scheme and Host) or an allowed one."""
    return origin in allowed or origin == f"{scheme}://{host}"


class Guard:
    """The ASGI middleware that applies a Policy (see the module docstring)."""

    def __init__(self, app, policy: Policy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            status, reason, message = refusal
            self.policy.refused[reason] += 1
            return await _json(send, status, {"error": message},
                               [(b"www-authenticate", b"Bearer")] if status == 401 else [])

        async def send_secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, self.limited(receive, headers), send_secured)

    def refusal(self, scope, headers: dict) -> tuple[int, str, str] | None:
        """(status, reason, message) when the request is refused, else None."""
        p = self.policy
        host = headers.get("host", "")
        if not host_allowed(host, p.allowed_hosts):
            return 403, "host", (f"Host {host[:80]!r} is not this server's: use an IP address or localhost, or start "
                                 "the server with --allowed-host NAME")
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(origin, host, scope.get("scheme", "http"), p.allowed_origins):
            return 403, "origin", (f"requests from the web page at {origin[:80]!r} are not allowed: start the "
                                   "server with --allow-origin ORIGIN to allow that page")
        path = scope.get("path", "")
        preflight = scope.get("method") == "OPTIONS" and origin is not None  # browsers send no credentials
        if p.api_key is not None and not (path in OPEN_PATHS or path.startswith("/static/") or preflight):
            given = headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), p.api_key.encode()):
                return 401, "auth", "this server needs an API key: send the header Authorization: Bearer <key>"
        if scope.get("method") == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return 415, "content_type", (f"the body must be JSON sent as Content-Type: application/json, got "
                                             f"{kind[:60] or 'no Content-Type'!r}")
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > p.max_body_bytes:
                return 413, "too_large", f"the body is larger than {p.max_body_bytes:,} bytes"
        return None

    def limited(self, receive, headers: dict):
        """receive() that raises BodyTooLarge past the size cap (a chunked body has no
        Content-Length) and BodyTimeout when the body does not arrive in time."""
        p = self.policy
        state = {"bytes": 0, "complete": False, "deadline": time.monotonic() + p.body_timeout}

        async def receive_limited():
            if state["complete"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, state["deadline"] - time.monotonic()))
            except asyncio.TimeoutError:
                self.policy.refused["body_timeout"] += 1
                raise BodyTimeout(f"the body did not arrive within {p.body_timeout:g} s") from None
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
                if state["bytes"] > p.max_body_bytes:
                    self.policy.refused["too_large"] += 1
                    raise BodyTooLarge(f"the body is larger than {p.max_body_bytes:,} bytes")
            else:
                state["complete"] = True
            return message

        return receive_limited


def _headers(scope) -> dict[str, str]:
    """The request's headers, lower-case names; of a repeated header the first."""
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


async def _json(send, status: int, body: dict, headers: list | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or []), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": payload})
