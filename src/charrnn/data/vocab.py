"""The character vocabulary: id 0 is the reserved [UNK], ids 1.. are characters by code point.
A vocabulary extended for fine-tuning (`extended`) keeps its parent's ids and gives the new
corpus's other characters the next ones, by code point.

Counting and encoding work on NumPy arrays of code points, so a corpus streams through in chunks
at tens of MB/s and thousands of distinct characters (CJK) cost nothing extra. A corpus file is
read as UTF-8 bytes (read_utf8): a chunk of ASCII alone, most of an English text, is its own code
points and needs no decoding at all (hundreds of MB/s); any other chunk is decoded, which also
checks that it is UTF-8.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from charrnn.core import files
from charrnn.core.errors import CharrnnError

UNK = "[UNK]"
UNK_ID = 0
FORMAT = 1  # vocab.json's layout: {"format", "unk", "chars", "counts"}
_MAX_CODE_POINT = 0x110000
CHUNK_CHARS = 1 << 22  # characters per chunk when streaming a corpus
CHUNK_BYTES = 1 << 23  # bytes per chunk when streaming a corpus as UTF-8 (read_utf8)


class VocabError(CharrnnError, ValueError):
    pass


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def read_chunks(path: str | Path, chunk_chars: int | None = None) -> Iterable[str]:
    with open(path, encoding="utf-8", newline="") as f:
        while chunk := f.read(chunk_chars or CHUNK_CHARS):
            yield chunk


def read_utf8(path: str | Path, start: int = 0, stop: int | None = None,
              chunk_bytes: int | None = None) -> Iterator[bytes]:
    """Bytes [start, stop) of a UTF-8 file (both on character boundaries), chunk by chunk, each
    chunk ending on a character boundary: a character cut by the chunk's end goes to the next."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    with open(path, "rb") as f:
        f.seek(start)
        left = None if stop is None else stop - start
        held = b""
        while left is None or left > 0:
            block = f.read(chunk_bytes if left is None else min(chunk_bytes, left))
            if not block:
                break
            if left is not None:
                left -= len(block)
            block = held + block
            cut = _last_boundary(block)
            held = block[cut:]
            if cut:
                yield block[:cut]
        if held:
            yield held  # not a whole character: decoding it fails as the text reader would


def _last_boundary(block: bytes) -> int:
    """Where the last whole character of `block` ends (len(block) unless a character is cut)."""
    if not block or block[-1] < 0x80:
        return len(block)
    i = len(block) - 1
    while i > 0 and len(block) - i < 4 and block[i] & 0xC0 == 0x80:  # back to the lead byte
        i -= 1
    lead = block[i]
    need = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return i if i + need > len(block) else len(block)


def utf8_code_points(chunk: bytes) -> np.ndarray:
    """The code points of a UTF-8 chunk: the bytes themselves when all are ASCII (uint8), else
    decoded (uint32; invalid UTF-8 raises UnicodeDecodeError)."""
    if chunk.isascii():
        return np.frombuffer(chunk, dtype=np.uint8)
    return code_points(chunk.decode("utf-8"))


def count_utf8(chunks: Iterable[bytes]) -> np.ndarray:
    """count_chars of UTF-8 chunks (read_utf8): occurrences of every code point."""
    counts = np.zeros(_MAX_CODE_POINT, dtype=np.int64)
    for chunk in chunks:
        cps = utf8_code_points(chunk)
        for i in range(0, len(cps), 1 << 20):  # bincount is fastest on blocks that stay in cache
            part = np.bincount(cps[i:i + (1 << 20)])
            counts[:len(part)] += part
    return counts


def count_chars(chunks: Iterable[str]) -> np.ndarray:
    """Occurrences of every code point, as an array indexed by code point."""
    counts = np.zeros(_MAX_CODE_POINT, dtype=np.int64)
    for chunk in chunks:
        counts += np.bincount(code_points(chunk), minlength=_MAX_CODE_POINT)
    return counts


