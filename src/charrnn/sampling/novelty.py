"""Is the model copying its corpus? Verbatim-overlap metrics of generated samples against the
training text, streamed in bounded memory (pure Python + NumPy).

Method. Every character window is hashed with a polynomial hash over code points, modulo 2**64
(NumPy uint64 arithmetic wraps): h(window at q, length n) = sum_j c[q+j] * B**j. For a block of
text, P[k] = sum_{j<k} c[j] * B**j is one cumulative sum, and the hash of every window of length
n is (P[q+n] - P[q]) * B**-q, two vectorised array operations (B is odd, so invertible mod 2**64).
The samples are small: their windows are hashed once and kept as sorted unique hashes, plus a
bucket table on the top hash bits that rejects almost every corpus window with one gather, so the
binary search (np.searchsorted) runs on the few survivors only. The corpus is then streamed
chunk by chunk (the last n-1 code points carried over so no window is lost at a boundary) in
blocks of BLOCK code points, and every corpus window of each length needed is looked up.

Passes. One pass over the corpus finds the copied fraction for `ngram` and every length in
`also` together. The longest copied span is exact: a span of length L occurs only if every
sub-span of length K < L does, so a pass that knows which sample windows of length K occur
restricts length L to the windows covered by L - K + 1 consecutive matched K-windows, and the
longest such run also bounds L from above. From the largest length known to match, the search
doubles (clamped to that bound) until a length fails, then binary-searches between the last
match and the first failure; each probe is one pass, and a probe at the bound itself is often the
last. Typical costs: samples that copy long verbatim stretches (500-character samples, ngram=20,
also=(50,)): 1 + 4 passes (100, 200, 400, then the bound); samples that copy nothing of 20
characters: 1 + 3 to 5 passes (a binary search below 20). Each pass is O(corpus characters);
bench/novelty.py measures about 150-190 MB/s per pass on one core.

Memory: one chunk of text, its code points, and a handful of uint64 arrays of BLOCK entries
(8 MiB each), whatever the corpus size: about 200 MiB peak with 4M-character chunks.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from charrnn.data.vocab import code_points

# Collisions: for two different windows of the same length the hash difference is a nonzero
# polynomial in B; over non-adversarial text we take a 64-bit hash as uniform, so a corpus of
# 1e9 windows against 1e4 sample windows (1e13 pairs) expects ~1e13 / 2**64 ~ 5e-7 false matches
# per pass. Hashes mod 2**64 are weak only against crafted inputs (a Thue-Morse string of 2048
# characters and its complement collide for every odd base), which neither prose nor samples are.
BASE = 0x9E3779B97F4A7C15  # odd: 2**64 / golden ratio
_BASE_INVERSE = pow(BASE, -1, 1 << 64)
BLOCK = 1 << 20  # corpus windows hashed at a time
DISPLAY_CHARS = 200  # longest_copied_text is cut to this


def copy_metrics(training_text_chunks: Iterable[str], samples: list[str], ngram: int = 20,
                 also: tuple[int, ...] = (50,), distinct_n: int = 4) -> dict:
    """Verbatim overlap of `samples` (prompts already removed) with the training text.

    `training_text_chunks` is read several times (see the module docstring), so it must be
    re-iterable: a list, or charrnn.data.split.TextSpan (a span of a corpus file, read again on each
    iteration); a one-shot iterator is refused.
    Returns a JSON-ready dict:
      copy_ngram: `ngram`;
      copied_frac_{n}, ngrams_{n} for n in (ngram, *also): the fraction of the samples' n-grams
        (every position, no n-gram across two samples) that occur verbatim in the training text,
        and how many n-grams there are (0, and a fraction of None, if the samples are shorter);
      longest_copied, longest_copied_text: the length of the longest span of a sample that occurs
        verbatim, and that span (the first in sample order, cut to DISPLAY_CHARS characters);
      distinct_{distinct_n}: distinct n-grams / n-gram positions over the samples pooled (None if none);
      unmeasured (only when a figure is None): {figure: why it is None}.
    """
    if iter(training_text_chunks) is training_text_chunks:
        raise TypeError("copy_metrics reads the training text several times: pass a list of chunks "
                        "or a split.TextSpan, not a one-shot iterator")
    lengths = sorted({ngram, *also})
    if min(lengths + [distinct_n]) < 1:
        raise ValueError(f"n-gram lengths must be at least 1, got ngram={ngram}, also={also}, "
                         f"distinct_n={distinct_n}")
    codes = [code_points(sample) for sample in samples]
    hasher = _RollingHash()
    windows = _SampleWindows(hasher, codes)

    matched = windows.find_in(training_text_chunks, {n: windows.all(n) for n in lengths})
    out: dict = {"copy_ngram": ngram}
    unmeasured = {}
    for n in lengths:
        total = sum(m.size for m in matched[n])
        out[f"copied_frac_{n}"] = sum(int(m.sum()) for m in matched[n]) / total if total else None
        out[f"ngrams_{n}"] = total
        if not total:
            unmeasured[f"copied_frac_{n}"] = why_unmeasured(n, max(windows.sizes, default=0))
    length, sample, start = _longest_copied(training_text_chunks, windows, matched)
    out["longest_copied"] = length
    out["longest_copied_text"] = samples[sample][start:start + min(length, DISPLAY_CHARS)] if length else ""
    out[f"distinct_{distinct_n}"] = windows.distinct_ratio(distinct_n)
    if out[f"distinct_{distinct_n}"] is None:
        unmeasured[f"distinct_{distinct_n}"] = why_unmeasured(distinct_n, max(windows.sizes, default=0))
    if unmeasured:
        out["unmeasured"] = unmeasured
    return out


def why_unmeasured(n: int, longest: int) -> str:
    """Why a figure over the samples' n-grams is null: there are none (0.0 would read as "new text")."""
    return (f"no {n}-gram to measure: the longest sample holds {longest} character(s) after its prompt; "
            f"raise sample.num_chars above {n - 1} or lower the n-gram length")


