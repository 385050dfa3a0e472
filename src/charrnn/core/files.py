"""Atomic outputs and content hashes.

Every stage output is written under a temporary name beside its final place and renamed into
place only when complete, so an interrupted stage never leaves a half file that DVC could cache.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

MAX_JSON_DEPTH = 64  # far beyond any file the project writes (a config's clusters: 3 levels)


def loads_json(text: str):
    """json.loads for every JSON file the project reads. Nesting deeper than MAX_JSON_DEPTH (a
    hostile file of 10,000 levels, which Python's parser meets with a RecursionError) is a
    ValueError, as any other malformed JSON is, so each reader reports it as its own one error."""
    too_deep = ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        data = json.loads(text)
    except RecursionError:
        raise too_deep from None
    if _too_deep(data):
        raise too_deep
    return data


def read_json(path: str | Path):
    """A JSON file's content (UTF-8); OSError, UnicodeDecodeError or ValueError if it cannot be read."""
    return loads_json(Path(path).read_text(encoding="utf-8"))


def _too_deep(data) -> bool:
    level = [data]
    for _ in range(MAX_JSON_DEPTH):
        level = [child for node in level if isinstance(node, (list, dict))
                 for child in (node.values() if isinstance(node, dict) else node)]
        if not level:
            return False
    return any(isinstance(node, (list, dict)) for node in level)


def dumps_json(obj) -> str:
    """Canonical JSON: sorted keys, fixed indent, UTF-8 characters kept, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (file or directory); rename it into place on success.

    The caller creates whatever it likes at the yielded path. On an exception the temporary is
    removed and any previous output at `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written for {path}")
        _replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace(src: Path, dst: Path) -> None:
    if src.is_dir() and dst.exists():
        # A directory cannot be renamed over another: move the old one aside first.
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(src, dst)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def write_json(path: str | Path, obj) -> None:
    write_text(path, dumps_json(obj))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Content hash of a file, or of a directory's files (relative names + contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(sha256_file(f).encode() + b"\n")
    return h.hexdigest()