@dataclass(frozen=True)
class Vocabulary:
    chars: tuple[str, ...]  # id i + 1 -> chars[i]: sorted by code point, or a parent's then the new ones (extended)
    counts: tuple[int, ...]  # corpus count of each kept character

    def __post_init__(self):
        if not all(isinstance(c, str) and len(c) == 1 and not 0xD800 <= ord(c) <= 0xDFFF for c in self.chars):
            raise VocabError("vocabulary entries must be single characters (no lone surrogates)")
        if len(self.counts) != len(self.chars) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in self.counts):
            raise VocabError("vocabulary counts must be one non-negative integer per character")
        cps = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        if len(np.unique(cps)) != len(cps):
            raise VocabError("vocabulary characters must be distinct")
        object.__setattr__(self, "_cps", cps)

    @property
    def size(self) -> int:
        """Number of ids, [UNK] included: the model's input and output dimension."""
        return len(self.chars) + 1

    @property
    def id_to_char(self) -> list[str]:
        return [UNK, *self.chars]

    @classmethod
    def from_counts(cls, counts: np.ndarray, min_count: int = 1, max_size: int = 0) -> "Vocabulary":
        """Keep characters seen at least `min_count` times, at most `max_size` of them (0: all).

        When `max_size` cuts, the most frequent win; ties go to the lower code point.
        """
        present = np.flatnonzero(counts >= max(min_count, 1))
        if max_size and len(present) > max_size:
            order = np.lexsort((present, -counts[present]))  # by count desc, then code point
            present = np.sort(present[order[:max_size]])
        if len(present) == 0:
            raise VocabError(
                "the vocabulary would hold nothing but [UNK]: lower vocab.min_count "
                f"(now {min_count}) or raise vocab.max_size"
            )
        return cls(tuple(chr(c) for c in present), tuple(int(counts[c]) for c in present))

    def extended(self, counts: np.ndarray, min_count: int = 1, max_size: int = 0) -> "Vocabulary":
        """This vocabulary (a parent model's) with the characters a corpus's own vocabulary would
        keep (from_counts) and this one lacks appended, by code point: every id keeps its meaning.
        Counts are the corpus's, for every character."""
        kept = set(self.chars)
        chars = self.chars + tuple(c for c in Vocabulary.from_counts(counts, min_count, max_size).chars if c not in kept)
        return Vocabulary(chars, tuple(int(counts[ord(c)]) for c in chars))

    def encode(self, text: str) -> np.ndarray:
        """Ids of `text`'s characters (int32); characters outside the vocabulary become [UNK]."""
        return self.encode_code_points(code_points(text))

    def encode_utf8(self, chunk: bytes, dtype=np.int32) -> np.ndarray:
        """Ids of a UTF-8 chunk's characters (read_utf8), as `dtype`; an ASCII chunk is one
        gather from a 128-entry table, with no decoding."""
        if chunk.isascii():
            return self._ascii_table(np.dtype(dtype))[np.frombuffer(chunk, dtype=np.uint8)]
        return self.encode(chunk.decode("utf-8")).astype(dtype, copy=False)

    def _ascii_table(self, dtype: np.dtype) -> np.ndarray:
        tables = self.__dict__.setdefault("_ascii_tables", {})
        if dtype not in tables:
            tables[dtype] = self.encode_code_points(np.arange(128, dtype=np.uint32)).astype(dtype)
        return tables[dtype]

    def encode_code_points(self, cps: np.ndarray) -> np.ndarray:
        # One gather from a table indexed by code point (its last entry: anything above the
        # largest code point of the vocabulary, i.e. [UNK]).
        table = self._table()
        return table[np.minimum(cps, len(table) - 1)]

    def _table(self) -> np.ndarray:
        table = self.__dict__.get("_id_table")
        if table is None:
            top = int(self._cps.max()) + 1 if len(self._cps) else 0
            table = np.full(top + 1, UNK_ID, dtype=np.int32)
            table[self._cps] = np.arange(1, len(self._cps) + 1, dtype=np.int32)
            object.__setattr__(self, "_id_table", table)
        return table

    def decode(self, ids: Iterable[int]) -> str:
        table = self.id_to_char
        return "".join(table[i] for i in ids)

    def unknown_chars(self, text: str) -> list[str]:
        return sorted({c for c in text if self.encode(c)[0] == UNK_ID})

    def to_json(self) -> str:
        return files.dumps_json({"format": FORMAT, "unk": UNK, "chars": list(self.chars), "counts": list(self.counts)})

    def save(self, path: str | Path) -> None:
        files.write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """Read a vocabulary file; anything but a well-formed one of FORMAT is a VocabError."""
        try:
            return cls.from_dict(files.read_json(path))
        except FileNotFoundError:
            raise VocabError(f"{path}: vocabulary not found (run `dvc repro build_vocab`)") from None
        except IsADirectoryError:
            raise VocabError(f"{path}: is a directory, not a vocabulary file") from None
        except (VocabError, UnicodeDecodeError, ValueError) as e:  # json's errors are ValueErrors
            raise VocabError(f"{path}: not a charrnn vocabulary ({e})") from None

    @classmethod
    def from_dict(cls, data) -> "Vocabulary":
        """What to_json wrote: the format version, the [UNK] entry that id 0 stands for, and the
        kept characters with their counts. A file without them, or of another version, would
        load into ids that mean something else to the model, so it is refused."""
        if not isinstance(data, dict) or not isinstance(data.get("chars"), list) \
                or not isinstance(data.get("counts"), list):
            raise VocabError("expected an object with the lists 'chars' and 'counts'")
        if type(data.get("format")) is not int or data["format"] != FORMAT:
            raise VocabError(f"'format' is {data.get('format')!r}; this charrnn reads format {FORMAT} only")
        if data.get("unk") != UNK:
            raise VocabError(f"'unk' (what id {UNK_ID} stands for) must be {UNK!r}, got {data.get('unk')!r}")
        if unknown := set(data) - {"format", "unk", "chars", "counts"}:
            raise VocabError(f"unknown keys {sorted(unknown)}")
        return cls(tuple(data["chars"]), tuple(data["counts"]))

    @property
    def fingerprint(self) -> str:
        """sha256 of the canonical JSON: recorded in a model so a mismatched pair is caught early."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()


def vocab_metrics(vocab: Vocabulary, counts: np.ndarray, documents: list[dict] = ()) -> dict:
    """The vocabulary's figures; for a corpus of many documents also the documents (name, bytes,
    sha256), so a run says which files it learned from. A corpus of one keeps the figures alone:
    its source is data.source itself, and its metrics file stays as it was."""
    total = int(counts.sum())
    covered = int(sum(vocab.counts))
    metrics = {
        "size": vocab.size,
        "distinct_chars": int(np.count_nonzero(counts)),
        "corpus_chars": total,
        "coverage": covered / total if total else 0.0,
        "unk_rate": (total - covered) / total if total else 0.0,
    }
    if len(documents) > 1:
        metrics["documents"] = [{k: d[k] for k in ("name", "bytes", "sha256")} for d in documents]
    return metrics
