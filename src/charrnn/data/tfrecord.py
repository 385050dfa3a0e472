"""TFRecord files written with NumPy alone: no TensorFlow import in the data stages.

A TFRecord is, per record: uint64 length, uint32 masked CRC-32C of the length, the bytes, uint32
masked CRC-32C of the bytes (all little-endian). Our records in one block all have the same
length, so the CRC-32C of thousands of records is computed at once, column by column, with
slicing-by-4 lookup tables (folded into two 16-bit ones). A long record (tens of KiB) is cut into
segments of SEGMENT bytes, whose CRCs are computed the same way, all at once, and combined (the
CRC is linear: crc(a + b) is crc(a) carried over len(b) zero bytes, xor crc(b)). The bytes are
exactly those tf.io.TFRecordWriter writes (tested).
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


SEGMENT = 256  # bytes: rows longer than 2 segments are computed segment by segment


def crc32c(rows: np.ndarray, block: int = 16384) -> np.ndarray:
    """CRC-32C of each row of a uint8 array [n, length] -> uint32 [n]."""
    rows = np.asarray(rows, dtype=np.uint8)
    if rows.shape[1] > 2 * SEGMENT:
        step = max(1, (block * SEGMENT) // rows.shape[1])  # about `block` segments at a time
        return np.concatenate([_crc32c_long(rows[i : i + step]) for i in range(0, len(rows), step)])
    if len(rows) > block:  # blocks small enough for the working arrays to stay in cache
        return np.concatenate([_crc32c(rows[i : i + block]) for i in range(0, len(rows), block)])
    return _crc32c(rows)


def _crc32c_long(rows: np.ndarray) -> np.ndarray:
    """crc32c of long rows: the register of each SEGMENT-byte segment from 0, for all segments
    at once, then folded per row (Horner: carry the register over a segment of zeros, xor the
    next segment's). Zeros put in front of a row leave a register of 0 at 0, and the standard
    CRC's initial 0xFFFFFFFF and final xor contribute crc32c(zeros of the row's length)."""
    n, length = rows.shape
    parts = -(-length // SEGMENT)
    padded = np.zeros((n, parts * SEGMENT), dtype=np.uint8)
    padded[:, parts * SEGMENT - length:] = rows
    registers = _crc32c(padded.reshape(n * parts, SEGMENT), init=0, xorout=0).reshape(n, parts)
    level = 0
    while registers.shape[1] > 1:  # pairs of neighbours, level by level: (left carried over right) ^ right
        if registers.shape[1] % 2:  # a zero register in front: zeros before a row change nothing
            registers = np.concatenate([np.zeros((n, 1), np.uint32), registers], axis=1)
        registers = _carry(registers[:, 0::2], _zero_tables(level)) ^ registers[:, 1::2]
        level += 1
    return registers[:, 0] ^ _zeros_crc(length)


def _carry(registers: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Registers carried over zero bytes, by the [4, 256] tables of that many (_zero_bytes_tables)."""
    return (tables[0][registers & 0xFF] ^ tables[1][(registers >> 8) & 0xFF]
            ^ tables[2][(registers >> 16) & 0xFF] ^ tables[3][registers >> 24])


_ZERO_TABLES: list[np.ndarray] = []


def _zero_tables(level: int) -> np.ndarray:
    """The tables that carry a register over SEGMENT * 2**level zero bytes: each level the one
    before applied twice."""
    while len(_ZERO_TABLES) <= level:
        if not _ZERO_TABLES:
            _ZERO_TABLES.append(_zero_bytes_tables(SEGMENT))
        else:
            prev = _ZERO_TABLES[-1]  # prev[k][b] = M(b << 8k), so M(M(b << 8k)) = _carry(prev, prev)
            _ZERO_TABLES.append(_carry(prev, prev))
    return _ZERO_TABLES[level]


def _zero_bytes_tables(count: int) -> np.ndarray:
    """[4, 256] tables of the linear map "feed `count` zero bytes" on a CRC register, a byte of
    the register per table: map(r) = t[0][r & 0xFF] ^ t[1][r >> 8 & 0xFF] ^ ..."""
    images = np.uint32(1) << np.arange(32, dtype=np.uint32)  # each bit of the register, fed the zeros
    for _ in range(count):
        images = (images >> 8) ^ _T[0][images & 0xFF]
    bits = (np.arange(256, dtype=np.uint32)[:, None] >> np.arange(8, dtype=np.uint32)) & 1  # [256, 8]
    return np.stack([np.bitwise_xor.reduce(np.where(bits == 1, images[8 * k : 8 * k + 8], np.uint32(0)), axis=1)
                     for k in range(4)]).astype(np.uint32)


_zeros_crcs: dict[int, np.uint32] = {}


def _zeros_crc(length: int) -> np.uint32:
    """crc32c of `length` zero bytes (cached: a few lengths occur)."""
    if length not in _zeros_crcs:
        _zeros_crcs[length] = _crc32c(np.zeros((1, length), dtype=np.uint8))[0]
    return _zeros_crcs[length]


def _crc32c(rows: np.ndarray, init: int = 0xFFFFFFFF, xorout: int = 0xFFFFFFFF) -> np.ndarray:
    n, length = rows.shape
    crc = np.full(n, init, dtype=np.uint32)
    words = length // 4
    if words:
        w = np.ascontiguousarray(rows[:, : words * 4]).view("<u4").T.copy()  # [words, n]: rows contiguous
        x, lo, hi = np.empty(n, np.uint32), np.empty(n, np.intp), np.empty(n, np.intp)
        a, b = np.empty(n, np.uint32), np.empty(n, np.uint32)
        for j in range(words):  # in place, indices already intp: about twice the speed of `_LO[x & 0xFFFF]`
            np.bitwise_xor(crc, w[j], out=x)
            np.bitwise_and(x, 0xFFFF, out=lo, casting="unsafe")
            np.right_shift(x, 16, out=hi, casting="unsafe")
            np.take(_LO, lo, out=a)
            np.take(_HI, hi, out=b)
            np.bitwise_xor(a, b, out=crc)
    for j in range(words * 4, length):
        crc = _T[0][(crc ^ rows[:, j]) & 0xFF] ^ (crc >> 8)
    return crc ^ np.uint32(xorout)



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
    """Records to <prefix>-NNNNN.tfrecord files, shard by shard in order: the caller says which
    shard each block of records belongs to (charrnn.data.records plans them)."""

    def __init__(self, directory: Path, prefix: str):
        self.directory, self.prefix = Path(directory), prefix
        self.names: list[str] = []
        self.count = 0
        self._file = None

    def write_rows(self, shard: int, rows: np.ndarray) -> None:
        """Write each row of a uint8 array [n, length] (rows may overlap: a sliding-window view)
        as one record, into shard `shard` (the current one or a later one)."""
        if not len(rows):
            return
        while shard >= len(self.names):
            self._open_next()
        n, length = rows.shape
        header = np.zeros(1, np.dtype([("length", "<u8"), ("length_crc", "<u4")]))
        header["length"] = length
        header["length_crc"] = masked_crc32c(header.view(np.uint8)[None, :8])[0]
        header = header.tobytes()
        crcs = masked_crc32c(rows).astype("<u4")
        for i in range(n):  # records of tens of KiB: a write per part costs nothing
            self._file.write(header)
            self._file.write(np.ascontiguousarray(rows[i]).data)
            self._file.write(crcs[i].tobytes())
        self.count += n

    def _open_next(self) -> None:
        self.close()
        name = f"{self.prefix}-{len(self.names):05d}.tfrecord"
        self.names.append(name)
        self._file = open(self.directory / name, "wb")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
