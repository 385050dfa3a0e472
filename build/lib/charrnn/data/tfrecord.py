"""TFRecord files written with NumPy alone: no TensorFlow import in the data stages.

A TFRecord is, per record: uint64 length, uint32 masked CRC-32C of the length, the bytes, uint32
masked CRC-32C of the bytes (all little-endian). Our records in one block all have the same
length, so the CRC-32C of thousands of records is computed at once, column by column, with
slicing-by-4 lookup tables (folded into two 16-bit ones). The bytes are exactly those tf.io.TFRecordWriter writes (tested).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def _tables() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    tables = [t]
    for _ in range(3):  # tables[k][b]: the CRC of byte b followed by k zero bytes
        prev = tables[-1]
        tables.append((prev >> 8) ^ t[prev & 0xFF])
    return np.stack(tables)


_T = _tables()
# The four byte tables folded into two 16-bit ones: a word's low and high halves in one gather each.
_v = np.arange(1 << 16, dtype=np.uint32)
_LO = _T[3][_v & 0xFF] ^ _T[2][_v >> 8]
_HI = _T[1][_v & 0xFF] ^ _T[0][_v >> 8]
del _v


def crc32c(rows: np.ndarray, block: int = 16384) -> np.ndarray:
    """CRC-32C of each row of a uint8 array [n, length] -> uint32 [n]."""
    rows = np.asarray(rows, dtype=np.uint8)
    if len(rows) > block:  # blocks small enough for the working arrays to stay in cache
        return np.concatenate([_crc32c(rows[i : i + block]) for i in range(0, len(rows), block)])
    return _crc32c(rows)


def _crc32c(rows: np.ndarray) -> np.ndarray:
    n, length = rows.shape
    crc = np.full(n, 0xFFFFFFFF, dtype=np.uint32)
    words = length // 4
    if words:
        w = np.ascontiguousarray(rows[:, : words * 4]).view("<u4").T.copy()  # [words, n]: rows contiguous
        for j in range(words):
            x = crc ^ w[j]
            crc = _LO[x & 0xFFFF] ^ _HI[x >> 16]
    for j in range(words * 4, length):
        crc = _T[0][(crc ^ rows[:, j]) & 0xFF] ^ (crc >> 8)
    return crc ^ np.uint32(0xFFFFFFFF)


def masked_crc32c(rows: np.ndarray) -> np.ndarray:
    crc = crc32c(rows).astype(np.uint64)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def encode(rows: np.ndarray) -> bytes:
    """The TFRecord bytes of each row of a uint8 array [n, length] as one record, in order."""
    n, length = rows.shape
    layout = np.dtype([("length", "<u8"), ("length_crc", "<u4"), ("data", "u1", (length,)), ("data_crc", "<u4")])
    out = np.empty(n, layout)
    out["length"] = length
    header = np.frombuffer(np.uint64(length).astype("<u8").tobytes(), np.uint8)[None, :]
    out["length_crc"] = masked_crc32c(header)[0]
    out["data"] = rows
    out["data_crc"] = masked_crc32c(rows)
    return out.tobytes()


class ShardWriter:
    """Records to <prefix>-NNNNN.tfrecord files; a new shard starts once a shard holds
    shard_bytes of record data (the rule of the former tf.io.TFRecordWriter-based writer)."""

    def __init__(self, directory: Path, prefix: str, shard_bytes: int):
        self.directory, self.prefix, self.shard_bytes = Path(directory), prefix, shard_bytes
        self.names: list[str] = []
        self.count = 0
        self._file = None
        self._bytes = 0

    def write_rows(self, rows: np.ndarray) -> None:
        """Write each row of a 2-D array (any dtype, its raw bytes) as one record."""
        rows = np.ascontiguousarray(rows)
        raw = rows.view(np.uint8).reshape(len(rows), -1)
        length = raw.shape[1]
        i = 0
        while i < len(raw):
            if self._file is None or self._bytes >= self.shard_bytes:
                self._open_next()
            room = -(-(self.shard_bytes - self._bytes) // length)  # records until the shard is full
            part = raw[i : i + room]
            self._file.write(encode(part))
            self._bytes += part.size
            self.count += len(part)
            i += len(part)

    def _open_next(self) -> None:
        self.close()
        name = f"{self.prefix}-{len(self.names):05d}.tfrecord"
        self.names.append(name)
        self._file = open(self.directory / name, "wb")
        self._bytes = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
