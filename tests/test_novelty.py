"""Copy metrics of generated samples: exact against brute force, and they tell copying from not."""
import random

import numpy as np
import pytest

from charrnn.data import split, vocab
from charrnn.sampling import novelty


def reference(corpus: str, samples: list[str], ngram: int, also: tuple[int, ...], distinct_n: int) -> dict:
    """copy_metrics by plain substring checks."""
    out = {"copy_ngram": ngram}
    longest_sample = max(map(len, samples), default=0)
    for n in {ngram, *also}:
        grams = [s[i:i + n] for s in samples for i in range(len(s) - n + 1)]
        out[f"copied_frac_{n}"] = sum(g in corpus for g in grams) / len(grams) if grams else None
        out[f"ngrams_{n}"] = len(grams)
        if not grams:
            out.setdefault("unmeasured", {})[f"copied_frac_{n}"] = novelty.why_unmeasured(n, longest_sample)
    longest, text = 0, ""
    for s in samples:
        for i in range(len(s)):
            end = i + longest + 1
            while end <= len(s) and s[i:end] in corpus:
                end += 1
            if end - 1 - i > longest:
                longest, text = end - 1 - i, s[i:end - 1]
    out["longest_copied"] = longest
    out["longest_copied_text"] = text[:novelty.DISPLAY_CHARS]
    grams = [s[i:i + distinct_n] for s in samples for i in range(len(s) - distinct_n + 1)]
    out[f"distinct_{distinct_n}"] = len(set(grams)) / len(grams) if grams else None
    if not grams:
        out.setdefault("unmeasured", {})[f"distinct_{distinct_n}"] = novelty.why_unmeasured(distinct_n, longest_sample)
    return out


