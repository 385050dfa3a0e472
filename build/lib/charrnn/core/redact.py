"""The one masking rule for secrets, applied to every message, log line, exception text, MLflow
param and tag before it leaves the process.

In any text: the user info of a URL (`https://user:pw@host` -> `https://***@host`), every query
or fragment value (`?token=abc&lang=en` -> `?token=***&lang=***`) and HTTP authorization values
(`Authorization: Bearer abc` -> `Authorization: ***`). The rule errs on the side of hiding: a
path holding an `@` loses the part before it, and every query value is hidden, secret or not.
"""
from __future__ import annotations

import logging
import re
import traceback
import urllib.parse

MASK = "***"

# scheme:// then anything up to the last @ before whitespace or a quote: user info, even one
# holding characters a URL should have escaped (a '/', '?' or '#' in a password)
_USER_INFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"<>]*@")
# ?key=value, &key=value, ;key=value, #key=value: the value, up to the next separator
_QUERY_VALUE = re.compile(r"(?P<key>[?&;#][^=&;#\s'\"<>]+=)[^&;#\s'\"<>]*")
_AUTHORIZATION = re.compile(r"(?P<key>\b(?:Proxy-)?Authorization\s*[:=]\s*)(?:(?:Basic|Bearer|Token|Digest)\s+)?\S+",
                            re.I)
# query parameter names that usually carry a credential (for the warning about params)
_SECRET_NAME = re.compile(r"token|key|sig|signature|secret|password|passwd|pwd|credential|auth|session|"
                          r"^x-amz-|^x-goog-", re.I)


def redact(text: object) -> str:
    """`text` (anything, as str) with user info, query values and authorization values masked."""
    text = str(text)
    text = _USER_INFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _QUERY_VALUE.sub(lambda m: f"{m.group('key')}{MASK}", text)
    return _AUTHORIZATION.sub(lambda m: f"{m.group('key')}{MASK}", text)


def credentials_in(url: str) -> list[str]:
    """What in `url` looks like a credential: 'user info', and the names of query parameters
    that usually hold one (token, key, signature, X-Amz-Credential, ...)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return []
    found = ["user info"] if "@" in parts.netloc else []
    names = [name for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    return found + [f"query parameter {name!r}" for name in names if _SECRET_NAME.search(name)]


def format_exception(e: BaseException) -> str:
    """A traceback, masked."""
    return redact("".join(traceback.format_exception(e)))


def mask_log_records() -> None:
    """Mask every log record of this process, whichever logger or handler it goes through: its
    message, each of its arguments (kept in place, so formatters that read them still work:
    numbers stay numbers, anything else becomes its masked text) and its traceback. Python
    warnings are routed through logging too."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "masks_secrets", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_masked(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _masked(v) for k, v in record.args.items()}
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = format_exception(record.exc_info[1]).rstrip("\n")
        return record

    factory.masks_secrets = True
    logging.setLogRecordFactory(factory)
    logging.captureWarnings(True)


def _masked(value):
    return value if isinstance(value, (int, float, type(None))) else redact(value)