class _RollingHash:
    """Polynomial window hashes mod 2**64 of code-point arrays; B**i and B**-i are tabulated for
    i up to the longest array seen so far."""

    def __init__(self):
        self.up = self.down = np.ones(1, dtype=np.uint64)

    @staticmethod
    def _powers(base: int, n: int) -> np.ndarray:
        powers = np.full(n, base, dtype=np.uint64)
        powers[0] = 1
        return np.cumprod(powers)

    def prefix(self, codes: np.ndarray) -> np.ndarray:
        """P with P[k] = sum_{j<k} codes[j] * B**j."""
        if len(codes) > len(self.up):
            size = max(len(codes), 2 * len(self.up))
            self.up, self.down = self._powers(BASE, size), self._powers(_BASE_INVERSE, size)
        prefix = np.zeros(len(codes) + 1, dtype=np.uint64)
        np.cumsum(codes.astype(np.uint64) * self.up[:len(codes)], out=prefix[1:])
        return prefix

    def windows(self, prefix: np.ndarray, n: int) -> np.ndarray:
        """Hashes of all windows of length n of the text whose prefix() this is."""
        count = len(prefix) - n
        if count <= 0:
            return np.zeros(0, dtype=np.uint64)
        return (prefix[n:] - prefix[:count]) * self.down[:count]


class _Lookup:
    """Membership of corpus window hashes among the hashes of some sample windows."""

    def __init__(self, hashes: np.ndarray):
        self.keys, self.key_of_window = np.unique(hashes, return_inverse=True)
        # >= 256 buckets per key (up to 2**18 keys): a corpus window passes with probability <= 1/256
        bits = int(np.clip(np.ceil(np.log2(len(self.keys))) + 8, 16, 26))
        self.shift = np.uint64(64 - bits)
        self.table = np.zeros(1 << bits, dtype=bool)
        self.table[self.keys >> self.shift] = True
        self.found = np.zeros(len(self.keys), dtype=bool)

    def mark(self, corpus_hashes: np.ndarray) -> None:
        maybe = corpus_hashes[self.table[corpus_hashes >> self.shift]]
        at = np.minimum(np.searchsorted(self.keys, maybe), len(self.keys) - 1)
        self.found[at[self.keys[at] == maybe]] = True

    def matched_windows(self) -> np.ndarray:
        return self.found[self.key_of_window]


