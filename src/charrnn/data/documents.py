"""Corpora of many documents: a directory, a glob or an archive -> the files to read, in order.

A corpus of many files is read in a stable order (sorted by path), so the same folder always
makes the same corpus.txt. Archives are unpacked into a temporary directory, member by member,
after checks that no member escapes it, is a link or a device, or is bigger than the caps below:
an archive is untrusted input. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import glob
import os
import re
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from charrnn.core.errors import CharrnnError

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz")
# Caps on what an archive may unpack to (README "Corpora"): an archive bomb is refused before it
# fills the disk. Sizes are counted while unpacking, never taken from the archive's own headers.
MAX_MEMBER_BYTES = 2 << 30  # one member: 2 GiB
MAX_TOTAL_BYTES = 8 << 30  # all members together: 8 GiB
MAX_MEMBERS = 100_000
GLOB_CHARS = "*?["


class CorpusError(CharrnnError, ValueError):
    """A corpus that cannot be fetched or decoded; the message says what to change."""


def is_glob(source: str) -> bool:
    return any(c in source for c in GLOB_CHARS)


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def skipped(name: str) -> bool:
    """Hidden files (.gitignore, .DS_Store) and DVC's *.dvc pointers are not text of the corpus:
    `dvc add corpora/big.txt` writes both next to the file."""
    return name.startswith(".") or name.endswith(".dvc")


def local_documents(source: str) -> list[Path]:
    """The regular files a local directory or glob names, sorted by path; a clear error for a
    link, a FIFO, a device or a socket among them, for a glob matching nothing, an empty folder."""
    if is_glob(source) and not Path(source).expanduser().exists():  # `novels [1]/` is that folder
        matches = sorted(glob.glob(os.path.expanduser(source), recursive=True))
        if not matches:
            raise CorpusError(f"data.source {source!r} matches no file")
        found = [doc for match in matches for doc in walk(Path(match), source)]
    else:
        found = walk(Path(source).expanduser(), source)
    found = sorted(set(found))
    if not found:
        raise CorpusError(f"data.source {source!r} holds no file to read (hidden files and *.dvc files are skipped)")
    return found


def walk(top: Path, source: str) -> list[Path]:
    """`top` itself when it is a regular file, else every regular file below it."""
    _check_regular(top, source)
    if not top.is_dir():
        return [] if skipped(top.name) else [top]
    found = []
    for entry in sorted(top.iterdir()):
        if not skipped(entry.name):
            found += walk(entry, source)
    return found


def _check_regular(path: Path, source: str) -> None:
    mode = path.lstat().st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file (a FIFO, socket or device)"
        raise CorpusError(f"data.source {source!r}: {path} is {kind}; a corpus folder may hold only regular files")


# --- archives --------------------------------------------------------------------------------


def unpack(archive: Path, name: str, into: Path) -> Path:
    """Unpack a .zip or .tar.gz into `into` after checking every member; `into`."""
    try:
        if name.lower().endswith(".zip"):
            _unpack_zip(archive, name, into)
        else:
            _unpack_tar(archive, name, into)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, CorpusError):
            raise
        raise CorpusError(f"{name} is not a readable archive ({e})") from None
    return into


def _member_path(member: str, name: str) -> PurePosixPath:
    """The member's path inside the archive, refused when it would land outside the target."""
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", member):  # C:evil.txt: a drive
        raise CorpusError(f"{name}: the member {member!r} would be written outside the folder it unpacks to; "
                          "refused (an archive's members must have relative paths without '..')")
    return path


class _Budget:
    """Bytes and members unpacked so far, against the caps."""

    def __init__(self, name: str):
        self.name, self.total, self.members = name, 0, 0

    def member(self) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise CorpusError(f"{self.name} holds more than {MAX_MEMBERS:,} members; refused (the cap is "
                              "charrnn.data.documents.MAX_MEMBERS)")

    def copy(self, src, dest: Path, member: str) -> None:
        if dest.exists():
            raise CorpusError(f"{self.name} holds the member {member!r} twice; refused (which one is the text?)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with open(dest, "xb") as out:
            while block := src.read(1 << 20):
                written += len(block)
                self.total += len(block)
                if written > MAX_MEMBER_BYTES or self.total > MAX_TOTAL_BYTES:
                    raise CorpusError(
                        f"{self.name}: the member {member!r} unpacks past the cap of {MAX_MEMBER_BYTES:,} bytes a "
                        f"member, {MAX_TOTAL_BYTES:,} bytes in all; refused as an archive bomb (the caps are "
                        "charrnn.data.documents.MAX_MEMBER_BYTES and MAX_TOTAL_BYTES)")
                out.write(block)


def _unpack_zip(archive: Path, name: str, into: Path) -> None:
    budget = _Budget(name)
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            path = _member_path(info.filename, name)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no type recorded (a plain file, e.g. from Windows)
            if info.is_dir():
                continue
            if kind not in (0, stat.S_IFREG):
                raise CorpusError(f"{name}: the member {info.filename!r} is a link or not a regular file; refused")
            budget.member()
            with z.open(info) as src:
                budget.copy(src, into.joinpath(*path.parts), info.filename)


def _unpack_tar(archive: Path, name: str, into: Path) -> None:
    budget = _Budget(name)
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            path = _member_path(member.name, name)
            if member.isdir():
                continue
            if not member.isreg():
                raise CorpusError(f"{name}: the member {member.name!r} is a link or not a regular file; refused")
            budget.member()
            with tar.extractfile(member) as src:
                budget.copy(src, into.joinpath(*path.parts), member.name)