def chunked(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def random_case(seed: int) -> tuple[str, list[str], int, tuple[int, ...], int]:
    """A corpus over 2-4 letters and samples that are random, or mutated slices of the corpus."""
    rng = random.Random(seed)
    alphabet = rng.choice(["ab", "abc", "abcd"])
    corpus = "".join(rng.choices(alphabet, k=rng.randint(0, 80)))
    samples = []
    for _ in range(rng.randint(0, 4)):
        if corpus and rng.random() < 0.5:
            start = rng.randrange(len(corpus))
            sample = list(corpus[start:start + rng.randint(0, 30)])
            for _ in range(rng.randint(0, 2)):
                if sample:
                    sample[rng.randrange(len(sample))] = rng.choice(alphabet + "z")
            samples.append("".join(sample))
        else:
            samples.append("".join(rng.choices(alphabet, k=rng.randint(0, 25))))
    also = tuple(rng.sample(range(1, 14), rng.randint(0, 2)))
    return corpus, samples, rng.randint(1, 9), also, rng.randint(1, 5)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_matches_brute_force(chunk):
    for seed in range(150):
        corpus, samples, ngram, also, distinct_n = random_case(seed)
        got = novelty.copy_metrics(chunked(corpus, chunk), samples, ngram, also, distinct_n)
        assert got == reference(corpus, samples, ngram, also, distinct_n), (seed, corpus, samples)


@pytest.mark.parametrize("block", [1, 2, 5])
def test_block_boundaries_inside_a_chunk(monkeypatch, block):
    monkeypatch.setattr(novelty, "BLOCK", block)
    for seed in range(60):
        corpus, samples, ngram, also, distinct_n = random_case(seed)
        got = novelty.copy_metrics(chunked(corpus, 13), samples, ngram, also, distinct_n)
        assert got == reference(corpus, samples, ngram, also, distinct_n), (seed, corpus, samples)


def test_matches_brute_force_hypothesis():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(corpus=st.text("abc", max_size=60), samples=st.lists(st.text("abc", max_size=20), max_size=4),
                      chunk=st.sampled_from([1, 2, 3, 7, 100]), ngram=st.integers(1, 8),
                      also=st.lists(st.integers(1, 12), max_size=2), distinct_n=st.integers(1, 5))
    def check(corpus, samples, chunk, ngram, also, distinct_n):
        got = novelty.copy_metrics(chunked(corpus, chunk), samples, ngram, tuple(also), distinct_n)
        assert got == reference(corpus, samples, ngram, tuple(also), distinct_n)

    check()


def test_cjk_and_astral_characters():
    rng = random.Random(0)
    alphabet = "天地玄黄😀🎉"
    corpus = "".join(rng.choices(alphabet, k=300))
    samples = [corpus[40:90], "".join(rng.choices(alphabet, k=40)), corpus[200:230] + "宇宙" + corpus[10:25]]
    for chunk in (1, 7, 1000):
        got = novelty.copy_metrics(chunked(corpus, chunk), samples, ngram=6, also=(12, 50))
        assert got == reference(corpus, samples, 6, (12, 50), 4)
    assert got["longest_copied"] == 50 and got["longest_copied_text"] == corpus[40:90]


def test_figures_over_no_ngram_are_null_with_their_reason():
    nothing = {"copy_ngram": 20, "copied_frac_20": None, "ngrams_20": 0, "copied_frac_50": None, "ngrams_50": 0,
               "longest_copied": 0, "longest_copied_text": "", "distinct_4": None,
               "unmeasured": {"copied_frac_20": novelty.why_unmeasured(20, 0), "copied_frac_50": novelty.why_unmeasured(50, 0),
                              "distinct_4": novelty.why_unmeasured(4, 0)}}
    assert novelty.copy_metrics(["some training text"], []) == nothing
    assert novelty.copy_metrics(["some training text"], ["", ""]) == nothing
    short = novelty.copy_metrics(["some training text"], ["some tr", "x"], ngram=1000, also=(5,))
    assert short["copied_frac_1000"] is None and short["ngrams_1000"] == 0 and short["copied_frac_5"] == 1.0
    assert set(short["unmeasured"]) == {"copied_frac_1000"}
    assert "no 1000-gram to measure: the longest sample holds 7 character(s)" in short["unmeasured"]["copied_frac_1000"]
    one = novelty.copy_metrics(["abc"], ["a", "b"], ngram=3, also=())
    assert one["distinct_4"] is None and one["copied_frac_3"] is None and one["longest_copied"] == 1
    assert novelty.copy_metrics([], ["not in an empty corpus"])["longest_copied"] == 0


def test_longest_copied_text_is_cut_for_display_but_its_length_is_exact():
    corpus = "".join(random.Random(1).choices("abcdefgh", k=2000))
    got = novelty.copy_metrics([corpus], ["XY" + corpus[100:437] + "XY"])
    assert got["longest_copied"] == 337
    assert got["longest_copied_text"] == corpus[100:100 + novelty.DISPLAY_CHARS]


def test_refuses_a_one_shot_iterator_and_bad_lengths():
    with pytest.raises(TypeError, match="several times"):
        novelty.copy_metrics(iter(["abc"]), ["abc"])
    with pytest.raises(ValueError, match="at least 1"):
        novelty.copy_metrics(["abc"], ["abc"], ngram=0)


def test_a_corpus_span_is_read_again_for_each_pass(tmp_path, monkeypatch):
    text = "naïve café 天地 😀 line\r\nend of the training part|held-out validation text"
    path = tmp_path / "corpus.txt"
    path.write_bytes(text.encode("utf-8"))
    stop = text.index("|")
    monkeypatch.setattr(vocab, "CHUNK_CHARS", 3)
    chunks = split.TextSpan(path, 0, stop)
    assert "".join(chunks) == text[:stop] and "".join(chunks) == text[:stop]
    assert max(len(c) for c in chunks) == 3
    samples = [text[:stop], text[stop:]]
    assert novelty.copy_metrics(chunks, samples, ngram=5) == reference(text[:stop], samples, 5, (50,), 4)


# --- the acceptance test: a model that copies its corpus and one that does not --------------------


def pseudo_english(n_chars: int, seed: int) -> str:
    """Words of a random 3000-word lexicon, Zipf-distributed, with spaces, full stops and newlines."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    letter_p = 1 / np.arange(1, 27) ** 0.9
    lexicon = ["".join(rng.choice(letters, size=rng.integers(1, 10), p=letter_p / letter_p.sum()))
               for _ in range(3000)]
    word_p = 1 / np.arange(1, 3001)
    words = rng.choice(lexicon, size=n_chars // 4, p=word_p / word_p.sum())
    seps = rng.choice([" ", ". ", ",", "\n"], size=len(words), p=[0.85, 0.07, 0.05, 0.03])
    return "".join(w + s for w, s in zip(words, seps))[:n_chars]


def bigram_samples(text: str, count: int, length: int, seed: int) -> list[str]:
    """Samples of a character bigram model of `text`."""
    rng = np.random.default_rng(seed)
    chars, ids = np.unique(np.array(list(text)), return_inverse=True)
    counts = np.zeros((len(chars), len(chars)))
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    cumulative = np.cumsum(counts + 1e-9, axis=1)
    out = []
    for _ in range(count):
        current, sample = ids[rng.integers(len(ids))], []
        for _ in range(length):
            row = cumulative[current]
            current = min(int(np.searchsorted(row, rng.random() * row[-1], side="right")), len(chars) - 1)
            sample.append(chars[current])
        out.append("".join(sample))
    return out


def copying_samples(text: str, count: int, length: int, seed: int) -> list[str]:
    """Slices of `text` with two characters changed each."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        start = int(rng.integers(len(text) - length))
        sample = list(text[start:start + length])
        for at in rng.integers(length, size=2):
            sample[at] = "#"
        out.append("".join(sample))
    return out


class CountingPasses:
    def __init__(self, chunks):
        self.chunks, self.passes = chunks, 0

    def __iter__(self):
        self.passes += 1  # when a pass starts reading, not when iter() is called
        yield from self.chunks


def test_metrics_tell_a_copying_model_from_one_that_does_not():
    corpus = pseudo_english(200_000, seed=0)
    training = CountingPasses(chunked(corpus, 1 << 15))

    copying = novelty.copy_metrics(training, copying_samples(corpus, 3, 500, seed=1))
    assert copying["copied_frac_20"] > 0.85 and copying["copied_frac_50"] > 0.7
    assert copying["longest_copied"] >= 166 and copying["longest_copied_text"] in corpus
    assert training.passes <= 6

    training.passes = 0
    novel = novelty.copy_metrics(training, bigram_samples(corpus, 3, 500, seed=2))
    assert novel["copied_frac_20"] < 0.02 and novel["copied_frac_50"] == 0.0
    assert 3 <= novel["longest_copied"] < 20 and novel["longest_copied_text"] in corpus
    assert training.passes <= 6
    assert novel["ngrams_20"] == copying["ngrams_20"] == 3 * 481
    assert all(type(v) in (int, float, str) for v in [*copying.values(), *novel.values()])  # JSON-ready