class _SampleWindows:
    """The samples' windows. A selection of windows of length n is a list of boolean masks, one
    per sample, over its len(sample) - n + 1 window starts."""

    def __init__(self, hasher: _RollingHash, codes: list[np.ndarray]):
        self.hasher = hasher
        self.sizes = [len(c) for c in codes]
        self.prefixes = [hasher.prefix(c) for c in codes]

    def all(self, n: int) -> list[np.ndarray]:
        return [np.ones(max(size - n + 1, 0), dtype=bool) for size in self.sizes]

    def hashes(self, n: int, selection: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.zeros(0, dtype=np.uint64)]
                              + [self.hasher.windows(p, n)[s] for p, s in zip(self.prefixes, selection)])

    def distinct_ratio(self, n: int) -> float | None:
        hashes = self.hashes(n, self.all(n))
        return len(np.unique(hashes)) / len(hashes) if len(hashes) else None

    def find_in(self, chunks: Iterable[str], candidates: dict[int, list[np.ndarray]]) -> dict[int, list[np.ndarray]]:
        """One pass over the corpus (none if there is nothing to look for): for each length n, which
        of the candidate windows candidates[n] occur in it."""
        lookups = {n: _Lookup(h) for n, selection in candidates.items() if len(h := self.hashes(n, selection))}
        if lookups:
            _stream(chunks, self.hasher, lookups)
        found = {}
        for n, selection in candidates.items():
            flags = lookups[n].matched_windows() if n in lookups else np.zeros(0, dtype=bool)
            found[n] = _scatter(flags, selection)
        return found


def _scatter(flags: np.ndarray, selection: list[np.ndarray]) -> list[np.ndarray]:
    """Masks like `selection`, True where the selected window's entry of `flags` (in order) is."""
    out, used = [], 0
    for mask in selection:
        hit = np.zeros_like(mask)
        count = int(mask.sum())
        hit[mask] = flags[used:used + count]
        used += count
        out.append(hit)
    return out


def _stream(chunks: Iterable[str], hasher: _RollingHash, lookups: dict[int, _Lookup]) -> None:
    """Look every corpus window of each length in `lookups` up in it."""
    longest = max(lookups)
    carry = np.zeros(0, dtype=np.uint32)
    for chunk in chunks:
        text = np.concatenate([carry, code_points(chunk)])
        for start in range(0, len(text), BLOCK):
            prefix = hasher.prefix(text[start:start + BLOCK + longest - 1])
            for n, lookup in lookups.items():
                lookup.mark(hasher.windows(prefix, n))
        # windows that start here end in the next chunk (shorter ones were seen: marking is idempotent)
        carry = text[max(len(text) - longest + 1, 0):]


def _longest_copied(chunks: Iterable[str], windows: _SampleWindows,
                    known: dict[int, list[np.ndarray]]) -> tuple[int, int, int]:
    """(length, sample, start) of the longest sample span found in the corpus, the first in sample
    order among the longest; (0, 0, 0) if none. `known`: windows found in it, by length."""
    found = {n: m for n, m in known.items() if any(a.any() for a in m)}
    lo = max(found, default=0)
    lo_matched = found[lo] if lo else windows.all(0)  # the empty span occurs anywhere
    failed = [n for n, m in known.items() if n not in found and any(a.size for a in m)]
    hi = min(failed, default=max(windows.sizes, default=0) + 1)  # smallest length known not to occur
    doubling = not failed
    while True:
        # L needs L - lo + 1 consecutive matched lo-windows
        hi = min(hi, lo + max((_longest_run(m) for m in lo_matched), default=0))
        if hi - lo <= 1:
            break
        probe = min(2 * lo, hi - 1) if doubling and lo else (lo + hi) // 2
        matched = windows.find_in(chunks, {probe: _candidates(lo_matched, lo, probe)})[probe]
        if any(m.any() for m in matched):
            lo, lo_matched = probe, matched
        else:
            hi, doubling = probe, False
    if lo == 0:
        return 0, 0, 0
    sample = next(s for s, m in enumerate(lo_matched) if m.any())
    return lo, sample, int(np.argmax(lo_matched[sample]))


def _candidates(matched: list[np.ndarray], k: int, n: int) -> list[np.ndarray]:
    """Windows of length n > k all of whose k-windows are `matched`."""
    need = n - k + 1
    out = []
    for m in matched:
        covered = np.concatenate([[0], np.cumsum(m)])
        out.append(covered[need:] - covered[:-need] == need if len(m) >= need else np.zeros(0, dtype=bool))
    return out


def _longest_run(mask: np.ndarray) -> int:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return int((edges[1::2] - edges[::2]).max(initial=0))
